"""Stage what gpu_suite.sh's trained-model steps need into one folder small enough to carry to a GPU machine.

    .venv/bin/python benchmarks/stage_gpu_suite.py --model runs/asr-hybrid2k/model --out .gpu [--utterances 96]
    # then, on the device: bash benchmarks/gpu_suite.sh OUTDIR .gpu/model .gpu/corpus

Copies the model folder and, from the corpus it was trained on, the first ``--utterances`` rows of
``test_unseen`` with their noisy and clean audio, the cached 3-min long-form file (built if missing) and the
corpus config; the other manifests are left empty (the benchmarks read only ``test_unseen``). With
``--utterances 96`` and a 15 MB model this is about 50 MB.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an asr_hybrid_* model folder (its run config.yaml beside it)")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--utterances", type=int, default=96)
    args = parser.parse_args(argv)
    from recipes.asr_subtitle.corpus import build_longform
    from recipes.asr_subtitle.evaluate import corpus_splits

    root = Path(corpus_splits(args.model)["test_unseen"]).parent
    reference = build_longform(root, minutes=3.0)
    corpus = args.out / "corpus"
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.model, args.out / "model")
    (corpus / "longform").mkdir(parents=True)
    shutil.copy2(root / "config.json", corpus / "config.json")
    for split in ("train", "test_seen"):
        (corpus / f"{split}.jsonl").write_text("")
    lines = (root / "test_unseen.jsonl").read_text().splitlines()[: args.utterances]
    (corpus / "test_unseen.jsonl").write_text("\n".join(lines) + "\n")
    for row in map(json.loads, lines):
        for key in ("audio_filepath", "clean_filepath"):
            (corpus / row[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / row[key], corpus / row[key])
    info = json.loads(reference.read_text())
    shutil.copy2(reference, corpus / "longform" / reference.name)
    shutil.copy2(reference.parent / info["audio_filepath"], corpus / "longform" / info["audio_filepath"])
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"staged {args.model} and {len(lines)} utterances of {root} in {args.out} ({size / 2**20:.0f} MiB)")
    return args.out


if __name__ == "__main__":
    main()
