"""Padding with duration bucketing vs random batching, over one epoch.

Durations come from the corpus manifest (``--manifest``, default: the train split of the default
eSpeak corpus if it is built) or, failing that, a synthetic utterance-like list (gamma, mean ~3.8 s,
clipped to 1-12 s). Random batching uses the same number of rows per batch as the bucketed epoch
on average, so both spend the same number of steps.

    .venv/bin/python benchmarks/bucketing.py [--manifest train.jsonl] [--max-duration 60] [--buckets 5 10 20]

Claim checked: the padded fraction of an epoch is <= 10% with bucketing (10 buckets), versus far more
with random batches. Writes benchmarks/results/bucketing.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def corpus_durations(manifest: str | None) -> tuple[np.ndarray, str]:
    from zoo.data.manifest import read_manifest

    if manifest is None:
        from recipes.asr_subtitle.corpus import corpus_config, default_root

        path = default_root(corpus_config()) / "train.jsonl"
        if not path.is_file():
            d = np.clip(np.random.default_rng(0).gamma(6.0, 0.65, 2000), 1.0, 12.0)
            return d, "synthetic (corpus not built; run python -m recipes.asr_subtitle.corpus)"
        manifest = str(path)
    return np.array([r["duration"] for r in read_manifest(manifest, check_files=False)]), manifest


def random_batches(n: int, rows: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i:i + rows] for i in range(0, n, rows)]


def main() -> None:
    from zoo.data.bucketing import BucketingSampler, padded_fraction

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=None)
    p.add_argument("--max-duration", type=float, default=60.0, help="padded seconds per batch")
    p.add_argument("--buckets", type=int, nargs="+", default=[5, 10, 20, 30])
    args = p.parse_args()
    d, source = corpus_durations(args.manifest)
    print(f"durations: {source}\n  {len(d)} rows, mean {d.mean():.2f} s, min {d.min():.2f} s, "
          f"max {d.max():.2f} s, max_duration {args.max_duration:g} s\n")
    header = ("buckets", "steps", "rows/batch", "bucketed pad", "random pad", "ratio", "ms")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (8, 6, 10, 13, 11, 6, 6), strict=True)))
    results = []
    for nb in args.buckets:
        start = time.perf_counter()
        sampler = BucketingSampler(d, args.max_duration, num_buckets=nb, seed=0)
        batches = list(sampler)
        ms = (time.perf_counter() - start) * 1e3
        rows = max(1, round(len(d) / len(batches)))
        bucketed = padded_fraction(batches, d)
        rand = float(np.mean([padded_fraction(random_batches(len(d), rows, s), d) for s in range(5)]))
        results.append(dict(buckets=nb, steps=len(batches), rows_per_batch=rows, bucketed=bucketed,
                            random=rand))
        print(f"{nb:>8} {len(batches):>6} {rows:>10} {bucketed:>12.1%} {rand:>10.1%} "
              f"{rand / bucketed:>6.1f} {ms:>6.0f}")
    ten = next((r for r in results if r["buckets"] == 10), results[0])
    verdict = "PASS" if ten["bucketed"] <= 0.10 else "FAIL"
    print(f"\n{verdict}: {ten['buckets']} buckets pad {ten['bucketed']:.1%} of the epoch (target <= 10%), "
          f"random batching {ten['random']:.1%}")
    RESULTS.mkdir(exist_ok=True)
    summary = dict(source=source, rows=len(d), max_duration=args.max_duration, results=results)
    (RESULTS / "bucketing.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
