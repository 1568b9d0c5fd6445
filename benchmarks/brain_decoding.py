"""Brain decoding on the simulated cohorts (CPU, <= 30 min): ``python benchmarks/brain_decoding.py``.

fMRI (NSD-like, 8 subjects, 200 training images x 3 repeats each, 300 shared test images; top-1 among
N = 100 candidates, 30 random draws):
  1. per-subject ridge regression (alpha picked on held-out training images) for subjects 1-7;
  2. one cross-subject MindBridge-style model (brain_mindbridge_tiny) trained on subjects 1-7;
  3. new subject 8 with 10% of its training images: reset-tuning the model of (2) (fresh subject
     embedder + builder, trunk frozen) vs the same preset trained on that 10% alone (and ridge).
MEG (4 subjects, 64-273 sensors): meg_clip_tiny, top-1/top-10 identification of 1-s speech segments
among every test segment (N >= 500).
Prints the tables and writes benchmarks/results/brain_decoding.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.brain_decoding.adapt import reset_tune  # noqa: E402  (after the sys.path insert)
from recipes.brain_decoding.data import FMRIConfig, fmri_cohort
from recipes.brain_decoding.evaluate import evaluate_fmri, meg_report, ridge_baseline
from recipes.brain_decoding.meg_data import MEGConfig, meg_cohort
from recipes.brain_decoding.train import quick_config, train_fmri, train_meg

TRAIN_SUBJECTS, NEW_SUBJECT, N = [1, 2, 3, 4, 5, 6, 7], 8, 100


def fmri_benchmark(work: Path, steps: int, adapt_steps: int, fraction: float, seed: int) -> dict:
    cohort = fmri_cohort(FMRIConfig())
    t0 = time.time()
    ridge = {s: ridge_baseline(cohort, s, n=N)["top1"] for s in TRAIN_SUBJECTS}
    cross_model = train_fmri(cohort, TRAIN_SUBJECTS, work / "cross", steps, seed=seed)
    cross = {int(k[3:]): v["top1"] for k, v in evaluate_fmri(cross_model, cohort, TRAIN_SUBJECTS, n=N).rows.items()}
    print(f"\nfMRI: top-1 image retrieval among N = {N} (chance {1 / N:.2f}), test images averaged over 3 repeats")
    print(f"{'subject':<10}{'ridge (per subject)':>21}{'cross-subject model':>21}")
    for s in TRAIN_SUBJECTS:
        print(f"{s:<10}{ridge[s]:>21.3f}{cross[s]:>21.3f}")
    print(f"{'mean':<10}{np.mean(list(ridge.values())):>21.3f}{np.mean(list(cross.values())):>21.3f}")

    n_imgs = int(round(fraction * cohort.config.n_train))
    cfg = quick_config(work / "adapt", adapt_steps, 64, seed=seed)
    reset = reset_tune(cross_model.train(), cohort, NEW_SUBJECT, fraction, cfg).rows[f"sub{NEW_SUBJECT:02d}"]["top1"]
    scratch_model = train_fmri(cohort, [NEW_SUBJECT], work / "scratch", adapt_steps, fraction=fraction, seed=seed)
    scratch = evaluate_fmri(scratch_model, cohort, [NEW_SUBJECT], n=N).rows[f"sub{NEW_SUBJECT:02d}"]["top1"]
    ridge_new = ridge_baseline(cohort, NEW_SUBJECT, fraction, n=N)["top1"]
    ridge_full = ridge_baseline(cohort, NEW_SUBJECT, n=N)["top1"]
    print(f"\nnew subject {NEW_SUBJECT}, {fraction:.0%} of its training data ({n_imgs} images x 3 repeats); "
          f"top-1 among N = {N}")
    for name, v in (("reset-tuning (model of subjects 1-7)", reset), ("same preset trained on the 10% alone", scratch),
                    (f"ridge on the {fraction:.0%}", ridge_new), ("(ridge on all its data, for reference)", ridge_full)):
        print(f"  {name:<40}{v:>7.3f}")
    return dict(n_candidates=N, ridge=ridge, cross_subject=cross,
                ridge_mean=float(np.mean(list(ridge.values()))), cross_subject_mean=float(np.mean(list(cross.values()))),
                new_subject=dict(subject=NEW_SUBJECT, fraction=fraction, images=n_imgs, reset_tuning=reset,
                                 from_scratch=scratch, ridge=ridge_new, ridge_all_data=ridge_full),
                steps=dict(cross_subject=steps, adaptation=adapt_steps), seconds=round(time.time() - t0, 1))


def meg_benchmark(work: Path, steps: int, seed: int) -> dict:
    cohort = meg_cohort(MEGConfig())
    t0 = time.time()
    report = meg_report(train_meg(cohort, work / "meg", steps, seed=seed), cohort)
    print(report.table(f"\nMEG/EEG: identification of 1-s speech segments among N = {report.n} "
                       f"(chance top-1 {1 / report.n:.4f}, top-10 {10 / report.n:.3f})"))
    return dict(n_candidates=report.n, rows=report.rows, mean=report.summary(), steps=steps,
                seconds=round(time.time() - t0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="cross-subject training steps")
    parser.add_argument("--adapt-steps", type=int, default=300)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--meg-steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "brain_decoding.json")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)        # tables appear as they are computed, even in a log file
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        fmri = fmri_benchmark(Path(tmp), args.steps, args.adapt_steps, args.fraction, args.seed)
        meg = meg_benchmark(Path(tmp), args.meg_steps, args.seed)
    checks = {"cross_subject_beats_ridge": fmri["cross_subject_mean"] > fmri["ridge_mean"],
              "reset_tuning_beats_scratch": fmri["new_subject"]["reset_tuning"] > fmri["new_subject"]["from_scratch"],
              "meg_top10_above_chance": meg["mean"]["top10"] > 5 * 10 / meg["n_candidates"]}
    result = dict(fmri=fmri, meg=meg, checks=checks, total_seconds=round(time.time() - start, 1),
                  machine=dict(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                               torch=torch.__version__))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nchecks: {checks}\ntotal {result['total_seconds']:.0f} s; results in {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
