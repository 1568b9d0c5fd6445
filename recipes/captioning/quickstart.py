"""Captioning part of the quickstart: train the tiny audio-visual captioner, evaluate it on unseen
colour-shape pairs, write its card."""
from __future__ import annotations

from pathlib import Path

from recipes.captioning import evaluate, train


def run(out_dir: Path, fast: bool = False) -> dict:
    out_dir = Path(out_dir)
    extra = ["train.steps=30", "train.batch_size=16", "data.n_train=300", "data.n_eval=0", "train.warmup_steps=5",
             "train.tensorboard=false", "train.num_threads=1"] if fast else []
    steps = 30 if fast else 1200
    train.main([f"train.out_dir={out_dir}", "train.eval_every=100000", f"train.checkpoint_every={steps}",
                "train.progress=false", *extra])
    model_dir = out_dir / "model"
    evaluate.main(["--model", str(model_dir), "--size", "16" if fast else "300"])
    return {"model": str(model_dir), "card": str(model_dir / "README.md"),
            "training_curves": str(out_dir / "training_curves.png")}
