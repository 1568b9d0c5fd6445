"""Evaluate a saved captioner on the held-out split (unseen colour-shape pairs) and record the scores in its card.

    zoo eval captioning --model runs/caption-tiny/model [--group va|v|a] [--beams 4 --groups 2 --diversity 0.5]

CIDEr-D and BLEU-4 are corpus-level over the four references of each scene (x100); ``exact`` is the
fraction of top captions equal to one of the references. Note that the fixed grammar makes CIDEr-D
lenient: a caption with the right structure and sound but wrong objects already scores ~200.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from decoders.search import DecodingOptions
from recipes.captioning.data import CaptionScenes, collate
from recipes.captioning.metrics import bleu, cider_d, distinct_n

HELD_OUT_SEED = 1  # the test split is rejection-sampled apart from training anyway; another seed as well


@torch.no_grad()
def caption_dataset(model, dataset: CaptionScenes, options: DecodingOptions | None = None,
                    batch_size: int = 64) -> tuple[list[list[str]], list[list[str]]]:
    """(n-best captions, references) per example."""
    model.eval()
    options = options or DecodingOptions(max_len=22)
    head = caption_head(model)
    hyps, refs = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        out = model.generate(batch, heads=head, options=options)[head]
        for row, references in zip(out, batch["references"]):
            row = row if isinstance(row, list) else [row]
            hyps.append([h.text for h in row])
            refs.append(references)
    return hyps, refs


def caption_head(model) -> str:
    for head in ("caption", "xdec"):
        if head in model.decoders:
            return head
    raise ValueError(f"model has no caption head ('caption' or 'xdec'); its heads are {list(model.decoders)}")


@torch.no_grad()
def grounding_miou(model, dataset: CaptionScenes, head: str = "xdec") -> float:
    """mIoU of the masks an X-Decoder head predicts for every referring expression of ``dataset``."""
    from recipes.captioning.metrics import mean_iou

    model.eval()
    tok = model.tokenizer(head)
    preds, targets = [], []
    for item in dataset.items:
        for expression, index in item["referring"]:
            ids = torch.tensor([tok.encode(expression, strict=False)])
            feats = model.encode({"image": torch.from_numpy(item["image"]).permute(2, 0, 1)[None]})
            logits, _ = model.decoders[head].ground(model.memory(feats, head), ids, torch.tensor([ids.shape[1]]))
            up = torch.nn.functional.interpolate(logits[None], size=item["masks"].shape[-2:], mode="bilinear")
            preds.append(up[0, 0].sigmoid().numpy())
            targets.append(item["masks"][index])
    return mean_iou(preds, targets)


def scores(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """CIDEr-D and BLEU-4 (x100) of the top captions, corpus distinct-2 of the top captions, distinct-2 within
    each n-best list (averaged; 0 for 1-best), and the fraction of top captions equal to a reference."""
    top = [h[0] for h in hyps]
    return {"cider_d": 100 * cider_d(top, refs), "bleu4": 100 * bleu(top, refs), "distinct2": distinct_n(top, 2),
            "distinct2_nbest": sum(distinct_n(h, 2) for h in hyps) / max(len(hyps), 1) if any(len(h) > 1 for h in hyps) else 0.0,
            "exact": sum(t in r for t, r in zip(top, refs)) / max(len(top), 1)}


def make_eval_fn(dataset: CaptionScenes, batch_size: int = 64):
    def eval_fn(model) -> dict[str, float]:
        result = scores(*caption_dataset(model, dataset, batch_size=batch_size))
        if "xdec" in model.decoders:
            result["miou"] = grounding_miou(model, dataset)
        return result

    return eval_fn


def eval_results(result: dict[str, float], group: str, size: int, seed: int) -> list[dict]:
    names = {"cider_d": "CIDEr-D", "bleu4": "BLEU-4"}
    return [dict(task_type="image-to-text", task_name=f"audio-visual captioning ({group})",
                 dataset_name="rendered scenes, unseen colour-shape pairs", dataset_type="caption-scenes",
                 dataset_split=f"test-seed-{seed}", dataset_config=f"size-{size}", metric_type=k,
                 metric_name=names[k], metric_value=round(float(result[k]), 4)) for k in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo eval captioning", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--size", type=int, default=300, help="held-out scenes")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--group", default="va", choices=["va", "v", "a"], help="modalities the model sees")
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--groups", type=int, default=1, help="diverse beam search groups (must divide --beams)")
    parser.add_argument("--diversity", type=float, default=0.0)
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-card", action="store_true")
    args = parser.parse_args(argv)
    from zoo.cards import add_eval_results
    from zoo.graph import ZooModel

    model = ZooModel.from_pretrained(args.model)
    options = DecodingOptions(beam_size=args.beams, groups=args.groups, diversity=args.diversity, n_best=args.n_best,
                              max_len=22)
    dataset = CaptionScenes(args.size, "test", args.seed, group=args.group)
    hyps, refs = caption_dataset(model, dataset, options, args.batch_size)
    result = scores(hyps, refs)
    if "xdec" in model.decoders:
        result["miou"] = grounding_miou(model, dataset)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.items()))
    for h, r in list(zip(hyps, refs))[:3]:
        print(f"  {h[0]!r}  (ref: {r[0]!r})")
    if not args.no_card and Path(args.model).is_dir():
        add_eval_results(args.model, eval_results(result, args.group, args.size, args.seed), model=model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
