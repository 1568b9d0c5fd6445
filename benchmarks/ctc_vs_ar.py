"""CTC vs autoregressive decoding of one model: speed and WER on short utterances and on long-form audio.

The model is ``asr_hybrid_*`` (ESPnet's hybrid CTC/attention head; Watanabe et al. 2017): its CTC
branch and its attention decoder read the same encoder output, so the only difference measured is the
decoding. Short: the held-out-voice utterances of ``test_unseen``, batches of 1 and 16 sorted by
length; the encoder runs once per batch and is timed apart from each decoder. Long-form: a recording
of held-out utterances (``corpus.build_longform``), segmented at pauses by ``transcribe``'s first pass
(buffered CTC over ``--chunk`` s windows with ``--context`` s each side); both decoders then read the
same encoded segments (batches of 1 and 16), texts joined; WER against the joined references. (Decoding
fixed 16 s windows instead, the AR decoder — trained on single utterances — stops after the first
sentence: 75% WER in BENCHMARKS.md's earlier table.)

A model with Mask-CTC's masked LM (``asr_maskctc_*``) is also decoded by Mask-CTC (Higuchi et al. 2020;
``decoders.mask_ctc``), non-autoregressively, with each of ``--mask-ctc-iterations`` (K), timed and scored the
same way: the parallel decoder against the AR one.

    .venv/bin/python benchmarks/ctc_vs_ar.py --model runs/asr-hybrid/model [--minutes 3] [--threads 2]
    python benchmarks/ctc_vs_ar.py --model DIR --device cuda --out DIR     # fp32 on the GPU

Writes benchmarks/results/ctc_vs_ar.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def mask_ctc_kinds(head, iterations: list[int], thresholds: list[float], ctc_weights: list[float]) -> dict:
    """{"mask_ctc_k<K>_p<P_thres>_w<ctc_weight>": MaskCTCOptions} for a head with the masked LM, else {}."""
    from decoders.mask_ctc import MaskCTCOptions

    return {} if getattr(head, "mlm", None) is None else {
        f"mask_ctc_k{k}_p{p:g}_w{w:g}": MaskCTCOptions(threshold=p, iterations=k, ctc_weight=w)
        for w in ctc_weights for p in thresholds for k in iterations}


def timed_mask_ctc(head, memory, kinds: dict, times: dict, texts: dict, masked: dict, tok) -> None:
    """Decode ``memory`` by Mask-CTC once per kind, adding seconds to ``times``, texts to ``texts`` and (untimed)
    [CTC tokens masked, CTC tokens] to ``masked``."""
    from decoders.mask_ctc import ctc_tokens_with_confidence

    if not kinds:
        return
    frames = memory.lengths if memory.lengths is not None else torch.full((memory.x.shape[0],), memory.x.shape[1])
    _, lengths, conf = ctc_tokens_with_confidence(head.ctc.log_probs(memory).float(), frames, head.ctc.blank)
    valid = torch.arange(conf.shape[1], device=conf.device)[None] < lengths[:, None]
    for name, options in kinds.items():
        t = time.perf_counter()
        hyps = head.decode(memory, options)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        texts.setdefault(name, []).extend(tok.decode(h.tokens) for h in hyps)
        count = masked.setdefault(name, [0, 0])
        count[0] += int(((conf < options.threshold) & valid).sum())
        count[1] += int(lengths.sum())


def mask_ctc_summary(kinds: dict, times: dict, texts: dict, masked: dict, wer) -> dict:
    return {name: dict(iterations=o.iterations, threshold=o.threshold, ctc_weight=o.ctc_weight, s=round(times[name], 3),
                       wer=wer(texts[name]), speedup_vs_ar=round(times["ar"] / times[name], 2),
                       masked_fraction=round(masked[name][0] / max(masked[name][1], 1), 4))
            for name, o in kinds.items()}


def sync(model) -> None:
    """Wait for queued CUDA work, so that a timer read after it counts it (decoders return host lists)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def short_utterances(model, rows, batch_size: int, mask_ctc: tuple[list[int], list[float], list[float]], joint_beam: int = 0) -> dict:
    """Encoder seconds, CTC and AR (and Mask-CTC) decoding seconds and WER over ``rows``; with ``joint_beam`` also
    the hybrid's joint CTC/attention beam search (ESPnet's decoding of it, CTC weight as trained)."""
    from decoders.ctc import CTCDecodingOptions
    from decoders.search import DecodingOptions, decode
    from recipes.asr_subtitle.evaluate import audio_batches
    from zoo import metrics

    head = model.decoders["verbatim"]
    tok = model.tokenizer("verbatim")
    times = dict(encoder=0.0, ctc=0.0, ar=0.0)
    texts = {"ctc": [""] * len(rows), "ar": [""] * len(rows)}
    kinds, order, mask_texts, masked = mask_ctc_kinds(head, *mask_ctc), [], {}, {}
    for idx, batch in audio_batches(rows, batch_size, next(model.parameters()).device):
        t = time.perf_counter()
        memory = model.encode(batch)["acoustic"]
        sync(model)
        times["encoder"] += time.perf_counter() - t
        t = time.perf_counter()
        ctc = head.ctc.decode(memory, CTCDecodingOptions(timestamps=False))
        times["ctc"] += time.perf_counter() - t
        t = time.perf_counter()
        ar = decode(head.attention, memory, DecodingOptions(max_len=200))
        times["ar"] += time.perf_counter() - t
        for i, c, a in zip(idx, ctc, ar):
            texts["ctc"][i], texts["ar"][i] = tok.decode(c.tokens), tok.decode(a.tokens)
        if joint_beam:
            t = time.perf_counter()
            joint = head.decode(memory, DecodingOptions(max_len=200, beam_size=joint_beam, ctc_weight=head.ctc_weight))
            times["joint"] = times.get("joint", 0.0) + time.perf_counter() - t
            for i, j in zip(idx, joint):
                texts.setdefault("joint", [""] * len(rows))[i] = tok.decode(j.tokens)
        timed_mask_ctc(head, memory, kinds, times, mask_texts, masked, tok)
        order += list(idx)
    refs = [r["text_verbatim"] for r in rows]
    audio_s = sum(r["duration"] for r in rows)
    mask_ctc = mask_ctc_summary(kinds, times, mask_texts, masked,
                                lambda hyps: metrics.wer([refs[i] for i in order], hyps))
    return dict(batch=batch_size, utterances=len(rows), audio_s=round(audio_s, 1),
                **{f"{k}_s": round(v, 3) for k, v in times.items() if k in ("encoder", "ctc", "ar")},
                ctc_wer=metrics.wer(refs, texts["ctc"]), ar_wer=metrics.wer(refs, texts["ar"]),
                decode_speedup=round(times["ar"] / times["ctc"], 2),
                total_speedup=round((times["encoder"] + times["ar"]) / (times["encoder"] + times["ctc"]), 2),
                mask_ctc=mask_ctc, **({} if not joint_beam else dict(
                    joint_beam=joint_beam, joint_s=round(times["joint"], 3), joint_wer=metrics.wer(refs, texts["joint"]))))


@torch.inference_mode()
def long_form(model, reference: Path, chunk_s: float, context_s: float, batch_size: int,
              mask_ctc: tuple[list[int], list[float], list[float]]) -> dict:
    """One long-form recording, segmented at pauses by the buffered CTC pass (``transcribe``'s first pass,
    timed as segmentation); then each batch of segments is encoded once and decoded by both decoders, as
    on short utterances. The one-pass buffered CTC transcript is scored too."""
    from decoders.ctc import CTCDecodingOptions
    from decoders.search import DecodingOptions, decode
    from recipes.asr_subtitle.transcribe import (
        AudioSource,
        LongFormOptions,
        buffered_ctc_path,
        segment_batches,
    )
    from recipes.asr_subtitle.words import ctc_words, split_segments
    from zoo import metrics

    info = json.loads(reference.read_text())
    source = AudioSource(reference.parent / info["audio_filepath"], model.meta.get("sample_rate", 16000))
    ref = " ".join(seg["text_verbatim"] for seg in info["segments"])
    tok = model.tokenizer("verbatim")
    head = model.decoders["verbatim"]
    opts = LongFormOptions(chunk_s=chunk_s, context_s=context_s, subtitle_batch=batch_size)
    times = dict(segmentation=0.0, encoder=0.0, ctc=0.0, ar=0.0)
    kinds, mask_texts, masked = mask_ctc_kinds(head, *mask_ctc), {}, {}
    t = time.perf_counter()
    path, shift = buffered_ctc_path(model, source, "verbatim", opts)
    words = ctc_words(path, shift, tok, max_gap_s=opts.max_pause_s)
    segments = split_segments(words, opts.max_pause_s, opts.max_segment_s)
    times["segmentation"] = time.perf_counter() - t
    texts = {"ctc": [], "ar": []}
    device = next(model.parameters()).device
    for _, audio, lengths in segment_batches(source, segments, opts):
        t = time.perf_counter()
        memory = model.encode({"audio": audio.to(device), "audio_lengths": lengths.to(device)})["acoustic"]
        sync(model)
        times["encoder"] += time.perf_counter() - t
        t = time.perf_counter()
        texts["ctc"] += [tok.decode(h.tokens) for h in head.ctc.decode(memory, CTCDecodingOptions(timestamps=False))]
        times["ctc"] += time.perf_counter() - t
        t = time.perf_counter()
        texts["ar"] += [tok.decode(h.tokens) for h in decode(head.attention, memory, DecodingOptions(max_len=400))]
        times["ar"] += time.perf_counter() - t
        timed_mask_ctc(head, memory, kinds, times, mask_texts, masked, tok)
    shared = times["segmentation"] + times["encoder"]
    mask_ctc = mask_ctc_summary(kinds, times, mask_texts, masked, lambda hyps: metrics.wer([ref], [" ".join(hyps)]))
    return dict(minutes=round(source.length / source.sample_rate / 60, 2), batch=batch_size, segments=len(segments),
                utterances=len(info["segments"]), mask_ctc=mask_ctc,
                **{f"{k}_s": round(v, 3) for k, v in times.items() if k in ("segmentation", "encoder", "ctc", "ar")},
                decode_speedup=round(times["ar"] / times["ctc"], 2),
                total_speedup=round((shared + times["ar"]) / (shared + times["ctc"]), 2),
                one_pass_ctc_wer=metrics.wer([ref], [" ".join(w.text for w in words)]),
                ctc_wer=metrics.wer([ref], [" ".join(texts["ctc"])]), ar_wer=metrics.wer([ref], [" ".join(texts["ar"])]))


def plot(result: dict, path: Path) -> None:
    from zoo.plots import plt

    labels = [f"short, batch {r['batch']}" for r in result["short"]] + [
        f"long-form {r['minutes']:.0f} min, batch {r['batch']}" for r in result["long"]]
    speed = [r["decode_speedup"] for r in result["short"] + result["long"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].bar(labels, speed, color="tab:blue")
    axes[0].set_ylabel("AR time / CTC time")
    axes[0].set_title("decoding speed-up of CTC", fontsize=9)
    wers = [(r["ctc_wer"], r["ar_wer"]) for r in result["short"] + result["long"]]
    x = range(len(labels))
    axes[1].bar([i - 0.2 for i in x], [100 * c for c, _ in wers], 0.4, label="CTC")
    axes[1].bar([i + 0.2 for i in x], [100 * a for _, a in wers], 0.4, label="AR")
    axes[1].set_xticks(list(x), labels)
    axes[1].set_ylabel("WER (%)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7, rotation=15)
    from zoo.plots import _save

    _save(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an asr_hybrid_* model directory (zoo train asr_subtitle "
                        "model.kind=hybrid)")
    parser.add_argument("--minutes", type=float, nargs="*", default=[3.0])
    parser.add_argument("--limit", type=int, default=200, help="short utterances scored")
    parser.add_argument("--chunk", type=float, default=16.0)
    parser.add_argument("--context", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", default=None, help="corpus root as it is (default: the training run's corpus, "
                        "built if missing)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32)")
    parser.add_argument("--mask-ctc-iterations", type=int, nargs="+", default=[1, 3, 10],
                        help="Mask-CTC's K, each decoded (asr_maskctc_* models)")
    parser.add_argument("--mask-ctc-threshold", type=float, nargs="+", default=[0.999],
                        help="Mask-CTC's P_thres (CTC tokens less confident are re-predicted), each decoded")
    parser.add_argument("--mask-ctc-ctc-weight", type=float, nargs="+", default=[0.0],
                        help="weight of the masked run's CTC posteriors in Mask-CTC's fill (0: the paper's), each decoded")
    parser.add_argument("--split", default="test_unseen", choices=["test_unseen", "test_seen"],
                        help="short utterances from this split (test_seen: to choose P_thres, new sentences)")
    parser.add_argument("--no-long-form", action="store_true", help="short utterances only")
    parser.add_argument("--joint-beam", type=int, default=0, help="also decode the short utterances by joint "
                        "CTC/attention beam search of this width (0: not)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from recipes.asr_subtitle.corpus import build_longform
    from recipes.asr_subtitle.data import load_split
    from recipes.asr_subtitle.evaluate import corpus_splits
    from zoo.graph import ZooModel

    model = ZooModel.from_pretrained(args.model).eval().to(args.device)
    if model.spec_decoders.get("verbatim", {}).get("type") != "ctc_attention":
        raise ValueError(f"{args.model} has no hybrid CTC/attention verbatim head; train one with "
                         "`zoo train asr_subtitle model.kind=hybrid`")
    splits = corpus_splits(args.model, args.corpus)
    rows = [r for r in load_split(splits[args.split]) if r["lang"] == "en"][: args.limit]
    mask_ctc = (args.mask_ctc_iterations, args.mask_ctc_threshold, args.mask_ctc_ctc_weight)
    result = dict(model=args.model, threads=args.threads, split=args.split, short=[], long=[],
                  device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu")
    print("| audio | batch | CTC decode s | AR decode s | decode speed-up | incl. encoder | CTC WER | AR WER |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    short_utterances(model, rows[:8], 1, mask_ctc)  # warm-up, untimed: the first MLM pass alone costs ~0.8 s
    for batch_size in (1, 16):
        r = short_utterances(model, rows, batch_size, mask_ctc, args.joint_beam)
        result["short"].append(r)
        print(f"| {r['utterances']} short utterances ({r['audio_s'] / 60:.1f} min) | {batch_size} | {r['ctc_s']:.2f} | "
              f"{r['ar_s']:.2f} | {r['decode_speedup']:.1f}x | {r['total_speedup']:.1f}x | {100 * r['ctc_wer']:.1f}% | "
              f"{100 * r['ar_wer']:.1f}% |", flush=True)
        if args.joint_beam:
            print(f"  joint CTC/attention beam {args.joint_beam}: {r['joint_s']:.2f} s, WER {100 * r['joint_wer']:.1f}%",
                  flush=True)
    for minutes in [] if args.no_long_form else args.minutes:
        reference = build_longform(Path(splits["train"]).parent, minutes=minutes)
        for batch_size in (1, 16):
            r = long_form(model, reference, args.chunk, args.context, batch_size, mask_ctc)
            result["long"].append(r)
            print(f"| long-form {r['minutes']:.1f} min, {r['segments']} segments | {batch_size} | {r['ctc_s']:.2f} | "
                  f"{r['ar_s']:.2f} | {r['decode_speedup']:.1f}x | {r['total_speedup']:.1f}x | {100 * r['ctc_wer']:.1f}% "
                  f"(one pass {100 * r['one_pass_ctc_wer']:.1f}%) | {100 * r['ar_wer']:.1f}% |", flush=True)
    rows_with_mask_ctc = [r for r in result["short"] + result["long"] if r["mask_ctc"]]
    if rows_with_mask_ctc:
        print("\n| audio | batch | parallel decoder | tokens masked | decode s | faster than AR | WER | AR WER | "
              "WER - AR WER |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in rows_with_mask_ctc:
            audio = f"{r['utterances']} short utterances" if "audio_s" in r else f"long-form {r['minutes']:.1f} min"
            for name, m in r["mask_ctc"].items():
                fused = f", CTC weight {m['ctc_weight']:g}" if m["ctc_weight"] else ""
                print(f"| {audio} | {r['batch']} | Mask-CTC, K={m['iterations']}, P_thres {m['threshold']:g}{fused} | "
                      f"{100 * m['masked_fraction']:.1f}% | {m['s']:.2f} | "
                      f"{m['speedup_vs_ar']:.1f}x | {100 * m['wer']:.1f}% | {100 * r['ar_wer']:.1f}% | "
                      f"{100 * (m['wer'] - r['ar_wer']):+.1f} |", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ctc_vs_ar.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "ctc_vs_ar.png")
    print(f"wrote {args.out / 'ctc_vs_ar.json'} and .png")
    return result


if __name__ == "__main__":
    main()
