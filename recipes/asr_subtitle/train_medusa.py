"""Train Medusa-1 draft heads (Cai et al., 2024, §2.2.1) for a saved model's AR text head; the decoder
and encoders stay frozen (bit-identical), only the heads learn. Head i predicts token t+i+2 from the
hidden state at t (the decoder itself predicts t+1), on the training text (teacher forcing). A hybrid
CTC/attention head (``asr_hybrid_*``, ``asr_maskctc_*``) trains heads for its attention decoder.

    python -m recipes.asr_subtitle.train_medusa --model runs/asr-tiny/model [--head subtitle] [--heads 4]
        [--steps 1000] [--lr 1e-3] [--max-duration 60]

Writes ``medusa-<head>.safetensors`` and ``medusa-<head>.json`` into the model folder; decode with
``DecodingOptions(draft=load_medusa(folder, model, head))`` for identical output, fewer decoder passes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

import torch

from decoders.drafters import MedusaHeads, train_drafter
from zoo.contract import select_rows

__all__ = ["EncodedBatches", "ar_decoder", "fit_medusa", "load_medusa", "main", "save_medusa"]


def ar_decoder(model, head: str):
    """The AR transformer decoder of ``model``'s head ``head``: the head itself, or a hybrid's attention branch
    (``model`` may also be the decoder itself)."""
    decoders = getattr(model, "decoders", None)
    if decoders is not None and head not in decoders:
        raise KeyError(f"unknown head '{head}'; this model has heads {list(decoders)}")
    decoder = model if decoders is None else decoders[head]
    decoder = getattr(decoder, "attention", decoder)
    if not hasattr(decoder, "blocks") or not hasattr(decoder, "teacher_forcing"):
        raise TypeError(f"head '{head}' is a {type(decoder).__name__}; Medusa heads need an AR transformer_decoder")
    return decoder


class EncodedBatches:
    """Re-iterable (memory, targets) pairs of one head: a model's frozen encoders run on each batch. Each
    pass after the first starts the next epoch of a loader whose batch sampler serves one epoch at a time
    (``zoo.data.bucketing.BucketingSampler``, resumable mid-epoch)."""

    def __init__(self, model, head: str, loader: Iterable[dict]):
        if head not in model.decoders:
            raise KeyError(f"unknown head '{head}'; this model has heads {list(model.decoders)}")
        self.model, self.head, self.loader, self.passes = model, head, loader, 0

    def __iter__(self):
        sampler = getattr(self.loader, "batch_sampler", None)
        if self.passes and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(sampler.epoch + 1)
        self.passes += 1
        src = self.model.spec_decoders[self.head]["source"]
        needed = set(src) if isinstance(src, list) else {src}
        for batch in self.loader:
            if self.head not in batch.get("targets", {}):
                continue
            targets = {k: v for k, v in batch["targets"][self.head].items() if isinstance(v, torch.Tensor)}
            present = targets.pop("present", None)
            with torch.no_grad():
                memory = self.model.memory(self.model.encode(batch, needed), self.head)
            if present is not None and not bool(present.all()):
                index = present.nonzero().squeeze(1)
                memory, targets = select_rows(memory, index), select_rows(targets, index)
            yield memory, targets


def fit_medusa(model, head: str, batches: Iterable, heads: int = 4, layers: int = 1, steps: int = 1000,
               lr: float = 1e-3, progress: bool = False) -> tuple[MedusaHeads, list[float]]:
    """Medusa heads for ``model.decoders[head]`` trained on ``batches`` (EncodedBatches or pairs)."""
    decoder = ar_decoder(model, head)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    medusa = MedusaHeads(decoder, heads, layers)
    return medusa, train_drafter(medusa, decoder, batches, steps, lr, progress)


def save_medusa(medusa: MedusaHeads, folder: str | Path, head: str) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    save_file({k: v.contiguous() for k, v in medusa.state_dict().items()}, str(folder / f"medusa-{head}.safetensors"))
    layers = len(medusa.blocks[0])
    (folder / f"medusa-{head}.json").write_text(json.dumps({"head": head, "heads": medusa.k, "layers": layers}))
    return folder / f"medusa-{head}.safetensors"


def load_medusa(folder: str | Path, model, head: str = "subtitle") -> MedusaHeads:
    """Heads written by :func:`save_medusa`, loaded strictly and safely (safetensors)."""
    from zoo.hub import load_state_dict, load_weights

    folder = Path(folder)
    cfg_path = folder / f"medusa-{head}.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found; train the heads first: "
                                f"python -m recipes.asr_subtitle.train_medusa --model {folder} --head {head}")
    cfg = json.loads(cfg_path.read_text())
    medusa = MedusaHeads(ar_decoder(model, head), cfg["heads"], cfg["layers"])
    path = folder / f"medusa-{head}.safetensors"
    load_weights(medusa, load_state_dict(path, "cpu"), strict=True, source=str(path))
    return medusa.eval()


def main(argv: Sequence[str] | None = None) -> int:
    from torch.utils.data import DataLoader

    from recipes.asr_subtitle.data import SpeechTextDataset, collate, load_split
    from recipes.asr_subtitle.evaluate import corpus_splits
    from zoo.data.bucketing import BucketingSampler
    from zoo.graph import ZooModel

    parser = argparse.ArgumentParser(prog="python -m recipes.asr_subtitle.train_medusa", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--head", default="subtitle")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    parser.add_argument("--corpus", default=None, help="corpus root as it is (default: the corpus of the training run's "
                        "config.yaml beside the model directory, else the default corpus)")
    args = parser.parse_args(argv)
    model = ZooModel.from_pretrained(args.model)
    tokenizer = model.tokenizer(args.head)
    if tokenizer is None:
        raise ValueError(f"{args.model} stores no tokenizer for head '{args.head}' (meta['tokenizers'])")
    rows = load_split(corpus_splits(args.model, args.corpus)["train"])
    dataset = SpeechTextDataset(rows, {args.head: tokenizer})
    sampler = BucketingSampler([r["duration"] for r in rows], args.max_duration, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    medusa, losses = fit_medusa(model, args.head, EncodedBatches(model, args.head, loader), args.heads,
                                args.layers, args.steps, args.lr, progress=True)
    path = save_medusa(medusa, args.model, args.head)
    print(f"medusa heads: loss {losses[0]:.3f} -> {sum(losses[-20:]) / len(losses[-20:]):.3f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
