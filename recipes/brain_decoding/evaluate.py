"""Retrieval evaluation (always "among N", N stated) and the per-subject ridge baseline:
``python -m recipes.brain_decoding.evaluate --model DIR [--subjects 1 2] [--n 100] [--no-card]``.

fMRI: each test trial (repeats averaged) is embedded; top-1/top-5 image retrieval among ``n``
candidates (random draws of n test images, averaged over 30 draws, as MindEye's 300-way protocol)
and 2-way identification. MEG: every test segment is embedded; top-1/top-10 segment identification
among all N test segments of the story (Défossez et al. 2023). The ridge baseline maps voxels to the
target embedding per subject (closed form, alpha picked on the last 20% of the training trials).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recipes.brain_decoding.data import FMRICohort, FMRIConfig, FMRITrials, collate_fmri, fmri_cohort
from zoo.metrics_retrieval import topk_among, two_way_identification

ALPHAS = (1e2, 1e3, 3e3, 1e4, 3e4, 1e5)


@dataclass
class RetrievalReport:
    """Per-subject retrieval scores; ``n`` candidates per query."""

    n: int
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self, prefix: str = "") -> dict[str, float]:
        keys = sorted({k for r in self.rows.values() for k in r if k not in ("n", "queries", "trials")})
        return {f"{prefix}{k}": float(np.mean([r[k] for r in self.rows.values()])) for k in keys}

    def table(self, title: str = "") -> str:
        keys = [k for k in next(iter(self.rows.values())) if k not in ("n", "trials")]
        lines = [title] if title else []
        lines.append(f"{'subject':<10}" + "".join(f"{k:>10}" for k in keys) + f"   (N = {self.n} candidates)")
        for s, r in self.rows.items():
            lines.append(f"{s:<10}" + "".join(f"{r[k]:>10.3f}" if isinstance(r[k], float) else f"{r[k]:>10}" for k in keys))
        return "\n".join(lines)


def score(pred: torch.Tensor, target: torch.Tensor, n: int, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    r = topk_among(pred, target, n=n, ks=ks)
    return {**r.row(), "two_way": round(two_way_identification(pred, target), 4)}


@torch.no_grad()
def embed_fmri(model, dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, target) embeddings of every trial in ``dataset``."""
    model.eval()
    preds, targets = [], []
    for i in range(0, len(dataset), batch_size):
        batch = collate_fmri([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
        preds.append(model.generate(batch, heads="retrieval")["retrieval"])
        targets.append(batch["targets"]["retrieval"]["embedding"])
    return torch.cat(preds), torch.cat(targets)


def evaluate_fmri(model, cohort: FMRICohort, subjects: list[int], n: int = 100) -> RetrievalReport:
    report = RetrievalReport(n)
    for s in subjects:
        pred, target = embed_fmri(model, FMRITrials(cohort, [s], "test"))
        report.rows[f"sub{s:02d}"] = score(pred, target, n)
    return report


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> torch.Tensor:
    """Closed-form ridge weights (n_vox + 1, D) with an unpenalised intercept."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    if x.shape[0] < x.shape[1]:   # dual form when there are fewer trials than voxels
        w = xc.T @ torch.linalg.solve(xc @ xc.T + alpha * torch.eye(x.shape[0], dtype=x.dtype), y - ym)
    else:
        w = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ (y - ym))
    return torch.cat([w, (ym - xm @ w)[None]])


def ridge_predict(w: torch.Tensor, x: np.ndarray) -> torch.Tensor:
    return (torch.as_tensor(x, dtype=torch.float64) @ w[:-1] + w[-1]).float()


def ridge_baseline(cohort: FMRICohort, subject: int, fraction: float = 1.0, n: int = 100,
                   alphas: tuple[float, ...] = ALPHAS) -> dict[str, float]:
    """Per-subject ridge from voxels to the target embedding, trained on the first ``fraction`` of its trials."""
    d = cohort.subjects[subject]
    r = cohort.config.repeats
    m = r * max(int(round(fraction * len(d.train_images) / r)), 10)
    x, y = d.train_voxels[:m], cohort.embeddings[d.train_images[:m]]
    cut = r * int(0.8 * m / r)                    # hold out whole images to pick alpha
    best = max(alphas, key=lambda a: topk_among(ridge_predict(ridge_fit(x[:cut], y[:cut], a), x[cut:]),
                                                torch.from_numpy(y[cut:]), n=min(n, m - cut), ks=(1,)).top[1])
    w = ridge_fit(x, y, best)
    return {**score(ridge_predict(w, d.test_voxels), torch.from_numpy(cohort.embeddings[d.test_images]), n),
            "alpha": best}


@torch.no_grad()
def evaluate_meg(model, cohort, subjects: list[int] | None = None, ks: tuple[int, ...] = (1, 10),
                 batch_size: int = 128) -> dict[str, float]:
    """Mean over subjects of top-k segment identification among all N test segments."""
    return meg_report(model, cohort, subjects, ks, batch_size).summary()


@torch.no_grad()
def meg_report(model, cohort, subjects: list[int] | None = None, ks: tuple[int, ...] = (1, 10),
               batch_size: int = 128) -> RetrievalReport:
    from recipes.brain_decoding.meg_data import MEGSegments, collate_meg

    model.eval()
    subjects = list(range(len(cohort.subjects))) if subjects is None else subjects
    report = None
    for s in subjects:
        ds = MEGSegments(cohort, [s], "test")
        preds, targets = [], []
        for i in range(0, len(ds), batch_size):
            batch = collate_meg([ds[j] for j in range(i, min(i + batch_size, len(ds)))])
            preds.append(model.generate(batch, heads="segments")["segments"])
            targets.append(batch["targets"]["segments"]["embedding"].flatten(1))
        report = report or RetrievalReport(len(ds))
        report.rows[f"sub{s:02d}"] = score(torch.cat(preds), torch.cat(targets), len(ds), ks)
    return report


def card_results(report: RetrievalReport, dataset: str, modality: str) -> list[dict]:
    """Mean-over-subjects scores as model-card results (task, dataset, split, metric)."""
    return [dict(task_type="brain-decoding", task_name=f"{modality} retrieval", dataset_name=dataset,
                 dataset_type="simulated", dataset_split="test", dataset_config=f"N={report.n}",
                 metric_type=f"{k} among {report.n}" if k.startswith("top") else k, metric_value=round(v, 6))
            for k, v in report.summary().items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.brain_decoding.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--subjects", type=int, nargs="*", help="fMRI subjects (default: every subject the model has)")
    parser.add_argument("--n", type=int, default=100, help="candidates per query (fMRI)")
    parser.add_argument("--noise", type=float, default=FMRIConfig.noise, help="simulated cohort noise")
    parser.add_argument("--no-card", action="store_true", help="do not write the results into the card")
    args = parser.parse_args(argv)
    from zoo.graph import ZooModel

    directory = Path(args.model)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass --model a directory written by save_pretrained")
    model = ZooModel.from_pretrained(str(directory))
    if "meg" in model.inputs():
        from recipes.brain_decoding.meg_data import meg_cohort

        report, name, mod = meg_report(model, meg_cohort()), "simulated MEG listening cohort", "meg"
    else:
        cohort = fmri_cohort(FMRIConfig(noise=args.noise))
        subjects = args.subjects or [int(s) for s in model.encoders["brain"].subjects if int(s) in cohort.subjects]
        report, name, mod = evaluate_fmri(model, cohort, subjects, args.n), "simulated NSD-like fMRI cohort", "fmri"
    print(report.table(f"{model.name}: retrieval on {name}"))
    if not args.no_card:
        from zoo.cards import add_eval_results

        add_eval_results(directory, card_results(report, name, mod), model=model)
        print(f"results written to {directory / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
