"""Score a separation model on the held-out 2-speaker mixtures, next to the oracle masks.

    zoo eval separation --model runs/separation-tiny/model [--size 200] [--no-sdr] [--no-card]

Metrics (Conv-TasNet paper §IV-C): SI-SNRi, the SI-SNR (Le Roux et al., ICASSP 2019) of each
permutation-aligned estimate minus that of the mixture against the same reference, averaged over
sources; SDRi, the same improvement in BSS-eval SDR (Vincent et al. 2006; torchmetrics'
``signal_distortion_ratio``, 512-tap distortion filter). The permutation is the one maximising
SI-SNR and is used for both metrics. Oracles: IBM, IRM and a Wiener-like mask on a 512/128 STFT
(``recipes.separation.oracles``), scored on the very same mixtures.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.functional.audio import signal_distortion_ratio

from recipes.separation.data import collate_mixtures
from recipes.separation.oracles import ORACLES, oracle_separate
from zoo.losses import pairwise_si_snr, pit_from_matrix, reorder, si_snr

__all__ = ["SDR_LOAD_DIAG", "bss_sdr", "eval_results", "improvements", "main", "make_eval_fn", "score", "score_model",
           "score_oracle"]

NAMES = {"model": "model", "ibm": "oracle IBM", "irm": "oracle IRM", "wiener": "oracle Wiener-like"}


SDR_LOAD_DIAG = 1e-6  # added to the 512x512 autocorrelation's diagonal: references with runs of digital silence
# (anechoic eSpeak sources) make it singular and LAPACK refuses; the shift moves SDR by ~1e-5 dB


def bss_sdr(estimates: Tensor, references: Tensor) -> Tensor:
    """BSS-eval SDR (torchmetrics, 512-tap distortion filter) of (..., T) pairs, one signal at a time: the
    batched LAPACK solve of this torch build intermittently rejects a batch whose rows each solve fine."""
    est, ref = estimates.reshape(-1, estimates.shape[-1]), references.reshape(-1, references.shape[-1])
    rows = [signal_distortion_ratio(e, r, load_diag=SDR_LOAD_DIAG) for e, r in zip(est, ref)]
    return torch.stack(rows).reshape(references.shape[:-1])


def improvements(estimates: Tensor, sources: Tensor, mixture: Tensor, sdr: bool = True) -> dict[str, Tensor]:
    """Per-row SI-SNRi (and SDRi) in dB: estimates, sources (B, C, T), mixture (B, T) -> {(B,)}."""
    est = estimates.double()[..., : sources.shape[-1]]
    ref, mix = sources.double(), mixture.double()[:, None].expand_as(sources)
    _, perm = pit_from_matrix(pairwise_si_snr(est, ref), maximize=True)
    est = reorder(est, perm)
    out = {"si_snri": (si_snr(est, ref) - si_snr(mix, ref)).mean(1)}
    if sdr:
        out["sdri"] = (bss_sdr(est, ref) - bss_sdr(mix, ref)).mean(1)
    return {k: v.float() for k, v in out.items()}


def score(separate: Callable[[Tensor], Tensor], dataset, batch_size: int = 8, sdr: bool = True) -> dict[str, float]:
    """Mean improvements of ``separate(mixture (B, T), sources (B, C, T)) -> (B, C, T)`` over ``dataset``."""
    totals: dict[str, float] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate_mixtures([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        mix, sources = batch["audio"], batch["targets"]["separation"]["sources"]
        for k, v in improvements(separate(mix, sources), sources, mix, sdr).items():
            totals[k] = totals.get(k, 0.0) + float(v.sum())
    return {k: v / len(dataset) for k, v in totals.items()}


def model_separator(model, condition: Tensor | None = None) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``run(mixture (B, T), sources=None) -> (B, n_src, T)`` with the model's separation head."""
    from decoders.separation import SeparationOptions

    device = next(model.parameters()).device
    cond = None if condition is None else condition.to(device)

    @torch.no_grad()
    def run(mix: Tensor, sources: Tensor | None = None) -> Tensor:
        batch = {"audio": mix.to(device), "audio_lengths": torch.full((mix.shape[0],), mix.shape[1], device=device)}
        options = SeparationOptions(num_samples=mix.shape[-1], condition=cond)
        out = model.generate(batch, heads="separation", options=options)
        return out["separation"].float().cpu()

    return run


def score_model(model, dataset, batch_size: int = 8, sdr: bool = True) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        return score(model_separator(model), dataset, batch_size, sdr)
    finally:
        model.train(was_training)


def score_oracle(kind: str, dataset, batch_size: int = 8, sdr: bool = True) -> dict[str, float]:
    return score(lambda mix, sources: oracle_separate(mix, sources, kind), dataset, batch_size, sdr)


def make_eval_fn(dataset, batch_size: int = 8):
    """Trainer eval: SI-SNRi (dB) on ``dataset`` (SDR is skipped: it is the slow part)."""

    def eval_fn(model) -> dict[str, float]:
        return score_model(model, dataset, batch_size, sdr=False)

    return eval_fn


def eval_results(table: dict[str, dict[str, float]], n: int) -> list[dict]:
    """Card entries: one per system and metric (model rows only; oracles go in the printed table)."""
    out = []
    for metric, value in table["model"].items():
        out.append(dict(task_type="audio-to-audio", task_name="2-speaker separation",
                        dataset_name=f"eSpeak NG 2-speaker mixtures (held-out sentences, {n} mixtures)",
                        dataset_type="encdec-zoo/espeak-2mix", dataset_split="test",
                        metric_type=metric, metric_value=round(value, 2)))
    return out


def format_table(table: dict[str, dict[str, float]]) -> str:
    metrics = sorted({m for row in table.values() for m in row})
    lines = [f"{'system':<20}" + "".join(f"{m + ' (dB)':>14}" for m in metrics)]
    for name, row in table.items():
        lines.append(f"{NAMES.get(name, name):<20}" + "".join(
            f"{row[m]:>14.2f}" if m in row else f"{'-':>14}" for m in metrics))
    return "\n".join(lines)


def evaluate(model, dataset, batch_size: int = 8, sdr: bool = True, oracles: Sequence[str] = ORACLES) -> dict:
    table = {"model": score_model(model, dataset, batch_size, sdr)}
    for kind in oracles:
        table[kind] = score_oracle(kind, dataset, batch_size, sdr)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo eval separation", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--config", default=None, help="the run's config.yaml (default: MODEL/../config.yaml, "
                        "else the tiny config): which corpus and mixture recipe to score on")
    parser.add_argument("--size", type=int, default=0, help="score the first N held-out mixtures (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-sdr", action="store_true", help="skip SDR (the slow metric)")
    parser.add_argument("--no-oracles", action="store_true")
    parser.add_argument("--no-card", action="store_true")
    parser.add_argument("--json", help="also write the whole table (model and oracles) to this JSON file")
    args = parser.parse_args(argv)

    from torch.utils.data import Subset

    from recipes.separation.train import DEFAULT_CONFIG, SeparationConfig, make_datasets
    from zoo.cards import add_eval_results
    from zoo.config import load_config
    from zoo.graph import ZooModel

    directory = Path(args.model)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass --model a directory written by save_pretrained")
    model = ZooModel.from_pretrained(str(directory))
    run_config = Path(args.config) if args.config else directory.parent / "config.yaml"
    cfg = load_config(SeparationConfig, run_config if run_config.is_file() else DEFAULT_CONFIG)
    if args.size:
        cfg.data.test_size = args.size
    _, test_set = make_datasets(cfg.data, model.meta.get("n_src", 2), model.meta.get("sample_rate", 8000))
    test_set = Subset(test_set, range(len(test_set)))
    table = evaluate(model, test_set, args.batch_size, not args.no_sdr, () if args.no_oracles else ORACLES)
    print(format_table(table), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"mixtures": len(test_set), "table": table}, indent=1))
    if not args.no_card:
        add_eval_results(directory, eval_results(table, len(test_set)), model=model)
        print(f"results written to {directory / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
