"""Train the toy cascade: ``python -m recipes.toy.train [--config FILE] [key=value ...] [--resume]``.

Under ``torchrun --nproc_per_node N -m recipes.toy.train`` the Trainer runs DDP. The eval reports
held-out accuracy of both heads: frame tags (over labelled valid frames) and the majority class.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


from recipes.toy.data import ToySequences, collate
from recipes.toy.evaluate import evaluate
from zoo.config import parse_train_args, save_config
from zoo.registry import create_model
from zoo.train import TrainConfig, Trainer, seed_everything

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"


@dataclass
class ModelConfig:
    name: str = "toy_cascade"
    dim: int = 32
    layers: int = 1
    heads: int = 2


@dataclass
class DataConfig:
    train_size: int = 512
    eval_size: int = 128
    min_len: int = 6
    max_len: int = 24
    missing_fraction: float = 0.2
    seed: int = 0


@dataclass
class ToyConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/toy-tiny"))


def make_datasets(cfg: DataConfig) -> tuple[ToySequences, ToySequences]:
    common = dict(min_len=cfg.min_len, max_len=cfg.max_len, missing_fraction=cfg.missing_fraction)
    return (ToySequences(cfg.train_size, seed=cfg.seed, **common),
            ToySequences(cfg.eval_size, seed=cfg.seed + 10_000, **{**common, "missing_fraction": 0.0}))


def make_eval_fn(dataset: ToySequences, batch_size: int = 64):
    """Held-out accuracy of the frame-tag head (valid frames) and of the majority head."""

    def eval_fn(model) -> dict[str, float]:
        return {f"acc_{head}": s["accuracy"] for head, s in evaluate(model, dataset, batch_size).items()}

    return eval_fn


def main(argv: Sequence[str] | None = None) -> int:
    cfg, resume = parse_train_args(argv, ToyConfig, DEFAULT_CONFIG, prog="python -m recipes.toy.train")
    seed_everything(cfg.train.seed)  # identical initial weights on every rank
    model = create_model(cfg.model.name, dim=cfg.model.dim, layers=cfg.model.layers, heads=cfg.model.heads)
    train_set, eval_set = make_datasets(cfg.data)
    trainer = Trainer(model, train_set, collate, cfg.train, eval_fn=make_eval_fn(eval_set))
    if trainer.main:
        Path(cfg.train.out_dir).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(cfg.train.out_dir) / "config.yaml")
    history = trainer.fit(resume=resume)
    if trainer.main and history["eval"]:
        print("final eval:", history["eval"][-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
