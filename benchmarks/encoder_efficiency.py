"""Encoder efficiency: achieved FLOP/s of an encoder forward next to a plain matrix product's, same run.

For each speech encoder (the ASR presets' acoustic Conformers, the Transformer variant, Whisper-tiny's
encoder shape) the forward FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls
and convolutions; element-wise work counts zero), the forward is timed (median of ``--repeats``,
inference mode), and the achieved FLOP/s is divided by the FLOP/s of one ``(B*T, D) @ (D, F)`` matmul
of the encoder's own frame count, width and FFN width, timed the same way just before. The claim checked
(issue "Fast decoding", item 4): the encoder reaches >= 60% of the matmul rate, or the profile's top
operators say what limits it.

    python benchmarks/encoder_efficiency.py [--threads 2] [--batch 8] [--seconds 8] [--device cpu|cuda]

Prints a table and the top operators by self time; writes results/encoder_efficiency.json and .png.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.registry import create_encoder

RESULTS = Path(__file__).resolve().parent / "results"
ENCODERS = {  # name: (registry name, kwargs, width, ffn width)
    "conformer tiny (d144 x6)": ("conformer_speech", dict(dim=144, layers=6, heads=4, ffn=576), 144, 576),
    "conformer small (d256 x8)": ("conformer_speech", dict(dim=256, layers=8, heads=4, ffn=1024), 256, 1024),
    "transformer small (d256 x8)": ("transformer_speech", dict(dim=256, layers=8, heads=4, ffn=1024), 256, 1024),
}


def timed(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(label: str, args) -> dict:
    name, kwargs, width, ffn = ENCODERS[label]
    encoder = create_encoder(name, **kwargs).eval().to(args.device)
    samples = int(args.seconds * 16000)
    audio = torch.randn(args.batch, samples, device=args.device) * 0.1
    lengths = torch.full((args.batch,), samples, device=args.device)
    dtype = torch.bfloat16 if args.device == "cuda" else None
    autocast = torch.autocast(args.device, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), autocast:
        with FlopCounterMode(display=False) as counter:
            features = encoder(audio, lengths)
        flops = counter.get_total_flops()
        frames = features.x.shape[0] * features.x.shape[1]
        seconds = timed(lambda: encoder(audio, lengths), args.repeats, args.device)
        a = torch.randn(frames, width, device=args.device)
        b = torch.randn(width, ffn, device=args.device)
        mm_seconds = timed(lambda: a @ b, max(args.repeats, 20), args.device)
    mm_rate = 2 * frames * width * ffn / mm_seconds
    rate = flops / seconds
    return dict(encoder=label, gflops=flops / 1e9, forward_ms=seconds * 1e3, gflops_per_s=rate / 1e9,
                matmul_shape=[frames, width, ffn], matmul_gflops_per_s=mm_rate / 1e9, ratio=rate / mm_rate,
                rtfx=args.batch * args.seconds / seconds)


def top_operators(label: str, args, rows: int = 8) -> str:
    name, kwargs, *_ = ENCODERS[label]
    encoder = create_encoder(name, **kwargs).eval().to(args.device)
    audio = torch.randn(args.batch, int(args.seconds * 16000), device=args.device) * 0.1
    cuda = args.device == "cuda"
    with torch.inference_mode(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=cuda), \
            torch.profiler.profile() as prof:
        for _ in range(2):
            encoder(audio, None)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "encoder_efficiency.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [measure(label, args) for label in ENCODERS]
    print(f"{'encoder':<30}{'GFLOP':>8}{'ms':>9}{'GFLOP/s':>9}{'matmul GFLOP/s':>16}{'ratio':>7}{'RTFx':>8}")
    for r in rows:
        print(f"{r['encoder']:<30}{r['gflops']:8.2f}{r['forward_ms']:9.1f}{r['gflops_per_s']:9.1f}"
              f"{r['matmul_gflops_per_s']:16.1f}{r['ratio']:7.2f}{r['rtfx']:8.0f}")
    worst = min(rows, key=lambda r: r["ratio"])
    profile = top_operators(worst["encoder"], args)
    print(f"\ntop operators of {worst['encoder']} (self time):\n{profile}")
    result = dict(machine=platform.processor() or platform.machine(), threads=args.threads, device=args.device,
                  batch=args.batch, seconds=args.seconds, torch=torch.__version__, rows=rows, profile=profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh([r["encoder"] for r in rows], [100 * r["ratio"] for r in rows])
    ax.axvline(60, color="k", ls="--", lw=1)
    ax.set_xlabel("encoder FLOP/s as % of a matching matmul's")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
