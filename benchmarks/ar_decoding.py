"""Autoregressive decoding speed: the zoo's Whisper decoder (static KV cache, cross-attention K/V once
per utterance, beams folded into the query axis, no logits-processor chain) against transformers'
``WhisperForConditionalGeneration.generate`` on the *same* Whisper-tiny-shaped random weights (seeded;
d=384, 6 heads, 4+4 layers, vocab 51865). Both decode the same precomputed encoder output (the
encoder is not timed) for a fixed number of new tokens (EOS suppressed on both sides, so both do
the same work), greedy and beam 4, at batch 1 and 8; tokens are compared for identity. On CPU, greedy
is also timed with ``DecodingOptions(vocab_screen=True)`` (exact argmax through an int8 screen of the
vocabulary, ``decoders.vocab_screen``: same tokens; scores normalised by int8 logits).

    python benchmarks/ar_decoding.py [--new-tokens 64] [--threads 1] [--repeats 3]
    python benchmarks/ar_decoding.py --device cuda [--precision bf16] --out DIR   # the GPU run

Prints a table; writes benchmarks/results/ar_decoding.json and ar_decoding.png.
Claim checked: zoo tokens/s >= 2x transformers' on CPU in all four settings (greedy: default or
screened), identical tokens.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def whisper_pair(vocab: int, seed: int = 0, tmp: str | None = None):
    """A random transformers Whisper (tiny dims) and the zoo model converted from its saved weights."""
    import tempfile

    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from recipes.asr_subtitle.convert_whisper import from_transformers_whisper

    eos, start = vocab - 2, vocab - 1
    cfg = WhisperConfig(vocab_size=vocab, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos,
                        decoder_start_token_id=start, begin_suppress_tokens=None, suppress_tokens=None)
    torch.manual_seed(seed)
    hf = WhisperForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # well-spread weights: no near-ties, non-degenerate token streams
        for name, p in hf.named_parameters():
            if "encoder.embed_positions" in name:
                continue
            if p.dim() == 1:
                p.copy_((1.0 if "layer_norm.weight" in name else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        hf.save_pretrained(d)
        zoo = from_transformers_whisper(d)
    return hf, zoo


def hf_decode(hf, hidden: torch.Tensor, beams: int, new_tokens: int) -> list[list[int]]:
    from transformers import GenerationConfig
    from transformers.modeling_outputs import BaseModelOutput

    c = hf.config
    gc = GenerationConfig(decoder_start_token_id=c.decoder_start_token_id, eos_token_id=c.eos_token_id,
                          pad_token_id=c.pad_token_id, max_new_tokens=new_tokens, num_beams=beams,
                          do_sample=False, length_penalty=1.0, early_stopping=True,
                          suppress_tokens=[c.eos_token_id])
    out = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), generation_config=gc)
    return out.tolist()


def zoo_decode(zoo, hidden: torch.Tensor, beams: int, new_tokens: int, compile: bool = False,
               screen: bool = False) -> list[list[int]]:
    from decoders.search import DecodingOptions
    from zoo.contract import Features

    dec = zoo.decoders["text"]
    opts = DecodingOptions(beam_size=beams, max_len=new_tokens, suppress_tokens=(dec.dims.eos_id,), compile=compile,
                           vocab_screen=screen)
    return [h.tokens for h in dec.decode(Features(hidden), opts)]


def interleaved(fns: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Run every function once (warm-up), then ``repeats`` rounds of all of them in turn, so that the VM's
    drifts in speed hit each alike. Returns each one's last output, best time, and its median ratio to the
    first function's time in the same round (a paired speed-up). Each function returns Python values (token
    ids), so a CUDA run has finished when its call returns."""
    outs = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    base = times[next(iter(fns))]
    paired = {name: statistics.median(b / t for b, t in zip(base, ts)) for name, ts in times.items()}
    return outs, {name: min(ts) for name, ts in times.items()}, paired


def precision_context(device: str, precision: str):
    """bf16 autocast on CUDA (both models alike), else nothing (fp32)."""
    import contextlib

    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--vocab", type=int, default=51865)
    ap.add_argument("--frames", type=int, default=1500, help="encoder frames (Whisper: 1500 = 30 s)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both models on it)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: autocast around both decoders (CUDA); tokens may then differ by rounding")
    ap.add_argument("--compile", action="store_true", help="zoo side: fixed shapes + torch.compile of the one-token "
                    "step (CUDA graphs on GPU); its compilation happens in the untimed warm-up")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf, zoo = whisper_pair(args.vocab)
    hf, zoo = hf.to(args.device), zoo.to(args.device)
    rows = []
    with torch.inference_mode(), precision_context(args.device, args.precision):
        for batch in args.batches:
            hidden = torch.randn(batch, args.frames, hf.config.d_model,
                                 generator=torch.Generator().manual_seed(batch)).to(args.device)
            for beams in args.beams:
                fns = [lambda h=hidden, k=beams: hf_decode(hf, h, k, args.new_tokens),
                       lambda h=hidden, k=beams: zoo_decode(zoo, h, k, args.new_tokens, args.compile)]
                screen = beams == 1 and args.device == "cpu" and not args.compile
                if screen:  # greedy's exact argmax through the int8 vocabulary screen (decoders.vocab_screen)
                    fns.append(lambda h=hidden: zoo_decode(zoo, h, 1, args.new_tokens, screen=True))
                outs, best, _ = interleaved(dict(enumerate(fns)), args.repeats)
                times, tokens = list(best.values()), list(outs.values())
                n = batch * args.new_tokens
                r = dict(batch=batch, beams=beams, new_tokens=args.new_tokens, hf_tok_s=n / times[0],
                         zoo_tok_s=n / times[1], speedup=times[0] / times[1], identical=tokens[0] == tokens[1],
                         hf_s=times[0], zoo_s=times[1])
                if screen:
                    r.update(screen_tok_s=n / times[2], screen_speedup=times[0] / times[2],
                             screen_identical=tokens[0] == tokens[2], screen_s=times[2])
                rows.append(r)
                extra = (f"  screened {r['screen_tok_s']:8.1f} tok/s x{r['screen_speedup']:.2f} "
                         f"identical={r['screen_identical']}") if screen else ""
                print(f"batch {batch:>2} beams {beams}: transformers {r['hf_tok_s']:8.1f} tok/s  zoo "
                      f"{r['zoo_tok_s']:8.1f} tok/s  x{r['speedup']:.2f}  identical={r['identical']}{extra}", flush=True)
    report = dict(
        benchmark="ar_decoding", claim="zoo >= 2x transformers tokens/s on CPU, identical tokens",
        passed=all(r["identical"] and r.get("screen_identical", True)
                   and max(r["speedup"], r.get("screen_speedup", 0.0)) >= 2.0 for r in rows),
        device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        precision=args.precision, compiled=args.compile, threads=args.threads, cpu=platform.processor() or platform.machine(),
        torch=torch.__version__, vocab=args.vocab, frames=args.frames, rows=rows,
    )
    print(f"{'batch':>5} {'beams':>5} {'transformers tok/s':>19} {'zoo tok/s':>10} {'speed-up':>9} {'identical':>9}"
          f" {'screened tok/s':>15} {'speed-up':>9} {'identical':>9}")
    for r in rows:
        extra = (f" {r['screen_tok_s']:>15.1f} {r['screen_speedup']:>8.2f}x {str(r['screen_identical']):>9}"
                 if "screen_s" in r else "")
        print(f"{r['batch']:>5} {r['beams']:>5} {r['hf_tok_s']:>19.1f} {r['zoo_tok_s']:>10.1f} "
              f"{r['speedup']:>8.2f}x {str(r['identical']):>9}{extra}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ar_decoding.json").write_text(json.dumps(report, indent=2))
    plot(rows, args.out / "ar_decoding.png", f"{report['device']}, {args.precision}")
    return report


def plot(rows: list[dict], path: Path, where: str = "CPU") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"B={r['batch']}\n{'greedy' if r['beams'] == 1 else 'beam ' + str(r['beams'])}" for r in rows]
    x = torch.arange(len(rows)).float()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.27, [r["hf_tok_s"] for r in rows], 0.27, label="transformers generate")
    ax.bar(x, [r["zoo_tok_s"] for r in rows], 0.27, label="encdec-zoo")
    ax.bar(x + 0.27, [r.get("screen_tok_s", 0.0) for r in rows], 0.27, label="encdec-zoo, vocab_screen (greedy)")
    for i, r in enumerate(rows):
        ax.text(float(x[i]), r["zoo_tok_s"], f"x{r['speedup']:.1f}", ha="center", va="bottom", fontsize=8)
        if "screen_tok_s" in r:
            ax.text(float(x[i]) + 0.27, r["screen_tok_s"], f"x{r['screen_speedup']:.1f}", ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(x.tolist(), labels)
    ax.set_ylabel(f"generated tokens / s ({where})")
    ax.set_title("Whisper-tiny-shaped decoder, random weights")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
