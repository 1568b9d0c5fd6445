"""Train an ASR + subtitling preset on the embedded eSpeak NG broadcast corpus.

    zoo train asr_subtitle [--config FILE] [key=value ...] [--resume]
    python -m recipes.asr_subtitle.train --config recipes/asr_subtitle/configs/tiny.yaml model.kind=shared
    torchrun --nproc_per_node 2 -m recipes.asr_subtitle.train ...      # DDP

Builds (or reuses) the corpus, trains character tokenizers on the training text, batches with
lhotse duration bucketing (the padded fraction is logged per epoch), and saves the model with its
tokenizers in config.json, so ``ZooModel.from_pretrained`` gives a model that writes text.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from recipes.asr_subtitle.data import HEADS, SpeechTextDataset, collate, load_split
from zoo.config import parse_train_args, save_config
from zoo.data.bucketing import BucketingSampler
from zoo.registry import create_model
from zoo.tokenizers import train_tokenizer
from zoo.train import TrainConfig, Trainer, seed_everything

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"


@dataclass
class ModelConfig:
    kind: str = "cascaded"          # verbatim | subtitle | shared | cascaded | ctc | hybrid | maskctc
    size: str = "tiny"              # tiny | small
    tokenizer: str = "char"         # char | bpe | unigram (subtitle head; verbatim is always char)
    subtitle_vocab: int = 256       # for bpe / unigram
    spec_augment: bool = True       # SpecAugment on the acoustic encoder's log-mels (training only)
    spec_augment_warmup: int = 0    # micro-batches trained without SpecAugment first (SpecAugmentConfig)
    inter_ctc: float = 0.0          # Intermediate CTC weight of the verbatim head (Lee & Watanabe 2021)


@dataclass
class DataConfig:
    root: str | None = None         # corpus folder; None = the default cache
    n_train: int = 2000
    n_test: int = 200
    seed: int = 0
    languages: list[str] = field(default_factory=lambda: ["en", "nl"])
    label_mode: str = "both"        # both | verbatim | subtitle | partial
    max_duration: float = 60.0      # seconds of audio per micro-batch (bucketing)
    num_buckets: int = 10
    eval_size: int = 64             # held-out-voice utterances scored during training (0: none)
    pad_noise: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [probability, max s] of background
    #                                  context around a training utterance (SpeechTextDataset)
    pad_noise_switch: float = 0.0   # probability that the background after it is another utterance's


@dataclass
class AsrConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/asr-tiny"))


def corpus(cfg: DataConfig) -> dict[str, Path]:
    from recipes.asr_subtitle.corpus import build_corpus

    return build_corpus(cfg.root, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed, languages=cfg.languages)


def build_tokenizers(rows: Sequence[dict], cfg: ModelConfig) -> dict:
    verbatim = train_tokenizer([r["text_verbatim"] for r in rows], "char")
    subtitle = train_tokenizer([r["text_subtitle"] for r in rows], cfg.tokenizer, cfg.subtitle_vocab)
    return {"verbatim": verbatim, "subtitle": subtitle}


def ctc_alignable(rows: Sequence[dict], tokenizer, frame_shift_s: float, margin: float = 0.9) -> list[dict]:
    """Rows whose verbatim tokens (plus a blank between repeats) fit in ``margin`` of the CTC frames.

    Fast eSpeak speech can pack more characters than 4x-subsampled frames (25 per second); CTC cannot
    align those, so they are left out of training (ESPnet and NeMo filter by the same ratio)."""
    kept = []
    for row in rows:
        ids = tokenizer.encode(row["text_verbatim"])
        need = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if need <= margin * row["duration"] / frame_shift_s:
            kept.append(row)
    if len(kept) < len(rows):
        print(f"left out {len(rows) - len(kept)} of {len(rows)} training utterances whose verbatim text is "
              f"too long for CTC at {frame_shift_s * 1000:.0f} ms per frame", flush=True)
    return kept


def build_model(cfg: ModelConfig, tokenizers: dict):
    return create_model(f"asr_{cfg.kind}_{cfg.size}", verbatim_vocab=tokenizers["verbatim"].vocab_size,
                        subtitle_vocab=tokenizers["subtitle"].vocab_size,
                        tokenizers={h: t.to_dict() for h, t in tokenizers.items()}, spec_augment=cfg.spec_augment,
                        spec_augment_warmup=cfg.spec_augment_warmup, inter_ctc=cfg.inter_ctc)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, resume = parse_train_args(argv, AsrConfig, DEFAULT_CONFIG, prog="zoo train asr_subtitle")
    seed_everything(cfg.train.seed)
    splits = corpus(cfg.data)
    train_rows = load_split(splits["train"])
    tokenizers = build_tokenizers(train_rows, cfg.model)
    model = build_model(cfg.model, tokenizers)
    heads = [h for h in HEADS if h in model.decoders]
    if any(model.spec_decoders[h]["type"] in ("ctc", "ctc_attention") for h in heads):
        train_rows = ctc_alignable(train_rows, tokenizers["verbatim"], model.meta["frame_shift_s"])
    dataset = SpeechTextDataset(train_rows, {h: tokenizers[h] for h in heads}, label_mode=cfg.data.label_mode,
                                seed=cfg.data.seed, pad_noise=tuple(cfg.data.pad_noise),
                                switch_background=cfg.data.pad_noise_switch)
    pad = cfg.data.pad_noise[0] * cfg.data.pad_noise[1]  # expected seconds added per utterance (2 sides x half)
    sampler = BucketingSampler([r["duration"] + pad for r in train_rows], cfg.data.max_duration,
                               num_buckets=cfg.data.num_buckets, seed=cfg.train.seed)
    eval_fn = None
    if cfg.data.eval_size > 0:
        from recipes.asr_subtitle.evaluate import make_eval_fn

        held_out = load_split(splits["test_unseen"])[: cfg.data.eval_size]
        eval_fn = make_eval_fn(held_out, heads=["verbatim"] if "verbatim" in heads else heads)
    trainer = Trainer(model, dataset, collate, cfg.train, eval_fn=eval_fn, batch_sampler=sampler)
    if trainer.main:
        out = Path(cfg.train.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        print(f"{model.name}: {sum(p.numel() for p in model.parameters()):,} parameters; "
              f"{len(dataset)} training utterances; bucketing padded fraction {sampler.padded_fraction():.1%} "
              f"(epoch 0)", flush=True)
    trainer.fit(resume=resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
