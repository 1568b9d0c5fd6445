"""Train a 2-speaker separation preset on mixtures of the embedded eSpeak NG corpus.

    zoo train separation [--config FILE] [key=value ...] [--resume]
    python -m recipes.separation.train --config recipes/separation/configs/tiny.yaml train.steps=200

Mixtures follow calibration.md §B (``recipes.separation.data.SpeakerMixtures``): training mixtures use
the ``train`` split's voices; a fixed held-out test set draws from ``test_seen`` + ``test_unseen``
(new sentences, all voices). The loss is the model's own utterance-level PIT negative SI-SNR
(Luo & Mesgarani, TASLP 2019, §3.2); the periodic eval reports SI-SNRi on a small held-out subset.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from recipes.separation.data import MixtureConfig, SpeakerMixtures, collate_mixtures, load_clean_utterances
from zoo.config import parse_train_args, save_config
from zoo.registry import create_model
from zoo.train import TrainConfig, Trainer, seed_everything

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"
TEST_SEED_OFFSET = 7_919  # the held-out mixtures never share a seed with the training ones


@dataclass
class ModelConfig:
    name: str = "conv_tasnet_tiny"
    kwargs: dict[str, Any] = field(default_factory=dict)   # preset overrides, e.g. {R: 1}


@dataclass
class DataConfig:
    root: str | None = None          # corpus folder; None = the default cache
    n_train: int = 2000              # corpus utterances (see recipes/asr_subtitle/corpus.py)
    n_test: int = 200
    corpus_seed: int = 0
    languages: list[str] = field(default_factory=lambda: ["en", "nl"])
    dry_only: bool = False           # keep only rows without reverberation (rt60 == 0)
    train_size: int = 3000           # training mixtures
    test_size: int = 200             # held-out mixtures (evaluate.py scores these)
    eval_size: int = 32              # first held-out mixtures scored during training (0: none)
    seconds: float = 4.0
    gain_db: float = 5.0
    seed: int = 0


@dataclass
class SeparationConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/separation-tiny"))


def corpus(cfg: DataConfig) -> dict[str, Path]:
    from recipes.asr_subtitle.corpus import build_corpus

    return build_corpus(cfg.root, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.corpus_seed,
                        languages=cfg.languages)


def _rows(path: Path, dry_only: bool) -> list[dict]:
    from recipes.asr_subtitle.corpus import MANIFEST_SCHEMA
    from zoo.data.manifest import read_manifest

    rows = read_manifest(path, MANIFEST_SCHEMA)
    return [r for r in rows if not dry_only or float(r.get("rt60", 0.0)) == 0.0]


def mixture_config(cfg: DataConfig, n_src: int, sample_rate: int) -> MixtureConfig:
    return MixtureConfig(n_src=n_src, sample_rate=sample_rate, seconds=cfg.seconds, gain_db=cfg.gain_db)


def make_datasets(cfg: DataConfig, n_src: int = 2, sample_rate: int = 8000) -> tuple[SpeakerMixtures, SpeakerMixtures]:
    """(train mixtures from train voices, fixed held-out mixtures from test_seen + test_unseen)."""
    splits = corpus(cfg)
    train_rows = _rows(splits["train"], cfg.dry_only)
    test_rows = _rows(splits["test_seen"], cfg.dry_only) + _rows(splits["test_unseen"], cfg.dry_only)
    mix = mixture_config(cfg, n_src, sample_rate)
    train = SpeakerMixtures(*load_clean_utterances(train_rows, sample_rate), cfg.train_size, cfg.seed, mix)
    test = SpeakerMixtures(*load_clean_utterances(test_rows, sample_rate), cfg.test_size,
                           cfg.seed + TEST_SEED_OFFSET, mix)
    return train, test


def build_model(cfg: ModelConfig):
    return create_model(cfg.name, **cfg.kwargs)


def fit(model, train_set: Dataset, eval_set: Dataset | None, config: TrainConfig, resume: bool = False,
        run_config: Any = None) -> dict:
    """Train ``model`` with the shared Trainer; eval = SI-SNRi on ``eval_set`` (when given)."""
    from recipes.separation.evaluate import make_eval_fn

    eval_fn = make_eval_fn(eval_set) if eval_set is not None and len(eval_set) else None
    trainer = Trainer(model, train_set, collate_mixtures, config, eval_fn=eval_fn)
    if trainer.main:
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if run_config is not None:
            save_config(run_config, out / "config.yaml")
        print(f"{model.name}: {sum(p.numel() for p in model.parameters()):,} parameters; "
              f"{len(train_set)} training mixtures", flush=True)
    return trainer.fit(resume=resume)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, resume = parse_train_args(argv, SeparationConfig, DEFAULT_CONFIG, prog="zoo train separation")
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    train_set, test_set = make_datasets(cfg.data, model.meta.get("n_src", 2), model.meta.get("sample_rate", 8000))
    eval_set = Subset(test_set, range(min(cfg.data.eval_size, len(test_set)))) if cfg.data.eval_size else None
    history = fit(model, train_set, eval_set, cfg.train, resume, run_config=cfg)
    if history["eval"]:
        print("final eval:", history["eval"][-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
