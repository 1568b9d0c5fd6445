"""Diverse beam search (Vijayakumar et al., AAAI 2018, §4: Hamming diversity between groups) against
plain beam search on a trained captioner: distinct-2 within each n-best list (averaged over scenes),
corpus distinct-2 and CIDEr-D / BLEU-4 of the top caption, and decoding time, on the held-out scenes.

    python benchmarks/captioning.py --model runs/caption-tiny/model [--size 200] [--beams 6] [--threads 1]

Prints a markdown table; writes benchmarks/results/captioning.json and captioning.md.
Expected: diverse beam search raises n-best distinct-2 at a small cost (or none) in top-caption CIDEr-D.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def settings(beams: int) -> list[tuple[str, dict]]:
    half = max(beams // 2, 1)
    return [("greedy", dict(beam_size=1)),
            (f"beam {beams}", dict(beam_size=beams, n_best=beams)),
            (f"diverse {beams}/{half} groups, λ=0.5", dict(beam_size=beams, groups=half, diversity=0.5, n_best=beams)),
            (f"diverse {beams}/{beams} groups, λ=1.0", dict(beam_size=beams, groups=beams, diversity=1.0, n_best=beams))]


def run(model, size: int = 200, beams: int = 6, group: str = "va") -> list[dict]:
    from decoders.search import DecodingOptions
    from recipes.captioning.data import CaptionScenes
    from recipes.captioning.evaluate import HELD_OUT_SEED, caption_dataset, scores

    dataset = CaptionScenes(size, "test", HELD_OUT_SEED, group=group)
    rows = []
    for name, kw in settings(beams):
        start = time.perf_counter()
        hyps, refs = caption_dataset(model, dataset, DecodingOptions(max_len=22, **kw))
        seconds = time.perf_counter() - start
        rows.append(dict(setting=name, **{k: round(v, 4) for k, v in scores(hyps, refs).items()},
                         seconds=round(seconds, 3)))
    return rows


def table(rows: list[dict]) -> str:
    head = "| setting | CIDEr-D | BLEU-4 | exact | distinct-2 (n-best) | distinct-2 (top, corpus) | s |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['cider_d']:.1f} | {r['bleu4']:.1f} | {r['exact']:.3f} | "
                     f"{r['distinct2_nbest']:.3f} | {r['distinct2']:.3f} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a saved captioning model directory")
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--beams", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from zoo.graph import ZooModel

    model = ZooModel.from_pretrained(args.model)
    rows = run(model, args.size, args.beams)
    text = table(rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "captioning.json").write_text(json.dumps(dict(model=args.model, size=args.size, rows=rows), indent=2))
    (out / "captioning.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
