"""Train Mask-CTC's conditional masked LM (Higuchi et al., 2020, §3.1) on a saved model's frozen encoder;
the encoder, the CTC branch and the attention decoder stay bit-identical, only the masked LM learns.

Why a separate stage: a character-level masked LM learns far more slowly than CTC or an attention decoder.
Trained jointly for the recipe's 2000 tiny steps (``asr_maskctc_tiny``, loss weight 0.3) it is still at
unigram level (masked-token accuracy ~23% on the training text, BENCHMARKS.md), so Mask-CTC only makes
CTC worse. On a frozen encoder each step is cheap: the encoder runs once over the training set (cached
memory, eval mode), and the masked LM then trains for as many steps as it needs.

    python -m recipes.asr_subtitle.train_mask_ctc --model runs/asr-hybrid/model --out runs/asr-maskctc/model
        [--head verbatim] [--steps 6000] [--lr 1e-3] [--max-duration 60]

A hybrid model without the masked LM (``asr_hybrid_*``) gets one (``mlm_weight`` set in its config).
Writes a full model folder to ``--out`` (config.json + model.safetensors + README.md, with the stored eval
results, which still hold: CTC and attention are unchanged); decode with ``MaskCTCOptions``.
"""
from __future__ import annotations

import argparse
import functools
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recipes.asr_subtitle.train_medusa import EncodedBatches
from zoo.contract import Features
from zoo.train import lr_lambda

__all__ = ["cache_batches", "fit_masked_lm", "main", "encodable", "masked_accuracy", "with_masked_lm"]


def with_masked_lm(model, head: str, mlm_weight: float = 0.3):
    """``model`` if its ``head`` has Mask-CTC's masked LM, else a copy with a fresh one (same weights otherwise)."""
    from zoo.graph import ZooModel

    decoder = model.decoders[head]
    if not hasattr(decoder, "ctc") or not hasattr(decoder, "mlm"):
        raise TypeError(f"head '{head}' is a {type(decoder).__name__}; Mask-CTC needs a ctc_attention head "
                        "(preset asr_hybrid_* or asr_maskctc_*)")
    if decoder.mlm is not None:
        return model
    decoders = {name: dict(spec) for name, spec in model.spec_decoders.items()}
    decoders[head]["mlm_weight"] = mlm_weight
    grown = ZooModel(encoders=model.spec_encoders, decoders=decoders, loss_weights=model.loss_weights,
                     task=model.task, name=model.name, meta=model.meta, head_order=list(decoders))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(f"decoders.{head}.mlm." not in k for k in missing):
        raise RuntimeError(f"adding the masked LM changed more than decoders.{head}.mlm: missing {missing}, "
                           f"unexpected {unexpected}")
    return grown


def cache_batches(batches: Iterable[tuple[Features, dict]], progress: bool = True) -> list[tuple[Features, dict]]:
    """Run the (frozen) encoder over every batch once and keep the memory and targets on the CPU."""
    out = []
    for memory, targets in tqdm(batches, desc="encoding", unit="batch", disable=not progress):
        out.append((Features(memory.x.detach().cpu(), None if memory.lengths is None else memory.lengths.cpu()),
                    {k: v.cpu() for k, v in targets.items() if k in ("tokens", "lengths")}))
    if not out:
        raise ValueError("no training batches carry this head's labels")
    return out


def fit_masked_lm(mlm, batches: list[tuple[Features, dict]], steps: int, lr: float = 1e-3, warmup: int = 200,
                  seed: int = 0, progress: bool = True) -> list[float]:
    """AdamW on the masked-token loss (§3.3 of Mask-Predict: a uniform 1..N tokens masked per row), linear
    warm-up then cosine decay; the batches are visited in a seeded random order. Returns the losses."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(mlm.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(warmup, max(steps // 10, 1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
        lr_lambda, warmup_steps=warmup, total_steps=steps, kind="cosine", min_ratio=0.0))
    mlm.train()
    losses: list[float] = []
    bar = tqdm(total=steps, desc="masked LM", unit="step", disable=not progress)
    while len(losses) < steps:
        for i in torch.randperm(len(batches), generator=g).tolist():
            memory, targets = batches[i]
            loss = mlm(memory, targets).loss  # the token loss (+ the length loss, weight 0 in a hybrid head)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(mlm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update()
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
            if len(losses) == steps:
                break
    bar.close()
    mlm.eval()
    return losses


@torch.no_grad()
def masked_accuracy(mlm, batches: list[tuple[Features, dict]], ratio: float = 0.5, seed: int = 0) -> float:
    """Share of masked target tokens the masked LM predicts exactly, with ``ratio`` of them masked at random."""
    g = torch.Generator().manual_seed(seed)
    mlm.eval()
    right = total = 0
    for memory, targets in batches:
        tokens, lengths = targets["tokens"], targets["lengths"]
        valid = torch.arange(tokens.shape[1])[None] < lengths[:, None]
        masked = (torch.rand(tokens.shape, generator=g) < ratio) & valid
        mem, pad = mlm.memory(memory)
        logits = mlm.token_logits(tokens.masked_fill(masked, mlm.mask_id), lengths.clamp(min=1), mem, pad)
        right += int(((logits.argmax(-1) == tokens) & masked).sum())
        total += int(masked.sum())
    return right / max(total, 1)


def encodable(tokenizer, text: str) -> bool:
    """Whether ``text`` has only characters the tokenizer knows (held-out rows may have others)."""
    try:
        tokenizer.encode(text)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    from torch.utils.data import DataLoader

    from recipes.asr_subtitle.data import SpeechTextDataset, collate, load_split
    from recipes.asr_subtitle.evaluate import corpus_splits
    from zoo.cards import read_eval_results, write_card
    from zoo.data.bucketing import BucketingSampler
    from zoo.graph import ZooModel

    parser = argparse.ArgumentParser(prog="python -m recipes.asr_subtitle.train_mask_ctc",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained (hybrid head)")
    parser.add_argument("--out", required=True, help="where to write the model with the trained masked LM")
    parser.add_argument("--head", default="verbatim")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-duration", type=float, default=60.0, help="seconds of audio per batch")
    parser.add_argument("--corpus", default=None, help="corpus root (default: the training run's corpus)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise ValueError("--out must differ from --model: the source model is kept as it is")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = with_masked_lm(ZooModel.from_pretrained(args.model), args.head).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mlm = model.decoders[args.head].mlm
    for p in mlm.parameters():
        p.requires_grad_(True)
    tokenizer = model.tokenizer(args.head)
    if tokenizer is None:
        raise ValueError(f"{args.model} stores no tokenizer for head '{args.head}' (meta['tokenizers'])")
    splits = corpus_splits(args.model, args.corpus)
    batches = {}
    for split in ("train", "test_seen"):
        rows = [r for r in load_split(splits[split]) if encodable(tokenizer, r[f"text_{args.head}"])]
        loader = DataLoader(SpeechTextDataset(rows, {args.head: tokenizer}), collate_fn=collate,
                            batch_sampler=BucketingSampler([r["duration"] for r in rows], args.max_duration, seed=0))
        batches[split] = cache_batches(EncodedBatches(model, args.head, loader))
    before = masked_accuracy(mlm, batches["test_seen"])
    losses = fit_masked_lm(mlm, batches["train"], args.steps, args.lr)
    after = masked_accuracy(mlm, batches["test_seen"])
    model.save_pretrained(args.out)
    write_card(model, args.out, eval_results=read_eval_results(args.model))  # CTC and attention are unchanged
    run_config, out_config = Path(args.model).parent / "config.yaml", Path(args.out).parent / "config.yaml"
    if run_config.is_file() and not out_config.exists():  # so that evaluation finds the training corpus
        shutil.copyfile(run_config, out_config)
    print(f"masked LM: loss {sum(losses[:50]) / min(50, len(losses)):.3f} -> {sum(losses[-50:]) / min(50, len(losses)):.3f}; "
          f"masked-token accuracy on test_seen (half masked) {before:.3f} -> {after:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
