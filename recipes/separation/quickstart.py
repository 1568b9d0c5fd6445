"""Separation part of the quickstart: train the tiny Conv-TasNet on eSpeak 2-speaker mixtures, score it
next to the IBM / IRM / Wiener oracles, separate one held-out mixture with the CLI path (wavs + PNG) and
write the model card. ``fast``: a 20-step smoke run on the small corpus (<= 40 s on 2 cores)."""
from __future__ import annotations

import json
from pathlib import Path

from recipes.separation import evaluate, train
from recipes.separation.cli import separate_file
from zoo.config import load_config
from zoo.data.audio import save_audio

FAST = ["data.n_train=160", "data.n_test=40", "data.train_size=200", "data.test_size=8", "data.eval_size=0",
        "train.steps=20", "train.warmup_steps=2", "train.eval_every=0", "train.checkpoint_every=20"]


def run(out_dir: Path, fast: bool = False) -> dict:
    overrides = [f"train.out_dir={out_dir}", "train.eval_every=0"] + (FAST if fast else [])
    train.main(overrides)
    model_dir = out_dir / "model"
    evaluate.main(["--model", str(model_dir), "--size", "8" if fast else "200", "--json", str(out_dir / "eval.json")])
    cfg = load_config(train.SeparationConfig, out_dir / "config.yaml")
    _, test_set = train.make_datasets(cfg.data)
    example = test_set[0]
    mix_path = save_audio(out_dir / "example" / "mixture.wav", example["audio"], 8000)
    for i, src in enumerate(example["sources"]):
        save_audio(out_dir / "example" / "reference" / f"s{i + 1}.wav", src, 8000)
    separated = separate_file(str(model_dir), mix_path, out_dir / "example" / "separated")
    table = json.loads((out_dir / "eval.json").read_text())["table"]
    return {"model": str(model_dir), "card": str(model_dir / "README.md"),
            "results": {f"{system}/{metric}": round(v, 2) for system, row in table.items() for metric, v in row.items()},
            "separated": separated["sources"], "spectrograms": separated.get("plot"),
            "training_curves": str(out_dir / "training_curves.png")}
