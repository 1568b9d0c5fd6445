"""Diverse beam search (Vijayakumar et al., AAAI 2018, §4: Hamming diversity between groups) against
plain beam search on a trained captioner: distinct-2 within each n-best list (averaged over scenes),
corpus distinct-2 and CIDEr-D / BLEU-4 of the top caption, and decoding time, on the held-out scenes.
When the model has a Mask-Predict head (``caption_nar``, trained with ``model.parallel_head=true``), a
second table times it against AR greedy on the same scenes at batch 1 and 64.

    python benchmarks/captioning.py --model runs/caption-tiny/model [--size 200] [--beams 6] [--threads 1]

Prints markdown tables; writes benchmarks/results/captioning.json and captioning.md.
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


def parallel_vs_ar(model, size: int = 200, group: str = "va") -> list[dict]:
    """AR greedy vs Mask-Predict (1, 2, 4 iterations) on the same scenes: quality and wall time per batch size."""
    from decoders.parallel import MaskPredictOptions
    from decoders.search import DecodingOptions
    from recipes.captioning.data import CaptionScenes
    from recipes.captioning.evaluate import HELD_OUT_SEED, caption_dataset, scores

    dataset = CaptionScenes(size, "test", HELD_OUT_SEED, group=group)
    settings = [("AR greedy", "caption", DecodingOptions(max_len=22))]
    settings += [(f"Mask-Predict, {t} iteration{'s' * (t > 1)}", "caption_nar", MaskPredictOptions(iterations=t,
                                                                                               length_beam=2))
                 for t in (1, 2, 4)]
    rows = []
    for name, head, options in settings:
        row = dict(setting=name)
        for batch_size in (1, 64):
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                hyps, refs = caption_dataset(model, dataset, options, batch_size, head=head)
                best = min(best, time.perf_counter() - start)
            row[f"seconds_b{batch_size}"] = round(best, 3)
        row.update({k: round(v, 4) for k, v in scores(hyps, refs).items()})
        rows.append(row)
    for row in rows:
        row["speedup_b1"] = round(rows[0]["seconds_b1"] / row["seconds_b1"], 2)
        row["speedup_b64"] = round(rows[0]["seconds_b64"] / row["seconds_b64"], 2)
    return rows


def parallel_table(rows: list[dict]) -> str:
    lines = ["| decoder | CIDEr-D | exact | objects | s (batch 1) | speed-up | s (batch 64) | speed-up |",
             "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['cider_d']:.1f} | {r['exact']:.3f} | {r.get('objects', 0):.3f} | "
                     f"{r['seconds_b1']:.2f} | {r['speedup_b1']:.2f}x | {r['seconds_b64']:.2f} | {r['speedup_b64']:.2f}x |")
    return "\n".join(lines)


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
    parallel = parallel_vs_ar(model, args.size) if "caption_nar" in model.decoders else []
    if parallel:
        text += "\n\n" + parallel_table(parallel)
        print("\n" + parallel_table(parallel))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "captioning.json").write_text(json.dumps(dict(model=args.model, size=args.size, rows=rows,
                                                          parallel=parallel), indent=2))
    (out / "captioning.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
