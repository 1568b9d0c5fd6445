"""ASR + subtitling part of the quickstart: build the eSpeak corpus, train the tiny cascaded preset,
score it on held-out voices, transcribe a long-form file to SRT/VTT, and write the model card."""
from __future__ import annotations

import json
from pathlib import Path

from recipes.asr_subtitle import evaluate, train
from recipes.asr_subtitle.corpus import build_longform
from recipes.asr_subtitle.transcribe import transcribe
from recipes.asr_subtitle.words import boundaries_error
from zoo.config import load_config
from zoo.graph import ZooModel
from zoo.subtitles import parse_srt

FAST_CORPUS = {"n_train": 160, "n_test": 40}
LM_WEIGHT, LM_BONUS = 0.6, 1.0


def run(out_dir: Path, fast: bool = False) -> dict:
    overrides = [f"train.out_dir={out_dir}", "train.eval_every=0", "data.eval_size=0"]
    if fast:  # a smoke run: a small corpus and a few steps; the numbers only show the pipeline works
        overrides += [f"data.{k}={v}" for k, v in FAST_CORPUS.items()]
        overrides += ["train.steps=8", "train.warmup_steps=2", "train.checkpoint_every=8"]
    train.main(overrides)
    model_dir = out_dir / "model"
    data = load_config(train.AsrConfig, train.DEFAULT_CONFIG, overrides).data
    root = Path(train.corpus(data)["train"]).parent
    limit = ["--limit", "16", "--max-len", "40"] if fast else []
    # greedy CTC, then CTC prefix beam search fused with the training text's character 6-gram LM (weight and
    # bonus chosen on test_seen with an earlier run; BENCHMARKS.md), on the held-out voices only; the card keeps both
    args = ["--model", str(model_dir), "--corpus", str(root), *limit]
    evaluate.main(args + ["--split", "test_unseen", "test_seen"])
    evaluate.main(args + ["--split", "test_unseen", "--lm-weight", str(LM_WEIGHT),
                          "--insertion-bonus", str(LM_BONUS)])
    longform = build_longform(root, minutes=1.0 if fast else 3.0)
    info = json.loads(Path(longform).read_text())
    model = ZooModel.from_pretrained(str(model_dir))
    written = transcribe(model, Path(longform).parent / info["audio_filepath"], out_dir / "transcripts",
                         formats=("srt", "vtt", "txt"), plot=True)
    cues = parse_srt(written["verbatim"][0].read_text())
    timing = boundaries_error(cues, longform) if cues else {}
    scores = json.loads((model_dir / "eval_results.json").read_text())
    return {"model": str(model_dir), "card": str(model_dir / "README.md"),
            "results": {f"{r['dataset_split']}/{r['task_name']}/{r['metric_type']}": r["metric_value"] for r in scores},
            "transcripts": [str(p) for paths in written.values() for p in paths],
            "longform_cue_timing": timing, "training_curves": str(out_dir / "training_curves.png")}

