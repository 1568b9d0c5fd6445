"""Our Conv-TasNet vs torchaudio's, same weights (converted) and same input, forward pass side by side.

Claim: ours is at least as fast (ratio = torchaudio time / our time >= 1.0) and numerically the same
(max abs output difference <= 1e-5). Timings interleave the two models (alternating which goes first)
so background load hits both alike; each cell is the median of ``--repeats`` runs after warm-up.

    .venv/bin/python benchmarks/convtasnet_vs_torchaudio.py [--seconds 4] [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchaudio

from recipes.separation.convert import from_torchaudio

CONFIGS = {  # torchaudio.models.ConvTasNet keyword arguments
    "paper": {
        "enc_kernel_size": 16,
        "enc_num_feats": 512,
        "msk_kernel_size": 3,
        "msk_num_feats": 128,
        "msk_num_hidden_feats": 512,
        "msk_num_layers": 8,
        "msk_num_stacks": 3,
    },
    "tiny": {
        "enc_kernel_size": 16,
        "enc_num_feats": 128,
        "msk_kernel_size": 3,
        "msk_num_feats": 64,
        "msk_num_hidden_feats": 128,
        "msk_num_layers": 6,
        "msk_num_stacks": 2,
    },
}


def _time(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def bench(config: str, batch: int, seconds: float, repeats: int, warmup: int, device: str) -> dict:
    torch.manual_seed(0)
    ta = torchaudio.models.ConvTasNet(**CONFIGS[config]).eval().to(device)
    ours = from_torchaudio(ta).to(device)
    x = torch.randn(batch, int(seconds * 8000), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run_ta(inp):
        out = ta(inp[:, None])
        sync()
        return out

    def run_ours(inp):
        out = ours.decoders["separation"].separate(ours.encoders["filterbank"](inp))[..., : inp.shape[-1]]
        sync()
        return out

    with torch.inference_mode():
        diff = (run_ta(x) - run_ours(x)).abs().max().item()
        for _ in range(warmup):
            run_ta(x), run_ours(x)
        t_ta, t_ours = [], []
        for i in range(repeats):
            if i % 2:
                t_ta.append(_time(run_ta, x)), t_ours.append(_time(run_ours, x))
            else:
                t_ours.append(_time(run_ours, x)), t_ta.append(_time(run_ta, x))
    med_ta, med_ours = statistics.median(t_ta), statistics.median(t_ours)
    return {
        "config": config,
        "batch": batch,
        "ta_ms": 1e3 * med_ta,
        "ours_ms": 1e3 * med_ours,
        "ratio": med_ta / med_ours,
        "diff": diff,
        "params": sum(p.numel() for p in ours.parameters()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--configs", nargs="+", default=["paper", "tiny"], choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"Conv-TasNet forward, {args.seconds:g} s at 8 kHz, device={args.device}, threads={args.threads}, "
        f"median of {args.repeats} (torch {torch.__version__}, torchaudio {torchaudio.__version__})"
    )
    print(
        f"{'config':<7}{'params':>11}{'batch':>7}{'torchaudio ms':>15}{'ours ms':>10}{'ratio':>8}"
        f"{'max |diff|':>12}"
    )
    ok = True
    for config in args.configs:
        for batch in args.batches:
            r = bench(config, batch, args.seconds, args.repeats, args.warmup, args.device)
            ok &= r["ratio"] >= 1.0 and r["diff"] <= 1e-5
            print(
                f"{r['config']:<7}{r['params']:>11,}{r['batch']:>7}{r['ta_ms']:>15.1f}{r['ours_ms']:>10.1f}"
                f"{r['ratio']:>7.2f}x{r['diff']:>12.2e}"
            )
    print("claim holds (ratio >= 1.0x, diff <= 1e-5)" if ok else "CLAIM FAILS for at least one row")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
