"""Parallel (Mask-Predict) vs autoregressive decoding: speed and accuracy on a toy task trained briefly.

Task: reverse a random token string (8-24 tokens, 20 symbols) read through a ``token_embedding``
encoder. Two graph models with the same encoder size: ``mask_predict_decoder`` and
``transformer_decoder`` (each 2 layers, d=64), each trained ``--steps`` steps (AdamW 2e-3, batch 32;
2000 steps take ~40 s on 1 CPU thread, enough for both to converge). Test: 128 held-out rows decoded
as one batch, and 16 of them one at a time; AR greedy vs Mask-Predict with T = 1, 2, 4 and 10
iterations (``--length-beam`` length candidates). CPU, 1 thread.

    python benchmarks/parallel.py [--steps 2000] [--length-beam 1]    # writes benchmarks/results/parallel.json and .png
    python benchmarks/parallel.py --device cuda --out DIR                # the same on the GPU (fp32)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from decoders.parallel import MaskPredictOptions
from decoders.search import DecodingOptions
from zoo.device import move_to_device
from zoo.graph import ModelSpec, Node

RESULTS = Path(__file__).resolve().parent / "results"
VOCAB, LO, HI = 24, 8, 24


def reverse_batch(g: torch.Generator, batch: int):
    lengths = torch.randint(LO, HI + 1, (batch,), generator=g)
    src = torch.randint(4, VOCAB, (batch, HI), generator=g)
    pad = torch.arange(HI)[None] >= lengths[:, None]
    src = src.masked_fill(pad, 0)
    tgt = src.gather(1, (lengths[:, None] - 1 - torch.arange(HI)[None]).clamp(min=0)).masked_fill(pad, 0)
    return {"src": src, "src_lengths": lengths, "targets": {"text": {"tokens": tgt, "lengths": lengths}}}


def build(kind: str):
    head = dict(vocab_size=VOCAB, dim=64, heads=4, layers=2, max_len=32, dropout=0.0)
    node = Node("mask_predict_decoder", source="enc", length_weight=1.0, **head) if kind == "parallel" else \
        Node("transformer_decoder", source="enc", bos_id=2, eos_id=3, **head)
    return ModelSpec({"enc": Node("token_embedding", input="src", vocab_size=VOCAB, dim=64)}, {"text": node}).build()


def accuracy(hyps, batch):
    tgt, lengths = batch["targets"]["text"]["tokens"], batch["targets"]["text"]["lengths"]
    refs = [tgt[i, : int(n)].tolist() for i, n in enumerate(lengths)]
    tok = sum(sum(a == b for a, b in zip(h.tokens, r)) for h, r in zip(hyps, refs)) / int(lengths.sum())
    return tok, sum(h.tokens == r for h, r in zip(hyps, refs)) / len(refs)


def main(argv=None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="training steps of each decoder")
    ap.add_argument("--length-beam", type=int, default=1, help="length candidates (Mask-Predict §3.3 uses 5)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (fp32; decoders return host lists, so timings "
                    "include the wait for the device)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    test = reverse_batch(torch.Generator().manual_seed(123), 128)
    on_device = move_to_device(test, args.device)
    results = {}
    for kind in ("autoregressive", "parallel"):
        torch.manual_seed(0)
        model = build(kind).to(args.device)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        g, t0 = torch.Generator().manual_seed(0), time.perf_counter()
        for _ in range(args.steps):
            loss = model(move_to_device(reverse_batch(g, 32), args.device)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - t0
        print(f"trained {kind} in {train_s:.0f} s (loss {float(loss.detach()):.3f})", flush=True)
        model.eval()
        settings = {"greedy": DecodingOptions(max_len=HI + 1)} if kind == "autoregressive" else \
            {f"T={t}": MaskPredictOptions(iterations=t, length_beam=args.length_beam) for t in (1, 2, 4, 10)}
        for name, opts in settings.items():
            best, hyps = float("inf"), None
            for _ in range(3):
                t = time.perf_counter()
                hyps = model.generate(on_device, "text", opts)["text"]
                best = min(best, time.perf_counter() - t)
            tok, exact = accuracy(hyps, test)
            single = {k: (v[:16] if k != "targets" else v) for k, v in on_device.items()}
            t = time.perf_counter()
            for i in range(16):
                model.generate({"src": single["src"][i:i + 1], "src_lengths": single["src_lengths"][i:i + 1]}, "text", opts)
            batch1 = (time.perf_counter() - t) / 16
            results[f"{kind} {name}"] = dict(seconds=best, seconds_batch1=batch1, token_accuracy=tok, exact_match=exact,
                                             train_seconds=train_s, final_loss=float(loss.detach()))
    ar = results["autoregressive greedy"]["seconds"]
    ar1 = results["autoregressive greedy"]["seconds_batch1"]
    for name, r in results.items():
        r["speedup_vs_ar"], r["speedup_vs_ar_batch1"] = ar / r["seconds"], ar1 / r["seconds_batch1"]
        print(f"{name:<24} batch 128: {r['seconds'] * 1000:7.1f} ms  x{r['speedup_vs_ar']:.2f}; batch 1: "
              f"{r['seconds_batch1'] * 1000:6.1f} ms/row x{r['speedup_vs_ar_batch1']:.2f}  token acc {r['token_accuracy']:.3f}  "
              f"exact {r['exact_match']:.3f}  (trained {r['train_seconds']:.0f} s)")
    out = dict(task=f"reverse {LO}-{HI} tokens, vocab {VOCAB}; 2-layer d=64 heads, {args.steps} steps, length beam {args.length_beam}; 128 test rows, one batch",
               threads=1, device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               results=results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parallel.json").write_text(json.dumps(out, indent=2))
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    names = list(results)
    x = range(len(names))
    a.bar([i - 0.2 for i in x], [results[n]["speedup_vs_ar"] for n in names], 0.4, label="batch 128")
    a.bar([i + 0.2 for i in x], [results[n]["speedup_vs_ar_batch1"] for n in names], 0.4, label="batch 1")
    a.set_xticks(list(x), names)
    a.legend(fontsize=7)
    a.set_ylabel("speed-up vs AR greedy")
    b.bar(names, [results[n]["token_accuracy"] for n in names])
    b.set_ylabel("token accuracy")
    for ax in (a, b):
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.suptitle(f"Mask-Predict vs autoregressive, toy reversal, {out['device']}")
    fig.tight_layout()
    fig.savefig(args.out / "parallel.png", dpi=120)
    return out


if __name__ == "__main__":
    main()
