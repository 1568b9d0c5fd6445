"""Audio-visual captioning data: a rendered scene (``zoo.data.scenes``), a 1 s sound tied to it and
captions from a small grammar that mention both, e.g.

    "a small red circle left of a large blue square while a low hum plays"

The caption names the two largest objects (A, B) and their relation: A is the left one (``left of``)
when they lie further apart horizontally than vertically, else the upper one (``above``). Each scene
has four reference captions (both orders of the pair, ``while a X plays`` / ``with a X``); training
uses the first (canonical) one. A row that sees one modality group is captioned with what that group
perceives: the objects alone for vision ("v"), the sound alone for audio ("a"); so a vision-only
caption never guesses a sound. (VALOR trains every group on the same caption; its captions come from
people who both saw and heard the clip, ours from a grammar that can say exactly what is perceivable.) Each object also gets a referring expression ("the red circle",
or "the small red circle" when colour and shape alone are ambiguous) with its mask.

Held-out split (compositional): colour-shape pairs in ``HELD_OUT_PAIRS`` never occur in a training
scene (any object), while every test scene's caption names at least one of them.

Everything is a pure function of ``(seed, index)``; a scene + sound takes ~1 ms, so datasets are
regenerated rather than cached.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.scenes import Scene, SceneObject, SceneOptions, render_scene

SAMPLE_RATE = 16_000
SOUNDS = ("high beep", "low beep", "repeating click", "low hum")
# one unseen colour per shape (of the default tiny options below)
HELD_OUT_PAIRS = (("red", "square"), ("green", "circle"), ("blue", "triangle"), ("yellow", "diamond"))
GROUPS = {"va": (True, True), "v": (True, False), "a": (False, True)}  # VALOR modality groups


@dataclass(frozen=True)
class CaptionDataOptions:
    size: int = 64                          # image side
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "purple")
    min_objects: int = 2
    max_objects: int = 4
    duration: float = 1.0                   # seconds of audio
    held_out: tuple[tuple[str, str], ...] = HELD_OUT_PAIRS

    def scene_options(self) -> SceneOptions:
        return SceneOptions(size=self.size, min_objects=self.min_objects, max_objects=self.max_objects,
                            shapes=self.shapes, colours=self.colours)


def synth_sound(kind: str, rng: np.random.Generator, duration: float = 1.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A float32 waveform of ``kind`` (one of ``SOUNDS``) with random pitch jitter, level and a noise floor."""
    n = int(round(duration * sr))
    t = np.arange(n, dtype=np.float64) / sr
    if kind in ("high beep", "low beep"):
        f = rng.uniform(1400, 1800) if kind == "high beep" else rng.uniform(250, 350)
        period, on = rng.uniform(0.25, 0.35), rng.uniform(0.12, 0.18)
        gate = ((t + rng.uniform(0, period)) % period) < on
        wav = np.sin(2 * np.pi * f * t) * gate
    elif kind == "repeating click":
        wav = np.zeros(n)
        step = int(sr / rng.uniform(6, 10))
        for start in range(int(rng.integers(0, step)), n, step):
            seg = wav[start:start + 80]
            seg += rng.choice([-1.0, 1.0]) * np.exp(-np.arange(len(seg)) / 12.0)
    elif kind == "low hum":
        f = rng.uniform(80, 120)
        wav = sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
        wav = wav / 1.8
    else:
        raise ValueError(f"unknown sound {kind!r}; choose from {list(SOUNDS)}")
    wav = rng.uniform(0.3, 0.8) * wav + rng.normal(0, 0.01, n)
    return wav.astype(np.float32)


def _pair(scene: Scene) -> tuple[SceneObject, SceneObject, str]:
    """The two largest objects as (A, B, relation) with A left of / above B."""
    a, b = sorted(scene.objects, key=lambda o: -o.area)[:2]
    dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
    if abs(dx) >= abs(dy):
        return (a, b, "left of") if dx >= 0 else (b, a, "left of")
    return (a, b, "above") if dy >= 0 else (b, a, "above")


INVERSE = {"left of": "right of", "above": "below"}


def captions(scene: Scene, sound: str, group: str = "va") -> list[str]:
    """References for what modality group ``group`` perceives; the first is the canonical (training) caption.

    "va": four (both orders of the pair x ``while a X plays`` / ``with a X``); "v": the two pair phrases,
    no sound; "a": the sound alone ("a low hum plays", "a low hum is heard").
    """
    a, b, rel = _pair(scene)
    first, second = f"a {a.phrase} {rel} a {b.phrase}", f"a {b.phrase} {INVERSE[rel]} a {a.phrase}"
    if group == "v":
        return [first, second]
    if group == "a":
        return [f"a {sound} plays", f"a {sound} is heard"]
    if group != "va":
        raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")
    return [f"{first} while a {sound} plays", f"{second} while a {sound} plays",
            f"{first} with a {sound}", f"{second} with a {sound}"]


def sound_phrase(caption: str) -> str | None:
    """The sound a caption names (one of ``SOUNDS``), or None when it names none."""
    named = [s for s in SOUNDS if f"a {s}" in caption]
    return max(named, key=len) if named else None


def referring_expressions(scene: Scene) -> list[tuple[str, int]]:
    """(expression, object index) for every object that some expression picks out uniquely."""
    out = []
    for i, o in enumerate(scene.objects):
        same = [p for p in scene.objects if (p.colour, p.shape) == (o.colour, o.shape)]
        if len(same) == 1:
            out.append((f"the {o.colour} {o.shape}", i))
        elif sum(p.size == o.size for p in same) == 1:
            out.append((f"the {o.size} {o.colour} {o.shape}", i))
    return out


def _is_held_out(scene: Scene, held_out, pair_only: bool) -> bool:
    objects = _pair(scene)[:2] if pair_only else scene.objects
    return any((o.colour, o.shape) in held_out for o in objects)


def make_example(split: str, seed: int, index: int, options: CaptionDataOptions = CaptionDataOptions()) -> dict:
    """Example ``index`` of ``split`` ("train" or "test"): rejection-sampled so that training scenes
    hold no held-out colour-shape pair and test captions name at least one."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    held = set(options.held_out)
    scene_opts = options.scene_options()
    for attempt in range(1000):
        scene = render_scene((seed, 0 if split == "train" else 1, index, attempt), scene_opts)
        if len(scene.objects) < 2:
            continue
        if split == "train" and not _is_held_out(scene, held, pair_only=False):
            break
        if split == "test" and (not held or _is_held_out(scene, held, pair_only=True)):
            break
    else:
        raise ValueError(f"no {split} scene found in 1000 tries; the held-out pairs {sorted(held)} do not fit "
                         "the shapes and colours of the options")
    rng = np.random.default_rng((seed, 2, index, split == "test"))
    sound = SOUNDS[int(rng.integers(len(SOUNDS)))]
    group_captions = {g: captions(scene, sound, g) for g in GROUPS}
    return dict(id=f"{split}-{seed}-{index:06d}", image=scene.image, masks=scene.masks, scene=scene, sound=sound,
                audio=synth_sound(sound, rng, options.duration), captions=group_captions["va"],
                group_captions=group_captions, referring=referring_expressions(scene))


class CaptionScenes(Dataset):
    """``size`` examples of a split; ``group`` picks the modality group of every row ("va", "v", "a"),
    or "sample" to draw one per row and epoch as VALOR's grouping captioning does."""

    def __init__(self, size: int, split: str = "train", seed: int = 0, options: CaptionDataOptions = CaptionDataOptions(),
                 tokenizer=None, group: str = "va", group_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)):
        if group not in (*GROUPS, "sample"):
            raise ValueError(f"group must be one of {[*GROUPS, 'sample']}, got {group!r}")
        self.items = [make_example(split, seed, i, options) for i in range(size)]
        self.tokenizer, self.group, self.seed = tokenizer, group, seed
        self.weights = np.asarray(group_weights, dtype=np.float64) / sum(group_weights)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.items[i])
        if self.group == "sample":
            # numpy's global stream: seeded by seed_everything and restored on resume by the Trainer
            item["group"] = list(GROUPS)[int(np.random.choice(3, p=self.weights))]
        else:
            item["group"] = self.group
        item["references"] = item["group_captions"][item["group"]]
        if self.tokenizer is not None:
            item["tokens"] = self.tokenizer.encode(item["references"][0])
            if item["referring"]:  # one referring expression per row and epoch, for grounding heads
                expression, index = item["referring"][int(np.random.randint(len(item["referring"])))]
                item["ref"], item["ref_tokens"] = (expression, index), self.tokenizer.encode(expression)
        return item


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


def collate(items: list[dict]) -> dict:
    """Images (B, 3, H, W) uint8, audio (B, T) float, ``modalities`` (B, 2) bool (vision, audio) from each
    row's group, the caption target (``tokens``, ``lengths``) for the ``caption`` and ``align`` heads, and
    for the X-Decoder head ``xdec`` the caption plus, for the rows in ``ref_rows``, a referring expression,
    its mask (H, W), and every object's mask (``object_masks``, ``object_counts``, ``ref_index``)."""
    batch = dict(
        ids=[it["id"] for it in items],
        image=torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).contiguous(),
        audio=torch.from_numpy(np.stack([it["audio"] for it in items])),
        audio_lengths=torch.tensor([len(it["audio"]) for it in items]),
        modalities=torch.tensor([GROUPS[it.get("group", "va")] for it in items]),
        references=[it.get("references", it["captions"]) for it in items],
    )
    if all("tokens" in it for it in items):
        tokens, lengths = _pad([it["tokens"] for it in items])
        target = dict(tokens=tokens, lengths=lengths)
        batch["targets"] = {"caption": target, "caption_nar": dict(target), "align": dict(target), "xdec": dict(target)}
        rows = [i for i, it in enumerate(items) if "ref_tokens" in it]
        if rows:  # rows whose scene has no unambiguous object (~1%) train the caption only
            grounded = [items[i] for i in rows]
            ref, ref_lengths = _pad([it["ref_tokens"] for it in grounded])
            mask = torch.from_numpy(np.stack([it["masks"][it["ref"][1]] for it in grounded])).float()
            counts = torch.tensor([len(it["masks"]) for it in grounded])
            objects = torch.zeros(len(grounded), int(counts.max()), *mask.shape[-2:])
            for row, it in enumerate(grounded):
                objects[row, : len(it["masks"])] = torch.from_numpy(np.asarray(it["masks"])).float()
            batch["targets"]["xdec"].update(ref_tokens=ref, ref_lengths=ref_lengths, mask=mask, ref_rows=torch.tensor(rows),
                                            object_masks=objects, object_counts=counts,
                                            ref_index=torch.tensor([it["ref"][1] for it in grounded]))
    return batch


def tokenizer_texts(items: list[dict]) -> list[str]:
    """Every reference caption (of every modality group) and referring expression of ``items``: what the
    tokenizer must cover."""
    return ([c for it in items for g in GROUPS for c in it["group_captions"][g]]
            + [e for it in items for e, _ in it["referring"]])


def train_caption_tokenizer(texts, max_vocab: int = 256):
    """A SentencePiece *word* model (one id per word of the grammar; pad 0, unk 1, bos 2, eos 3), stored and
    reloaded like any ``zoo.tokenizers.SentencePieceTokenizer``."""
    import io

    import sentencepiece as spm

    from zoo.tokenizers import SentencePieceTokenizer, normalize_unicode

    texts = [normalize_unicode(t) for t in texts]
    words = {w for t in texts for w in t.split()}
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, vocab_size=min(max_vocab, len(words) + 4),
        model_type="word", pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<blank>", hard_vocab_limit=False,
        minloglevel=2, num_threads=1)
    return SentencePieceTokenizer(buffer.getvalue())


def with_options(options: CaptionDataOptions, **changes) -> CaptionDataOptions:
    return replace(options, **changes)
