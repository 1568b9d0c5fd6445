"""Brain-decoding quickstart (offline, CPU): the simulated fMRI cohort -> a cross-subject MindBridge-style
model vs per-subject ridge (top-1/top-5 among 100 test images), and the simulated MEG cohort -> the
Défossez et al. brain module (top-1/top-10 segment identification among every test segment).
Each model is saved with ``save_pretrained`` plus a card holding its results; a ``zoo decode-brain``
demo ranks candidate images for one test trial.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from recipes.brain_decoding.data import FMRIConfig, fmri_cohort
from recipes.brain_decoding.evaluate import card_results, evaluate_fmri, meg_report, ridge_baseline
from recipes.brain_decoding.meg_data import MEGConfig, meg_cohort
from recipes.brain_decoding.train import train_fmri, train_meg
from zoo.cards import write_card

SUBJECTS = [1, 2, 3, 4, 5, 6, 7]
FMRI_CARD = dict(training_data="Simulated NSD-like cohort (recipes/brain_decoding/data.py): scenes from "
                               "zoo/data/scenes.py, a frozen random-weights ResNet-18 target space, subjects 1-7.",
                 intended_use="A worked example of cross-subject fMRI decoding; not a model of real brains.")
MEG_CARD = dict(training_data="Simulated MEG/EEG listening cohort (recipes/brain_decoding/meg_data.py): eSpeak "
                              "speech, a frozen random-weights Transformer target, 4 subjects with 64-273 sensors.",
                intended_use="A worked example of M/EEG speech-segment decoding; not a model of real brains.")


def fmri_part(out_dir: Path, fast: bool) -> dict:
    cohort = fmri_cohort(FMRIConfig())
    model = train_fmri(cohort, SUBJECTS, out_dir / "fmri_run", steps=150 if fast else 1200)
    report = evaluate_fmri(model, cohort, SUBJECTS, n=100)
    ridge = {f"sub{s:02d}": ridge_baseline(cohort, s, n=100)["top1"] for s in SUBJECTS}
    print("\nfMRI image retrieval on the simulated cohort, N = 100 candidates (chance top-1 = 0.01)")
    print(f"{'subject':<9}{'ridge top1':>11}{'model top1':>11}{'model top5':>11}{'2-way':>8}")
    for s, row in report.rows.items():
        print(f"{s:<9}{ridge[s]:>11.3f}{row['top1']:>11.3f}{row['top5']:>11.3f}{row['two_way']:>8.3f}")
    mean = report.summary()
    print(f"{'mean':<9}{np.mean(list(ridge.values())):>11.3f}{mean['top1']:>11.3f}{mean['top5']:>11.3f}"
          f"{mean['two_way']:>8.3f}")
    directory = out_dir / "brain_mindbridge_tiny"
    model.save_pretrained(directory)
    cohort.space.save(directory / "target_space.npz")
    write_card(model, directory, eval_results=card_results(report, "simulated NSD-like fMRI cohort", "fmri"), **FMRI_CARD)
    demo = decode_demo(cohort, directory, out_dir / "decode_demo")
    return dict(fmri_model=str(directory), fmri_n=100, fmri_top1=round(mean["top1"], 4),
                fmri_top5=round(mean["top5"], 4), ridge_top1=round(float(np.mean(list(ridge.values()))), 4),
                decode_demo_rank=demo)


def decode_demo(cohort, model_dir: Path, demo_dir: Path) -> int:
    """Write 20 candidate images + one subject-1 test trial, run ``zoo decode-brain``; the true image's rank."""
    from PIL import Image

    from recipes.brain_decoding.cli import main as cli_main

    candidates = demo_dir / "candidates"
    candidates.mkdir(parents=True, exist_ok=True)
    d = cohort.subjects[1]
    for i in range(20):
        Image.fromarray(cohort.image(int(d.test_images[i]))).save(candidates / f"test_image_{i:02d}.png")
    np.save(demo_dir / "sub01_trial.npy", d.test_voxels[3])
    args = [str(model_dir), str(demo_dir / "sub01_trial.npy"), "--subject", "1", "--candidates", str(candidates),
            "--top", "20"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli_main(["decode-brain", *args])
    text = out.getvalue()
    (demo_dir / "ranking.txt").write_text(text)
    print(f"\n$ zoo decode-brain {' '.join(args[:1])} ... (true image: test_image_03.png)")
    print("\n".join(text.splitlines()[:6]))
    return next(i for i, line in enumerate(text.splitlines()[1:], start=1) if "test_image_03.png" in line)


def meg_part(out_dir: Path, fast: bool) -> dict:
    cfg = MEGConfig(train_minutes=3.0, test_minutes=2.0) if fast else MEGConfig()
    cohort = meg_cohort(cfg)
    model = train_meg(cohort, out_dir / "meg_run", steps=40 if fast else 800)
    report = meg_report(model, cohort)
    print(report.table(f"\nMEG/EEG speech-segment identification ({cfg.segment_s:.0f} s windows; chance top-10 = "
                       f"{10 / report.n:.3f})"))
    directory = out_dir / "meg_clip_tiny"
    model.save_pretrained(directory)
    write_card(model, directory, eval_results=card_results(report, "simulated MEG/EEG listening cohort", "meg"),
               **MEG_CARD)
    mean = report.summary()
    return dict(meg_model=str(directory), meg_n=report.n, meg_top1=round(mean["top1"], 4),
                meg_top10=round(mean["top10"], 4))


def run(out_dir: Path, fast: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {**fmri_part(out_dir, fast), **meg_part(out_dir, fast)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart/brain_decoding"))
    parser.add_argument("--fast", action="store_true")
    args = parser.parse_args()
    print(run(args.out, args.fast))
