"""Evaluate a saved captioner on the held-out split (unseen colour-shape pairs) and record the scores in its card.

    zoo eval captioning --model runs/caption-tiny/model [--group va|v|a] [--beams 4 --groups 2 --diversity 0.5]

CIDEr-D and BLEU-4 are corpus-level over the four references of each scene (x100); ``exact`` is the
fraction of top captions equal to one of the references. Note that the fixed grammar makes CIDEr-D
lenient: a caption with the right structure and sound but wrong objects already scores ~200.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from decoders.search import DecodingOptions
from recipes.captioning.data import CaptionScenes, collate
from recipes.captioning.metrics import bleu, cider_d, distinct_n

HELD_OUT_SEED = 1  # the test split is rejection-sampled apart from training anyway; another seed as well


@torch.no_grad()
def caption_dataset(model, dataset: CaptionScenes, options=None, batch_size: int = 64,
                    head: str | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """(n-best captions, references) per example; ``head`` defaults to the model's AR caption head."""
    model.eval()
    head = head or caption_head(model)
    options = options or DecodingOptions(max_len=22)
    hyps, refs = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        out = model.generate(batch, heads=head, options=options)[head]
        for row, references in zip(out, batch["references"]):
            row = row if isinstance(row, list) else [row]
            hyps.append([h.text for h in row])
            refs.append(references)
    return hyps, refs


def caption_head(model) -> str:
    for head in ("caption", "xdec"):
        if head in model.decoders:
            return head
    raise ValueError(f"model has no caption head ('caption' or 'xdec'); its heads are {list(model.decoders)}")


@torch.no_grad()
def ground_mask(model, image: torch.Tensor, text: str, head: str = "xdec") -> tuple[torch.Tensor, float]:
    """The mask probabilities (H, W) an X-Decoder head gives ``text`` on ``image`` (H, W, C) uint8, upsampled
    to the image size, and the chosen query's grounding probability."""
    import torch.nn.functional as F

    if head not in model.decoders or not hasattr(model.decoders[head], "ground"):
        raise ValueError(f"the model has no grounding head {head!r} (heads: {list(model.decoders)}); "
                         "use an X-Decoder model such as xdecoder_scenes_tiny")
    tokenizer = model.tokenizer(head)
    if tokenizer is None:
        raise ValueError(f"the model stores no tokenizer for head {head!r}; retrain it with the captioning recipe")
    ids = tokenizer.encode(text.strip().lower(), strict=False)
    if not ids:
        raise ValueError("the referring expression is empty; give one such as 'the red circle'")
    image = torch.as_tensor(image)
    feats = model.encode({"image": image.permute(2, 0, 1)[None]}, needed={model.spec_decoders[head]["source"]})
    logits, probs = model.decoders[head].ground(model.memory(feats, head), torch.tensor([ids]), torch.tensor([len(ids)]))
    mask = F.interpolate(logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].sigmoid()
    return mask, float(probs.max())


@torch.no_grad()
def grounding_miou(model, dataset: CaptionScenes, head: str = "xdec") -> float:
    """mIoU of the masks an X-Decoder head predicts for every referring expression of ``dataset``."""
    from recipes.captioning.metrics import mean_iou

    model.eval()
    preds, targets = [], []
    for item in dataset.items:
        for expression, index in item["referring"]:
            preds.append(ground_mask(model, torch.from_numpy(item["image"]), expression, head)[0].numpy())
            targets.append(item["masks"][index])
    return mean_iou(preds, targets)


def object_phrases(caption: str) -> list[str]:
    """The "size colour shape" phrases a caption names, in order."""
    import re

    return re.findall(r"\b(?:small|large) \w+ (?:circle|square|triangle|diamond)\b", caption)


def scores(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """CIDEr-D and BLEU-4 (x100) of the top captions, corpus distinct-2 of the top captions, distinct-2 within
    each n-best list (averaged; 0 for 1-best), the fraction of top captions equal to a reference (``exact``)
    and, where the references name objects, the fraction of top captions naming both objects right
    (size, colour and shape; in either order: ``objects``)."""
    top = [h[0] for h in hyps]
    named = [(sorted(object_phrases(t)), sorted(object_phrases(r[0]))) for t, r in zip(top, refs)]
    named = [(t, r) for t, r in named if r]
    extra = {"objects": sum(t == r for t, r in named) / len(named)} if named else {}
    return {**extra, "cider_d": 100 * cider_d(top, refs), "bleu4": 100 * bleu(top, refs), "distinct2": distinct_n(top, 2),
            "distinct2_nbest": sum(distinct_n(h, 2) for h in hyps) / max(len(hyps), 1) if any(len(h) > 1 for h in hyps) else 0.0,
            "exact": sum(t in r for t, r in zip(top, refs)) / max(len(top), 1)}


@torch.no_grad()
def audio_swap(model, dataset: CaptionScenes, batch_size: int = 64, seed: int = 7) -> dict[str, float]:
    """Does the audio matter? For every held-out scene the image is kept and the sound track is replaced by a
    fresh clip of each of the four sounds; ``audio_swap`` is the fraction of those captions whose sound phrase
    names the played sound. ``vision_only_sound`` is the fraction of vision-only ("v") captions that name any
    sound (0 is right: the image alone cannot tell)."""
    import numpy as np

    from recipes.captioning.data import SAMPLE_RATE, SOUNDS, sound_phrase, synth_sound

    head = caption_head(model)
    rng = np.random.default_rng(seed)
    rows = [dict(it, audio=synth_sound(s, rng, len(it["audio"]) / SAMPLE_RATE), sound=s, group="va")
            for it in dataset.items for s in SOUNDS]
    rows += [dict(it, group="v") for it in dataset.items]
    correct, named, n_va = 0, 0, len(dataset.items) * len(SOUNDS)
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        out = model.generate(collate(chunk), heads=head, options=DecodingOptions(max_len=22))[head]
        for k, (row, hyp) in enumerate(zip(chunk, out)):
            said = sound_phrase(hyp.text)
            if start + k < n_va:
                correct += said == row["sound"]
            else:
                named += said is not None
    return {"audio_swap": correct / max(n_va, 1), "vision_only_sound": named / max(len(dataset.items), 1)}


def head_checks(model, dataset: CaptionScenes, batch_size: int = 64, swap: bool = True) -> dict[str, float]:
    """What a model's heads allow beyond caption scores: mIoU for an X-Decoder head, the audio-swap check for an
    audio-visual caption head (``swap``)."""
    result = {"miou": grounding_miou(model, dataset)} if "xdec" in model.decoders else {}
    if "caption" in model.decoders and swap:
        result.update(audio_swap(model, dataset, batch_size))
    return result


def make_eval_fn(dataset: CaptionScenes, batch_size: int = 64):
    def eval_fn(model) -> dict[str, float]:
        return scores(*caption_dataset(model, dataset, batch_size=batch_size)) | head_checks(model, dataset, batch_size)

    return eval_fn


def eval_results(result: dict[str, float], group: str, size: int, seed: int) -> list[dict]:
    names = {"cider_d": "CIDEr-D", "bleu4": "BLEU-4", "exact": "exact match", "audio_swap": "audio swap accuracy",
             "vision_only_sound": "vision-only captions naming a sound", "miou": "referring mIoU"}
    names = {k: v for k, v in names.items() if k in result}
    return [dict(task_type="image-to-text", task_name=f"audio-visual captioning ({group})",
                 dataset_name="rendered scenes, unseen colour-shape pairs", dataset_type="caption-scenes",
                 dataset_split=f"test-seed-{seed}", dataset_config=f"size-{size}", metric_type=k,
                 metric_name=names[k], metric_value=round(float(result[k]), 4)) for k in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo eval captioning", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--size", type=int, default=300, help="held-out scenes")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--group", default="va", choices=["va", "v", "a"], help="modalities the model sees")
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--groups", type=int, default=1, help="diverse beam search groups (must divide --beams)")
    parser.add_argument("--diversity", type=float, default=0.0)
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-card", action="store_true")
    parser.add_argument("--no-swap", action="store_true", help="skip the audio-swap check (4 extra captions per scene)")
    args = parser.parse_args(argv)
    from zoo.cards import add_eval_results
    from zoo.graph import ZooModel

    model = ZooModel.from_pretrained(args.model)
    options = DecodingOptions(beam_size=args.beams, groups=args.groups, diversity=args.diversity, n_best=args.n_best,
                              max_len=22)
    dataset = CaptionScenes(args.size, "test", args.seed, group=args.group)
    hyps, refs = caption_dataset(model, dataset, options, args.batch_size)
    result = scores(hyps, refs) | head_checks(model, dataset, args.batch_size, args.group == "va" and not args.no_swap)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.items()))
    for h, r in list(zip(hyps, refs))[:3]:
        print(f"  {h[0]!r}  (ref: {r[0]!r})")
    if not args.no_card and Path(args.model).is_dir():
        add_eval_results(args.model, eval_results(result, args.group, args.size, args.seed), model=model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
