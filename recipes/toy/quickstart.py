"""Toy part of the quickstart: train the cascade, evaluate it on a held-out split, write its card."""
from __future__ import annotations

from pathlib import Path

from recipes.toy import evaluate, train


def run(out_dir: Path, fast: bool = False) -> dict:
    steps = 60 if fast else 200
    train.main([f"train.out_dir={out_dir}", f"train.steps={steps}", "train.eval_every=100000",
                f"train.checkpoint_every={steps}"])
    model_dir = out_dir / "model"
    evaluate.main(["--model", str(model_dir), "--size", "256"])
    return {"model": str(model_dir), "card": str(model_dir / "README.md"),
            "training_curves": str(out_dir / "training_curves.png")}
