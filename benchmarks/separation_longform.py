"""Long-form separation: 6 and 60 minutes of 8 kHz audio through the tiny Conv-TasNet, streamed.

Claim: ``recipes.separation.longform.separate_file`` (overlap-add over windows, permutation-aligned,
the input read block by block) runs in time ~linear in the duration, with peak memory bounded by
the window, not the file: <= 3 GB at 60 minutes. Each duration runs in a fresh subprocess whose peak
RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``. Speed and memory do not depend on the weights,
so a randomly initialised model is used unless ``--model`` names a trained one.

    .venv/bin/python benchmarks/separation_longform.py [--minutes 6 60] [--window-seconds 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 8000
MAX_RSS_GB = 3.0
LINEARITY_TOLERANCE = 1.5  # seconds per audio minute may differ by at most this factor


def write_test_audio(path: Path, minutes: float, seed: int = 0) -> None:
    """Two amplitude-modulated harmonic 'voices' plus a little noise, written 10 s at a time."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as out:
        n, block = int(minutes * 60 * SR), 10 * SR
        for start in range(0, n, block):
            t = (start + np.arange(min(block, n - start))) / SR
            x = sum(np.sin(2 * np.pi * f * k * t) / k * (0.5 + 0.5 * np.sin(2 * np.pi * am * t))
                    for f, am in ((140, 0.7), (230, 1.3)) for k in (1, 2, 3))
            out.write((0.1 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32))


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from recipes.separation import longform
    from zoo.graph import ZooModel
    from zoo.registry import create_model

    model = ZooModel.from_pretrained(args.model) if args.model else create_model("conv_tasnet_tiny")
    out = Path(args.child).with_suffix("")
    start = time.perf_counter()
    info = longform.separate_file(longform.model_fn(model), args.child, [f"{out}_s1.wav", f"{out}_s2.wav"], SR,
                                  window=int(args.window_seconds * SR))
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # ru_maxrss is KiB on Linux
    print(json.dumps({"audio_seconds": info["seconds"], "seconds": round(seconds, 2), "peak_rss_gb": round(peak_gb, 3)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[6.0, 60.0])
    parser.add_argument("--window-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", help="a saved separator (default: random-init conv_tasnet_tiny)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "separation_longform.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            wav = Path(tmp) / f"long_{minutes:g}min.wav"
            write_test_audio(wav, minutes)
            cmd = [sys.executable, __file__, "--child", str(wav), "--window-seconds", str(args.window_seconds),
                   "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            result["minutes"] = minutes
            result["seconds_per_audio_minute"] = round(result["seconds"] / minutes, 3)
            runs.append(result)
            print(f"{minutes:>6g} min: {result['seconds']:8.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
            for p in Path(tmp).glob("*.wav"):
                p.unlink()
    rates = [r["seconds_per_audio_minute"] for r in runs]
    linear = max(rates) / min(rates) <= LINEARITY_TOLERANCE
    bounded = all(r["peak_rss_gb"] <= MAX_RSS_GB for r in runs)
    print(f"time ~linear: {linear} (s per audio minute {rates}); peak memory <= {MAX_RSS_GB} GB: {bounded}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"window_seconds": args.window_seconds, "threads": args.threads, "runs": runs,
                                    "linear": linear, "memory_bounded": bounded}, indent=1))
    print(f"wrote {args.out}")
    return 0 if linear and bounded else 1


if __name__ == "__main__":
    raise SystemExit(main())
