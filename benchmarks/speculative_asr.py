"""Speculative greedy decoding of a trained ASR model's AR head vs its plain greedy.

On held-out-voice utterances (``test_unseen``), the encoders run once per batch (not timed); the AR
head then decodes greedily (a) plainly, (b) with CopySpec drafts from a CTC hypothesis of the same
audio (its greedy CTC decode is timed as part of the drafter), with a fixed draft length ``--draft-k`` and
with transformers' "heuristic" per-row schedule (+2 / -1), (c) with Medusa-1 heads if the model
folder holds ``medusa-<head>.safetensors`` (``python -m recipes.asr_subtitle.train_medusa --head <head>``),
alone and as the fallback of rows the copy leaves empty (``FallbackDrafter``). At batch > 1 plain greedy and
the copy drafters also run with continuous batching (``DecodingOptions(max_active=batch)``: every utterance
through that many places, a finished row's place going to the next utterance); speed-ups stay relative to
plain greedy in static batches, the faster of the two plain ways here. Two
model kinds: shared/cascaded (the AR *subtitle* head drafted from the verbatim CTC head, across heads)
and hybrid (``asr_hybrid_*``: the AR *verbatim* decoder drafted from its own CTC branch, same
tokenizer). Every speculative output is checked token for token against plain greedy. Batches of 1
and 8 utterances, sorted by length, fp32. Plain greedy and each drafter run in turn, ``--repeats`` rounds
after a warm-up, so that the VM's drifts in speed hit them alike: the table gives each one's best time,
the speed-up of the best times, and the median of the speed-ups paired within a round.

    .venv/bin/python benchmarks/speculative_asr.py --model runs/asr-tiny/model [--limit 96] [--threads 1] [--draft-k 8]
    python benchmarks/speculative_asr.py --model DIR --device cuda --out DIR/speculative_asr.json   # fp32 on the GPU

Writes benchmarks/results/speculative_asr.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ar_decoding import interleaved  # noqa: E402  (interleaved best and paired times)
from zoo.contract import Features  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@torch.inference_mode()
def encode_batches(model, rows, batch_size: int, target: str) -> list[dict]:
    """Each batch's memories of the AR ``target`` head and of the verbatim head (encoders run once, untimed)."""
    from recipes.asr_subtitle.evaluate import audio_batches

    out = []
    for _, batch in audio_batches(rows, batch_size, next(model.parameters()).device):
        feats = model.encode(batch)
        out.append(dict(target=model.memory(feats, target), verbatim=model.memory(feats, "verbatim")))
    return out


def heads(model, target: str) -> tuple:
    """(AR decoder, CTC head drafting for it)."""
    verbatim = model.decoders["verbatim"]
    if target == "verbatim":  # hybrid: the attention branch, drafted by its own CTC branch
        return verbatim.attention, verbatim.ctc
    return model.decoders[target], verbatim


def stack(parts: list) -> Features | list[Features]:
    """The memories of several batches as one batch, padded to the longest (``lengths`` marks each row's end);
    a decoder reading several sources (a list of Features per batch) gets one stacked Features per source."""
    if isinstance(parts[0], (list, tuple)):
        return [stack(list(source)) for source in zip(*parts)]
    frames = max(f.x.shape[1] for f in parts)
    x = torch.cat([F.pad(f.x, (0, 0, 0, frames - f.x.shape[1])) for f in parts])
    lengths = [f.lengths if f.lengths is not None else torch.full((f.x.shape[0],), f.x.shape[1]) for f in parts]
    return Features(x, torch.cat([t.to(x.device) for t in lengths]))


@torch.inference_mode()
def run(model, batches: list[dict], target: str, medusa=None, max_len: int = 200, repeats: int = 3,
        draft_k: int = 8, continuous: int | None = None) -> list[dict]:
    """Each decoding's row of the table; ``continuous`` adds continuous batching (all utterances through that
    many places, ``DecodingOptions(max_active=...)``) of plain greedy and of the copy drafters."""
    from decoders.drafters import FallbackDrafter
    from decoders.search import DecodingOptions, decode
    from decoders.speculative import speculative_decode

    ar, ctc = heads(model, target)

    def copy(b: dict):  # token ids within one vocabulary (the hybrid), through text across heads
        return model.copy_drafter("verbatim", target, ctc.decode(b["verbatim"]), k=draft_k)

    def speculative(make, schedule, parts=batches, active=None):
        def go():
            hyps, stats = [], []
            for b in parts:
                h, s = speculative_decode(ar, b["target"], DecodingOptions(max_len=max_len, draft=make(b),
                                                                           draft_schedule=schedule, max_active=active))
                hyps += h
                stats.append(s)
            row_rounds = sum(len(s.accepted) for s in stats)
            return hyps, sum(sum(s.accepted) for s in stats) / row_rounds, sum(s.verified for s in stats) / row_rounds
        return go

    fns = {"plain greedy": lambda: ([h for b in batches for h in decode(ar, b["target"], DecodingOptions(max_len=max_len))],
                                    1.0, 1.0),
           "copy (CTC hypothesis)": speculative(copy, "constant"),
           "copy (CTC hypothesis), heuristic draft length": speculative(copy, "heuristic")}
    if medusa is not None:
        fns["Medusa-1 heads"] = speculative(lambda b: medusa, "constant")
        fns["copy, Medusa-1 heads where the copy has none"] = speculative(
            lambda b: FallbackDrafter(copy(b), medusa), "constant")
    if continuous:
        whole = [{key: stack([b[key] for b in batches]) for key in ("target", "verbatim")}]
        fns[f"plain greedy, continuous batching ({continuous} places)"] = lambda: (
            decode(ar, whole[0]["target"], DecodingOptions(max_len=max_len, max_active=continuous)), 1.0, 1.0)
        fns["copy (CTC hypothesis), continuous batching"] = speculative(copy, "constant", whole, continuous)
        if medusa is not None:
            fns["copy, Medusa-1 where the copy has none, continuous batching"] = speculative(
                lambda b: FallbackDrafter(copy(b), medusa), "constant", whole, continuous)
    outs, best, paired = interleaved(fns, repeats)
    plain = outs["plain greedy"][0]
    tokens = sum(len(h.tokens) for h in plain)
    rows = []
    for name, (hyps, per_pass, slots) in outs.items():
        rows.append(dict(drafter=name, seconds=round(best[name], 3), speedup=round(best["plain greedy"] / best[name], 2),
                         paired_speedup=round(paired[name], 2), tokens_per_pass=round(per_pass, 2),
                         positions_per_pass=round(slots, 2), identical=[h.tokens for h in hyps] == [h.tokens for h in plain],
                         tokens_per_s=round(tokens / best[name], 1)))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model directory with a CTC 'verbatim' and an AR 'subtitle' head")
    parser.add_argument("--limit", type=int, default=96, help="held-out utterances")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument("--static-only", action="store_true", help="skip the continuous-batching rows")
    parser.add_argument("--draft-k", type=int, default=8, help="tokens the copy drafter proposes per round")
    parser.add_argument("--corpus", default=None, help="corpus root as it is (default: the training run's corpus, "
                        "built if missing)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 either way: the identity check is exact)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speculative_asr.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from recipes.asr_subtitle.data import load_split
    from recipes.asr_subtitle.evaluate import corpus_splits
    from zoo.graph import ZooModel

    model = ZooModel.from_pretrained(args.model).eval().to(args.device)
    types = {h: model.spec_decoders.get(h, {}).get("type") for h in ("verbatim", "subtitle")}
    if types == {"verbatim": "ctc", "subtitle": "transformer_decoder"}:
        target = "subtitle"
    elif types["verbatim"] == "ctc_attention":
        target = "verbatim"
    else:
        raise ValueError(f"{args.model} has heads {types}; this benchmark needs a CTC verbatim head and an AR subtitle "
                         "head (the shared or cascaded presets) or a hybrid CTC/attention verbatim head")
    medusa = None
    if (Path(args.model) / f"medusa-{target}.safetensors").is_file():
        from recipes.asr_subtitle.train_medusa import load_medusa

        medusa = load_medusa(args.model, model, target)
    rows = load_split(corpus_splits(args.model, args.corpus)["test_unseen"])[: args.limit]
    result = dict(model=args.model, head=target, utterances=len(rows), threads=args.threads, draft_k=args.draft_k,
                  device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", batches={})
    print("| batch | drafter | s | speed-up | paired speed-up | tokens per pass | positions verified per pass | tokens/s | identical |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for batch_size in args.batches:
        table = run(model, encode_batches(model, rows, batch_size, target), target, medusa, repeats=args.repeats,
                    draft_k=args.draft_k, continuous=batch_size if batch_size > 1 and not args.static_only else None)
        result["batches"][batch_size] = table
        for r in table:
            print(f"| {batch_size} | {r['drafter']} | {r['seconds']:.2f} | {r['speedup']:.2f}x | {r['paired_speedup']:.2f}x | {r['tokens_per_pass']:.2f} | "
                  f"{r.get('positions_per_pass', 1.0):.2f} | {r['tokens_per_s']:.0f} | {'yes' if r['identical'] else 'NO'} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
