"""Query-conditioned separation: one separator, three query kinds (USS / AudioSep).

- Audio-tagging query net (USS, Kong et al. 2023 §3.2, with a PANNs-style CNN, Kong et al. 2020 §2.2
  scaled down): log-mel -> 3 conv blocks (2 x [3x3 conv, BN, ReLU], 2x2 avg-pool) -> mean over
  frequency -> max + mean over time -> FC + ReLU = the clip *embedding* -> linear class logits,
  trained with multi-label BCE on the mixtures' weak clip labels. Queries: an example clip's
  embedding (``audio``) or a class's mean embedding over synthetic single-class clips (``label``).
- Text query net (AudioSep, Liu et al. 2023 §2.1, which uses CLAP's text tower): a tiny BERT built from
  a ``transformers.BertConfig`` with *random* init (tests and this recipe run offline) and a trainable
  projection, trained so that a description's embedding matches its class's tagger embedding
  (softmax over cosine similarities to the class embeddings, CLIP-style, plus 1 - cos). With network
  access a pretrained text tower (CLAP / BERT weights) would replace the random one.
- Separator: ``query_tasnet_tiny``; the L2-normalised query embedding FiLM-conditions every TCN block
  (``MaskDecoder``'s ``condition`` hook); target = the queried source, loss = negative SI-SNR.
  Training mixes the three query kinds per mixture (AudioSep's text/audio embedding mixing).
"""
from __future__ import annotations

import itertools
import json
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from recipes.separation.data import CLASS_NAMES, EVENT_CLASSES, EventMixtures, synth_event
from recipes.separation.evaluate import bss_sdr
from zoo.hub import load_state_dict, load_weights

__all__ = [
    "QUERY_KINDS",
    "EventTagger",
    "QueryNets",
    "QuerySeparator",
    "TaggerDims",
    "TextQueryEncoder",
    "build_vocab",
    "score_queries",
    "score_unconditioned",
    "train_query_system",
]

QUERY_KINDS = ("text", "label", "audio")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@dataclass(frozen=True)
class TaggerDims:
    sample_rate: int = 8000
    n_fft: int = 256
    hop: int = 160
    n_mels: int = 32
    channels: tuple[int, ...] = (16, 32, 64)
    embed_dim: int = 64
    n_classes: int = len(CLASS_NAMES)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.AvgPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EventTagger(nn.Module):
    """(B, T) waveform -> (embedding (B, E), logits (B, n_classes)); ``class_embeddings`` (C, E) buffer."""

    def __init__(self, dims: TaggerDims = TaggerDims()):
        super().__init__()
        self.dims = dims
        self.mel = torchaudio.transforms.MelSpectrogram(dims.sample_rate, n_fft=dims.n_fft, hop_length=dims.hop,
                                                        n_mels=dims.n_mels)
        self.bn0 = nn.BatchNorm2d(dims.n_mels)
        chans = (1, *dims.channels)
        self.blocks = nn.Sequential(*(ConvBlock(a, b) for a, b in itertools.pairwise(chans)))
        self.fc = nn.Linear(chans[-1], dims.embed_dim)
        self.classifier = nn.Linear(dims.embed_dim, dims.n_classes)
        self.register_buffer("class_embeddings", torch.zeros(dims.n_classes, dims.embed_dim))

    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.log(self.mel(wav) + 1e-6)[:, None].transpose(2, 3)            # (B, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)                           # per-mel BN (PANNs bn0)
        x = self.blocks(x).mean(3)                                                # (B, C, frames')
        emb = F.relu(self.fc(x.amax(2) + x.mean(2)))
        return emb, self.classifier(emb)

    def embed(self, wav: Tensor) -> Tensor:
        return F.normalize(self.forward(wav)[0], dim=-1)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def build_vocab() -> list[str]:
    words = {w for name, texts in EVENT_CLASSES.items() for t in [name.replace("_", " "), *texts] for w in _words(t)}
    return SPECIAL + sorted(words)


class TextQueryEncoder(nn.Module):
    """Word tokens -> tiny BERT (random init from a config) -> masked mean -> projection -> unit vector."""

    def __init__(self, vocab: list[str], embed_dim: int = 64, hidden: int = 64, layers: int = 2, heads: int = 2,
                 max_len: int = 32):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.vocab, self.index, self.max_len = list(vocab), {w: i for i, w in enumerate(vocab)}, max_len
        config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=max_len,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.proj = nn.Linear(hidden, embed_dim)
        self.config = dict(embed_dim=embed_dim, hidden=hidden, layers=layers, heads=heads, max_len=max_len)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        rows = [[2, *(self.index.get(w, 1) for w in _words(t))][: self.max_len - 1] + [3] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return ids, (ids != 0).long()

    def forward(self, texts: list[str]) -> Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"text queries must be a list of non-empty strings; got {texts!r}")
        ids, mask = self.tokenize(texts)
        device = self.proj.weight.device
        hidden = self.bert(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        m = mask.to(device)[..., None].to(hidden.dtype)
        return F.normalize(self.proj((hidden * m).sum(1) / m.sum(1)), dim=-1)


class QueryNets(nn.Module):
    """The three query kinds -> (B, E) unit embeddings in one space (the tagger's)."""

    def __init__(self, dims: TaggerDims = TaggerDims(), vocab: list[str] | None = None, text: dict | None = None):
        super().__init__()
        self.tagger = EventTagger(dims)
        self.text = TextQueryEncoder(vocab or build_vocab(), **{**(text or {}), "embed_dim": dims.embed_dim})
        self.class_names = list(CLASS_NAMES)

    @property
    def dim(self) -> int:
        return self.tagger.dims.embed_dim

    def label_index(self, label: str) -> int:
        if label not in self.class_names:
            raise ValueError(f"unknown query label {label!r}; known labels: {', '.join(self.class_names)}")
        return self.class_names.index(label)

    @torch.no_grad()
    def embed(self, text: str | list[str] | None = None, audio: Tensor | None = None,
              label: str | list[str] | None = None) -> Tensor:
        """Exactly one of ``text`` / ``audio`` (B, T) or (T,) / ``label`` -> (B, E)."""
        given = [k for k, v in (("text", text), ("audio", audio), ("label", label)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one query (text, audio or label); got {given or 'none'}")
        if label is not None:
            labels = [label] if isinstance(label, str) else list(label)
            index = torch.tensor([self.label_index(lab) for lab in labels])
            return F.normalize(self.tagger.class_embeddings[index.to(self.tagger.class_embeddings.device)], dim=-1)
        if text is not None:
            return self.text([text] if isinstance(text, str) else list(text))
        audio = audio[None] if audio.dim() == 1 else audio
        if audio.shape[-1] < self.tagger.dims.n_fft:
            raise ValueError(f"the query clip has {audio.shape[-1]} samples, fewer than one analysis window "
                             f"({self.tagger.dims.n_fft}); pass a clip of at least 0.1 s")
        return self.tagger.embed(audio.float().to(self.tagger.fc.weight.device))

    @torch.no_grad()
    def set_class_embeddings(self, clips_per_class: int = 16, seconds: float = 2.0, seed: int = 0) -> None:
        """Mean (normalised) tagger embedding of synthetic single-class clips, per class."""
        self.tagger.eval()
        rng, sr = np.random.default_rng(seed), self.tagger.dims.sample_rate
        for i, name in enumerate(self.class_names):
            clips = torch.from_numpy(np.stack([synth_event(name, seconds, sr, rng) for _ in range(clips_per_class)]))
            self.tagger.class_embeddings[i] = F.normalize(self.tagger.embed(clips).mean(0), dim=0)

    def config(self) -> dict:
        return dict(dims=asdict(self.tagger.dims), vocab=self.text.vocab, text={
            k: v for k, v in self.text.config.items() if k != "embed_dim"}, class_names=self.class_names)

    @classmethod
    def from_config(cls, config: dict) -> QueryNets:
        dims = TaggerDims(**{**config["dims"], "channels": tuple(config["dims"]["channels"])})
        nets = cls(dims, config["vocab"], config["text"])
        nets.class_names = list(config["class_names"])
        return nets


class QuerySeparator(nn.Module):
    """Query nets + a FiLM-conditioned one-output separator; ``separate(mix, text=|audio=|label=)``."""

    def __init__(self, nets: QueryNets, separator):
        super().__init__()
        self.nets, self.separator = nets, separator

    @property
    def sample_rate(self) -> int:
        return int(self.separator.meta.get("sample_rate", 8000))

    @torch.no_grad()
    def separate(self, mix: Tensor, **query) -> Tensor:
        """mix (T,) or (B, T) -> (B, 1, T) the queried source."""
        from recipes.separation.evaluate import model_separator

        mix = mix[None] if mix.dim() == 1 else mix
        cond = self.nets.embed(**query)
        cond = cond.expand(mix.shape[0], -1) if cond.shape[0] == 1 else cond
        self.eval()
        return model_separator(self.separator, condition=cond)(mix, None)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        self.separator.save_pretrained(directory / "separator")
        save_file({k: v.contiguous() for k, v in self.nets.state_dict().items()}, str(directory / "query_nets.safetensors"))
        (directory / "query.json").write_text(json.dumps(self.nets.config(), indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> QuerySeparator:
        from zoo.graph import ZooModel

        directory = Path(directory)
        nets = QueryNets.from_config(json.loads((directory / "query.json").read_text()))
        path = directory / "query_nets.safetensors"
        load_weights(nets, load_state_dict(path), strict=True, source=str(path))
        return cls(nets.eval(), ZooModel.from_pretrained(str(directory / "separator"))).eval()


# --- training ----------------------------------------------------------------------------------------
@dataclass
class _Loss:
    loss: Tensor


class _TaggerObjective(nn.Module):
    def __init__(self, tagger: EventTagger):
        super().__init__()
        self.tagger = tagger

    def forward(self, batch: dict) -> _Loss:
        return _Loss(F.binary_cross_entropy_with_logits(self.tagger(batch["audio"])[1], batch["labels"]))


def collate_events(items: list[dict]) -> dict:
    return {"ids": [it["id"] for it in items], "audio": torch.stack([it["audio"] for it in items]),
            "labels": torch.stack([it["labels"] for it in items])}


class QueryCollate:
    """Batches for the separator: target = the queried source; condition from a query kind drawn per
    mixture (a stable hash of its id), so every kind is trained on."""

    def __init__(self, nets: QueryNets, kinds: tuple[str, ...] = QUERY_KINDS):
        self.nets, self.kinds = nets, kinds

    def __call__(self, items: list[dict]) -> dict:
        conds = torch.cat([self.condition(it, self.kinds[zlib.crc32(it["id"].encode()) % len(self.kinds)])
                           for it in items])
        audio = torch.stack([it["audio"] for it in items])
        target = torch.stack([it["sources"][it["query_source"]][None] for it in items])
        return {"ids": [it["id"] for it in items], "audio": audio,
                "targets": {"separation": {"sources": target, "condition": conds}}}

    def condition(self, item: dict, kind: str) -> Tensor:
        if kind == "text":
            return self.nets.embed(text=item["query_text"]).cpu()
        if kind == "label":
            return self.nets.embed(label=CLASS_NAMES[item["query_class"]]).cpu()
        return self.nets.embed(audio=item["query_audio"]).cpu()


def train_text(nets: QueryNets, steps: int = 150, lr: float = 3e-3, temperature: float = 0.1) -> float:
    """Align text embeddings of the class descriptions (and names) with the class embeddings; final loss."""
    texts = [(t, i) for i, name in enumerate(nets.class_names)
             for t in [name.replace("_", " "), *EVENT_CLASSES.get(name, [])]]
    target = torch.tensor([i for _, i in texts])
    classes = F.normalize(nets.tagger.class_embeddings, dim=-1)
    opt = torch.optim.Adam(nets.text.parameters(), lr=lr)
    nets.text.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        emb = nets.text([t for t, _ in texts])
        sims = emb @ classes.T
        loss = F.cross_entropy(sims / temperature, target) + (1 - sims.gather(1, target[:, None])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    nets.text.eval()
    return float(loss.detach())


def train_query_system(out_dir: str | Path, tagger_steps: int = 300, text_steps: int = 150, sep_steps: int = 600,
                       batch_size: int = 8, train_size: int = 4000, seconds: float = 2.0, seed: int = 0,
                       lr: float = 1e-3, progress: bool = True) -> QuerySeparator:
    """Tagger on weak labels -> class embeddings -> text alignment -> query-conditioned separator; saved."""
    from zoo.registry import create_model
    from zoo.train import TrainConfig, Trainer, seed_everything

    out_dir = Path(out_dir)
    seed_everything(seed)
    common = dict(batch_size=batch_size, lr=lr, weight_decay=0.0, clip_norm=5.0, schedule="cosine", min_lr_ratio=0.05,
                  tensorboard=False, progress=progress, seed=seed)
    events = EventMixtures(train_size, seed=seed, seconds=seconds)
    nets = QueryNets()
    Trainer(_TaggerObjective(nets.tagger), events, collate_events,
            TrainConfig(steps=tagger_steps, out_dir=str(out_dir / "tagger"), **common)).fit()
    nets.eval()
    nets.set_class_embeddings(seconds=seconds, seed=seed + 1)
    train_text(nets, text_steps)
    nets.eval().requires_grad_(False)  # USS keeps the query net frozen while the separator trains
    separator = create_model("query_tasnet_tiny", condition_dim=nets.dim)
    Trainer(separator, events, QueryCollate(nets),
            TrainConfig(steps=sep_steps, out_dir=str(out_dir / "separator_run"), **common)).fit()
    system = QuerySeparator(nets, separator).eval()
    system.save(out_dir / "model")
    return system


# --- scoring -----------------------------------------------------------------------------------------
def _sdr(est: Tensor, ref: Tensor) -> Tensor:
    return bss_sdr(est.double(), ref.double()).float()


@torch.no_grad()
def score_queries(system: QuerySeparator, dataset: EventMixtures, kinds: tuple[str, ...] = QUERY_KINDS) -> dict:
    """Mean SDRi (dB) of the queried source per query kind: SDR(estimate) - SDR(mixture), same target."""
    collate, totals = QueryCollate(system.nets), {k: 0.0 for k in kinds}
    for i in range(len(dataset)):
        item = dataset[i]
        mix, target = item["audio"][None], item["sources"][item["query_source"]][None]
        base = _sdr(mix, target)
        for kind in kinds:
            cond = collate.condition(item, kind)
            est = _run(system, mix, cond)
            totals[kind] += float(_sdr(est[:, 0], target) - base)
    return {k: v / len(dataset) for k, v in totals.items()}


def _run(system: QuerySeparator, mix: Tensor, cond: Tensor) -> Tensor:
    from recipes.separation.evaluate import model_separator

    system.eval()
    return model_separator(system.separator, condition=cond)(mix, None)


@torch.no_grad()
def score_unconditioned(model, dataset: EventMixtures) -> float:
    """Mean SDRi of an unconditioned n-output separator's best-matching output for the queried source
    (an oracle choice among its outputs: an upper bound for picking the right one)."""
    from recipes.separation.evaluate import model_separator

    run, total = model_separator(model.eval()), 0.0
    for i in range(len(dataset)):
        item = dataset[i]
        mix, target = item["audio"][None], item["sources"][item["query_source"]][None]
        est = run(mix, None)[0]                                     # (n_src, T)
        total += float(_sdr(est, target.expand_as(est)).max() - _sdr(mix, target))
    return total / len(dataset)


# --- command line ------------------------------------------------------------------------------------
@dataclass
class QueryConfig:
    out_dir: str = "runs/separation-query"
    tagger_steps: int = 300
    text_steps: int = 150
    sep_steps: int = 600
    batch_size: int = 8
    train_size: int = 4000
    test_size: int = 100
    seconds: float = 2.0
    lr: float = 1e-3
    seed: int = 0


def main(argv: list[str] | None = None) -> int:
    """``python -m recipes.separation.query [--config configs/query.yaml] key=value``: train, then score."""
    from zoo.config import parse_train_args, save_config

    cfg, _ = parse_train_args(argv, QueryConfig, Path(__file__).parent / "configs" / "query.yaml",
                              prog="python -m recipes.separation.query")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.out_dir) / "config.yaml")
    system = train_query_system(cfg.out_dir, cfg.tagger_steps, cfg.text_steps, cfg.sep_steps, cfg.batch_size,
                                cfg.train_size, cfg.seconds, cfg.seed, cfg.lr)
    scores = score_queries(system, EventMixtures(cfg.test_size, seed=cfg.seed + 7_919, seconds=cfg.seconds))
    print("query SDRi (dB): " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
