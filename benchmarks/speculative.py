"""Speculative greedy decoding vs plain greedy on the same decoder: speed-up, mean tokens per decoder
pass (accepted drafts + 1), identity of the output.

Model (documented toy): a 4-layer, d=64 ``transformer_decoder`` trained 400 steps (AdamW 3e-3, batch 32)
to copy a random character string (20-40 characters, 26 letters) read from a frozen random embedding +
sinusoid memory. Drafters: Medusa-1 (4 heads, 200 steps on the frozen decoder), Kangaroo early exit
after layer 1 (adapter, 200 steps), CopySpec drafts from the source text under a *different* character
tokenizer (ids reversed: mapped through text). CPU, 1 thread.

    python benchmarks/speculative.py     # writes benchmarks/results/speculative.json and .png
    python benchmarks/speculative.py --steps 100 --drafter-steps 50 --out /tmp/spec   # a quick look
"""
from __future__ import annotations

import argparse
import json
import platform
import string
import time
from pathlib import Path

import torch

from decoders.drafters import CopyDrafter, EarlyExitDrafter, MedusaHeads, train_drafter
from decoders.search import DecodingOptions
from decoders.speculative import speculative_decode
from decoders.transformer_decoder import transformer_decoder
from zoo.contract import Features, Hypothesis
from zoo.tokenizers import CharTokenizer

RESULTS = Path(__file__).resolve().parent / "results"
LETTERS = list(string.ascii_lowercase)


class CopyTask:
    def __init__(self, dim: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.tok = CharTokenizer(LETTERS)                      # the decoder's ids
        self.source_tok = CharTokenizer(LETTERS[::-1])         # the "other head": same text, other ids
        self.table = torch.randn(self.tok.vocab_size, dim, generator=g)
        from encoders.generic import sinusoids

        self.pos = sinusoids(64, dim)

    def batch(self, g: torch.Generator, n: int, lo: int = 20, hi: int = 40):
        lengths = torch.randint(lo, hi + 1, (n,), generator=g)
        tokens = torch.randint(4, self.tok.vocab_size, (n, hi), generator=g)
        tokens = tokens.masked_fill(torch.arange(hi)[None] >= lengths[:, None], 0)
        mem = Features(self.table[tokens] + self.pos[:hi], lengths)
        return mem, {"tokens": tokens, "lengths": lengths}


def timed(fn, repeats: int):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="decoder training steps on the copy task")
    parser.add_argument("--drafter-steps", type=int, default=200, help="Medusa / early-exit training steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (best is kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for speculative.json and .png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = CopyTask()
    dec = transformer_decoder(vocab_size=task.tok.vocab_size, dim=64, heads=4, layers=4, max_len=64,
                              bos_id=2, eos_id=3, pad_id=0)
    opt = torch.optim.AdamW(dec.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        mem, tg = task.batch(g, 32)
        loss = dec(mem, tg).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"decoder trained: loss {float(loss.detach()):.3f}", flush=True)
    dec.eval()
    train = [task.batch(g, 32) for _ in range(8)]
    medusa, early = MedusaHeads(dec, 4), EarlyExitDrafter(dec, exit_layer=1, k=4)
    m_loss = train_drafter(medusa, dec, train, args.drafter_steps, 3e-3)
    e_loss = train_drafter(early, dec, train, args.drafter_steps, 3e-3)
    print(f"medusa loss {m_loss[0]:.2f} -> {m_loss[-1]:.2f}; early-exit KL {e_loss[0]:.2f} -> {e_loss[-1]:.2f}")
    test_mem, test_tg = task.batch(torch.Generator().manual_seed(99), 16)
    refs = [Hypothesis(task.source_tok.encode(task.tok.decode(test_tg["tokens"][i, : int(test_tg["lengths"][i])].tolist())))
            for i in range(16)]
    opts = DecodingOptions(max_len=48)
    rows = []
    for batch in (1, 8):
        chunks = [torch.arange(i, i + batch) for i in range(0, 16, batch)]
        plain, t_plain = timed(lambda: [h for c in chunks for h in dec.decode(test_mem.select(c), opts)], args.repeats)
        acc = sum(h.tokens == test_tg["tokens"][i, : int(test_tg["lengths"][i])].tolist() for i, h in enumerate(plain)) / 16
        rows.append(dict(batch=batch, drafter="greedy", seconds=t_plain, speedup=1.0, tokens_per_pass=1.0,
                         identical=True, exact_copy=acc))
        drafters = {"medusa": lambda c: medusa, "early_exit": lambda c: early,
                    "copy": lambda c: CopyDrafter.from_hypotheses([refs[i] for i in c.tolist()], task.source_tok, task.tok, k=8)}
        for name, make in drafters.items():
            def run():
                hyps, accepted = [], []
                for c in chunks:
                    h, stats = speculative_decode(dec, test_mem.select(c), DecodingOptions(max_len=48, draft=make(c)))
                    hyps += h
                    accepted += stats.accepted
                return hyps, sum(accepted) / len(accepted)
            (hyps, mean_acc), t = timed(run, args.repeats)
            same = [h.tokens for h in hyps] == [h.tokens for h in plain]
            rows.append(dict(batch=batch, drafter=name, seconds=t, speedup=t_plain / t, tokens_per_pass=mean_acc,
                             identical=same, exact_copy=acc))
    for r in rows:
        print(f"batch {r['batch']}  {r['drafter']:<11} {r['seconds'] * 1000:8.1f} ms  x{r['speedup']:.2f}  "
              f"{r['tokens_per_pass']:.2f} tokens/pass  identical={r['identical']}")
    result = dict(model=f"4-layer d=64 transformer_decoder, copy task (20-40 chars), {args.steps} steps; 16 test rows",
                  machine=platform.processor() or platform.machine(), threads=args.threads, rows=rows,
                  decoder_loss=float(loss.detach()), medusa_loss=[m_loss[0], m_loss[-1]], early_exit_kl=[e_loss[0], e_loss[-1]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speculative.json").write_text(json.dumps(result, indent=2))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["medusa", "early_exit", "copy"]
    for j, batch in enumerate((1, 8)):
        vals = [next(r["speedup"] for r in rows if r["batch"] == batch and r["drafter"] == n) for n in names]
        ax.bar([i + 0.4 * j for i in range(3)], vals, 0.4, label=f"batch {batch}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + 0.2 for i in range(3)], names)
    ax.set_ylabel("speed-up vs plain greedy")
    ax.set_title("Speculative greedy (identical output), toy copy task, CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "speculative.png", dpi=120)
    return result


if __name__ == "__main__":
    main()
