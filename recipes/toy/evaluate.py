"""Evaluate a saved toy model on a held-out ToySequences split and record the accuracies in its card.

    zoo eval toy --model runs/toy            # or: python -m recipes.toy.evaluate --model runs/toy

Frame-tag accuracy is counted over valid (unpadded) frames, majority accuracy over sequences.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from recipes.toy.data import ToySequences, collate

HELD_OUT_SEED = 10_007  # training draws its data with other seeds (ToySequences defaults to 0)


@torch.no_grad()
def evaluate(model, dataset: ToySequences, batch_size: int = 64) -> dict[str, dict[str, float]]:
    """``{head: {"accuracy", "count"}}`` for the ``tags`` and ``majority`` heads on ``dataset``."""
    model.eval()
    hits = {"tags": 0, "majority": 0}
    counts = {"tags": 0, "majority": 0}
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        out = model.generate(batch, heads=["tags", "majority"])
        tags, majority = batch["targets"]["tags"], batch["targets"]["majority"]
        for pred, labels, n, present in zip(out["tags"], tags["labels"], batch["signal_lengths"], tags["present"]):
            if present:
                hits["tags"] += int((pred[: int(n)] == labels[: int(n)]).sum())
                counts["tags"] += int(n)
        keep = majority["present"]
        hits["majority"] += int((out["majority"][keep] == majority["labels"][keep]).sum())
        counts["majority"] += int(keep.sum())
    return {h: {"accuracy": hits[h] / max(counts[h], 1), "count": counts[h]} for h in hits}


def eval_results(scores: dict[str, dict[str, float]], seed: int, size: int) -> list[dict]:
    """The scores as model-card results (``huggingface_hub.EvalResult`` fields)."""
    tasks = {"tags": "frame-classification", "majority": "sequence-classification"}
    return [
        dict(task_type=tasks[head], task_name=f"{head} head", dataset_name="ToySequences (held out)",
             dataset_type="toy-sequences", dataset_split=f"seed-{seed}", dataset_config=f"size-{size}",
             metric_type="accuracy", metric_value=round(float(s["accuracy"]), 6))
        for head, s in scores.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo eval toy", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--size", type=int, default=512, help="held-out sequences")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the held-out split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-card", action="store_true", help="do not write the results into the card")
    args = parser.parse_args(argv)
    if args.size < 1 or args.batch_size < 1:
        raise ValueError(f"--size and --batch-size must be positive, got {args.size} and {args.batch_size}")

    from zoo.cards import add_eval_results
    from zoo.graph import ZooModel

    directory = Path(args.model)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass --model a directory written by save_pretrained")
    model = ZooModel.from_pretrained(str(directory))
    scores = evaluate(model, ToySequences(args.size, seed=args.seed), args.batch_size)
    print(f"{'head':<10} {'accuracy':>9} {'count':>8}   (ToySequences, seed {args.seed}, {args.size} sequences)")
    for head, s in scores.items():
        print(f"{head:<10} {s['accuracy']:>9.4f} {s['count']:>8}  {'frames' if head == 'tags' else 'sequences'}")
    if not args.no_card:
        add_eval_results(directory, eval_results(scores, args.seed, args.size), model=model)
        print(f"results written to {directory / 'README.md'} and {directory / 'eval_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
