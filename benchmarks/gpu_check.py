"""One device check of every recipe's tiny preset: a few training steps and decoding, with throughput.

    python benchmarks/gpu_check.py            # on CUDA: bf16 autocast, batch 64 x 10 s for the RTFx
    python benchmarks/gpu_check.py --quick    # small batches (the CPU smoke test, < 2 minutes)
    python benchmarks/gpu_check.py --quick --precision bf16   # the same under CPU bf16 autocast

Without a GPU it falls back to CPU (fp32 unless ``--precision bf16``) and says so. Per preset it reports
training steps/s and samples/s (AdamW, forward + backward + step) and the decoding wall time; for the
encoder-only CTC preset (``asr_ctc_tiny``) it reports RTFx = audio seconds / wall seconds of encoding +
greedy CTC decoding of both heads at batch 64 of 10 s utterances. Results go to
benchmarks/results/gpu_check.json; a section that fails is recorded with its error and the script exits 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.device import autocasts_bf16, move_to_device, pick_device  # noqa: E402
from zoo.registry import create_model, list_models  # noqa: E402


class Bench:
    """Device, precision and the timing helpers shared by every section."""

    def __init__(self, device: str, quick: bool, precision: str = "auto"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.quick = quick
        self.bf16 = autocasts_bf16(precision, self.device)
        self.precision = "bf16-autocast" if self.bf16 else "fp32"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
        """Seconds per call after one warm-up call, and the last result."""
        out = fn()
        self.sync()
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        self.sync()
        return (time.perf_counter() - start) / max(repeats, 1), out

    def train(self, model, make_batch: Callable[[], dict], steps: int, batch_size: int) -> dict[str, float]:
        """``steps`` AdamW steps on fresh batches; loss before/after and throughput."""
        model.to(self.device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        batches = [move_to_device(make_batch(), self.device) for _ in range(steps + 1)]
        losses = []

        def step(batch):
            with self.autocast():
                loss = model(batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))

        step(batches[0])  # warm-up (allocations, cuDNN autotuning)
        self.sync()
        start = time.perf_counter()
        for batch in batches[1:]:
            step(batch)
        self.sync()
        seconds = time.perf_counter() - start
        if not all(map(lambda v: v == v and abs(v) != float("inf"), losses)):
            raise FloatingPointError(f"non-finite training loss: {losses}")
        return dict(steps=steps, batch_size=batch_size, steps_per_s=steps / seconds,
                    samples_per_s=steps * batch_size / seconds, loss_first=losses[0], loss_last=losses[-1])

    def decode(self, model, batch: dict, **generate) -> tuple[float, dict]:
        model.eval()
        batch = move_to_device(batch, self.device)

        def run():
            with torch.no_grad(), self.autocast():
                return model.generate(batch, **generate)

        return self.timed(run, repeats=1 if self.quick else 3)


# --- per-recipe sections ---------------------------------------------------------------------------------
def toy_section(b: Bench) -> dict:
    from recipes.toy.data import ToySequences, collate

    bs = 8 if b.quick else 64
    data = ToySequences(bs * 4, seed=0)
    model = create_model("toy_cascade")
    it = iter(range(10**9))
    report = b.train(model, lambda: collate([data[(next(it)) % len(data)] for _ in range(bs)]), 3 if b.quick else 20, bs)
    seconds, out = b.decode(model, collate([data[i] for i in range(bs)]))
    report.update(decode_s=seconds, decoded_heads=sorted(out))
    return report


def _asr_batch(bs: int, seconds: float, vocab: dict[str, int], heads: list[str], seed: int) -> dict:
    """Random audio and random token targets that CTC can align (25 frames/s after 4x subsampling)."""
    g = torch.Generator().manual_seed(seed)
    samples = int(seconds * 16000)
    lengths = torch.randint(samples // 2, samples + 1, (bs,), generator=g)
    lengths[0] = samples
    audio = torch.randn(bs, samples, generator=g) * 0.1 * (torch.arange(samples)[None] < lengths[:, None])
    targets = {}
    for head in heads:
        n = torch.clamp(lengths // 16000 * 6, min=2)  # 6 tokens per second << 25 frames per second
        tokens = torch.randint(4, vocab[head], (bs, int(n.max())), generator=g)
        tokens = tokens * (torch.arange(tokens.shape[1])[None] < n[:, None])
        targets[head] = dict(tokens=tokens, lengths=n)
    return dict(ids=[f"utt{i}" for i in range(bs)], audio=audio, audio_lengths=lengths, targets=targets)


def asr_section(b: Bench, name: str) -> dict:
    from decoders.search import DecodingOptions

    model = create_model(name)
    vocab = {h: model.decoders[h].vocab_size if hasattr(model.decoders[h], "vocab_size")
             else model.spec_decoders[h]["vocab_size"] for h in model.decoders}
    heads = list(model.decoders)
    bs, secs = (4, 2.0) if b.quick else (32, 4.0)
    seed = iter(range(10**9))
    report = b.train(model, lambda: _asr_batch(bs, secs, vocab, heads, next(seed)), 3 if b.quick else 10, bs)
    batch = _asr_batch(bs, secs, vocab, heads, 12345)
    options = {h: DecodingOptions(max_len=24) for h, c in model.spec_decoders.items() if c["type"] != "ctc"}
    seconds, out = b.decode(model, batch, options={h: options.get(h) for h in heads})
    report.update(decode_s=seconds, decode_kinds={h: model.spec_decoders[h]["type"] for h in heads},
                  decoded_tokens={h: sum(len(hyp.tokens) for hyp in out[h]) for h in heads})
    return report


def rtfx_section(b: Bench) -> dict:
    """Encoder-only CTC preset: encoding + greedy CTC of both heads, batch 64 x 10 s (quick: 4 x 10 s)."""
    model = create_model("asr_ctc_tiny").to(b.device).eval()
    bs, secs = (4, 10.0) if b.quick else (64, 10.0)
    batch = move_to_device(dict(audio=torch.randn(bs, int(secs * 16000)) * 0.1,
                                audio_lengths=torch.full((bs,), int(secs * 16000))), b.device)

    def run():
        with torch.no_grad(), b.autocast():
            return model.generate(batch)

    repeats = 2 if b.quick else 20  # 5 batches of ~50-100 ms gave 5.9k-12.8k on one H200: too few
    seconds, out = b.timed(run, repeats)
    peak = torch.cuda.max_memory_allocated(b.device) / 2**30 if b.cuda else None
    return dict(batch_size=bs, utterance_s=secs, repeats=repeats, wall_s_per_batch=seconds,
                rtfx=bs * secs / seconds, utterances_per_s=bs / seconds, heads=sorted(out), peak_gib=peak)


def separation_section(b: Bench) -> dict:
    from decoders.separation import SeparationOptions

    model = create_model("conv_tasnet_tiny")
    n_src, sr = int(model.meta.get("n_src", 2)), int(model.meta.get("sample_rate", 8000))
    bs, samples = (4, sr // 2) if b.quick else (16, 4 * sr)
    g = torch.Generator().manual_seed(0)

    def make():
        sources = torch.randn(bs, n_src, samples, generator=g) * 0.1
        return dict(audio=sources.sum(1), audio_lengths=torch.full((bs,), samples),
                    targets={"separation": {"sources": sources}})

    report = b.train(model, make, 3 if b.quick else 10, bs)
    batch = make()
    seconds, out = b.decode(model, {"audio": batch["audio"]}, heads="separation",
                            options=SeparationOptions(num_samples=samples))
    est = out["separation"]
    if tuple(est.shape) != (bs, n_src, samples) or not torch.isfinite(est).all():
        raise ValueError(f"separation returned shape {tuple(est.shape)} (finite: {bool(torch.isfinite(est).all())})")
    report.update(decode_s=seconds, audio_rtfx=bs * samples / sr / seconds)
    return report


def brain_section(b: Bench, name: str) -> dict:
    from recipes.brain_decoding.presets import DEFAULT_SUBJECTS

    model = create_model(name)
    subjects = {int(k): v for k, v in DEFAULT_SUBJECTS.items()}
    embed_dim = model.spec_decoders["retrieval"]["embed_dim"]
    bs = 16 if b.quick else 128
    g = torch.Generator().manual_seed(0)

    def make():
        sid = torch.tensor(list(subjects))[torch.randint(len(subjects), (bs,), generator=g)]
        lengths = torch.tensor([subjects[int(s)] for s in sid])
        fmri = torch.randn(bs, int(lengths.max()), generator=g) * (torch.arange(int(lengths.max()))[None] < lengths[:, None])
        targets = dict(retrieval=dict(embedding=torch.randn(bs, embed_dim, generator=g)))
        if "cycle" in model.decoders:
            targets["cycle"] = dict(subject_ids=sid)
        return dict(ids=[str(i) for i in range(bs)], fmri=fmri, fmri_lengths=lengths, subject_ids=sid, targets=targets)

    report = b.train(model, make, 3 if b.quick else 20, bs)
    seconds, out = b.decode(model, make(), heads="retrieval")
    report.update(decode_s=seconds)
    return report


def captioning_section(b: Bench, name: str) -> dict:
    from decoders.search import DecodingOptions
    from recipes.captioning.data import CaptionScenes, collate, tokenizer_texts, train_caption_tokenizer

    bs = 4 if b.quick else 32
    data = CaptionScenes(bs * 2, "train", 0)
    tokenizer = train_caption_tokenizer(tokenizer_texts(data.items))
    data.tokenizer = tokenizer
    model = create_model(name, vocab_size=tokenizer.vocab_size,
                         tokenizers={"caption": tokenizer.to_dict(), "xdec": tokenizer.to_dict()})
    turn = iter(range(10**9))
    report = b.train(model, lambda: collate([data[(next(turn)) % len(data)] for _ in range(bs)]),
                     3 if b.quick else 10, bs)
    batch = collate([data[i] for i in range(bs)])
    batch.pop("targets")
    text_heads = [h for h, c in model.spec_decoders.items() if c["type"] in ("transformer_decoder", "xdecoder")]
    seconds, out = b.decode(model, batch, heads=text_heads, options=DecodingOptions(max_len=16))
    report.update(decode_s=seconds, heads=text_heads, example=[getattr(h, "text", "") for h in out[text_heads[0]][:2]]
                  if text_heads else [])
    return report


def sections(b: Bench) -> dict[str, Callable[[], dict]]:
    registered = set(list_models())
    out: dict[str, Callable[[], dict]] = {"toy_cascade": lambda: toy_section(b)}
    for name in ("asr_cascaded_tiny", "asr_ctc_tiny"):
        if name in registered:
            out[name] = lambda name=name: asr_section(b, name)
    if "asr_ctc_tiny" in registered:
        out["rtfx_asr_ctc_tiny"] = lambda: rtfx_section(b)
    if "conv_tasnet_tiny" in registered:
        out["conv_tasnet_tiny"] = lambda: separation_section(b)
    for name in ("brain_mindeye2_tiny", "brain_mindbridge_tiny", "brain_stm_tiny"):
        if name in registered:
            out[name] = lambda name=name: brain_section(b, name)
    for name in ("caption_av_tiny", "xdecoder_scenes_tiny"):
        if name in registered:
            out[name] = lambda name=name: captioning_section(b, name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches: a CPU smoke test in < 2 minutes")
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cuda, cpu")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also autocasts on CPU")
    parser.add_argument("--only", nargs="*", help="run only these sections (names as printed)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    try:
        device = str(pick_device(args.device))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    b = Bench(device, args.quick, args.precision)
    note = None
    if not b.cuda:
        note = f"no CUDA device: running on CPU in {b.precision} (numbers are a smoke test, not GPU throughput)"
        torch.set_num_threads(min(2, torch.get_num_threads()))
        print(f"note: {note}", flush=True)
    torch.manual_seed(0)
    results: dict[str, Any] = dict(
        device=torch.cuda.get_device_name(b.device) if b.cuda else platform.processor() or "cpu",
        precision=b.precision, quick=args.quick, torch=torch.__version__, note=note, sections={})
    failed = []
    start = time.perf_counter()
    for name, run in sections(b).items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            report = run()
            report["wall_s"] = time.perf_counter() - t0
            print(f"{name:<24} " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in report.items()), flush=True)
        except Exception as error:  # recorded, so one broken preset does not hide the others
            failed.append(name)
            report = dict(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=6))
            print(f"{name:<24} FAILED {report['error']}", flush=True)
        results["sections"][name] = report
        if b.cuda:
            torch.cuda.empty_cache()
    results["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    rtfx = results["sections"].get("rtfx_asr_ctc_tiny", {}).get("rtfx")
    print(f"total {results['total_s']:.1f} s on {results['device']} ({b.precision})"
          + (f"; asr_ctc_tiny RTFx {rtfx:.1f}" if rtfx else "") + f"; wrote {out}", flush=True)
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
