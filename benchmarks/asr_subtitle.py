"""Multi-task vs single-task ASR + subtitling with the same budget and data (issue 3).

    .venv/bin/python benchmarks/asr_subtitle.py [--size small] [--steps 500] [--kinds verbatim subtitle shared cascaded]
                                                [--lm-weight 0.6] [--tune-lm 100] [--precision bf16]

Trains each preset with the same config (steps, batches, schedule) on the eSpeak broadcast corpus and
scores held-out voices: verbatim WER, subtitle WER and subtitle BLEU. Prints the table, writes
benchmarks/results/asr_subtitle_<size>.json, and says whether the cascaded model beats the single-task models
on both outputs (the claim of Poncelet & Van hamme, 2025).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from recipes.asr_subtitle import evaluate, train
from zoo.config import load_config
from zoo.graph import ZooModel

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--kinds", nargs="+", default=["verbatim", "subtitle", "shared", "cascaded"])
    parser.add_argument("--limit", type=int, default=0, help="score only N utterances per split (0: all)")
    parser.add_argument("--out", default="runs/bench-asr")
    parser.add_argument("--lm-weight", type=float, default=0.6, help="also score CTC + char 6-gram LM (0: skip)")
    parser.add_argument("--insertion-bonus", type=float, default=1.0)
    parser.add_argument("--tune-lm", type=int, default=0, metavar="N",
                        help="score the LM with weight and bonus tuned on N test_seen utterances instead of the fixed ones")
    parser.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                        help="training precision (default: the config's; configs/small.yaml: bf16 autocast)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every preset, e.g. data.max_duration=40")
    parser.add_argument("--json", default=None, help="results file (default results/asr_subtitle_<size>.json)")
    args = parser.parse_args()
    config = Path(train.__file__).parent / "configs" / f"{args.size}.yaml"
    overrides = [*([f"train.precision={args.precision}"] if args.precision else []), *args.set]
    train_cfg = load_config(train.AsrConfig, config, overrides)  # what every preset trains and is scored with
    rows, begin = [], time.time()
    for kind in args.kinds:
        out = Path(args.out) / f"{kind}-{args.size}"
        start = time.time()
        no_ctc = ["model.inter_ctc=0"] if kind == "subtitle" else []  # InterCTC needs the verbatim CTC head
        train.main(["--config", str(config), f"model.kind={kind}", f"model.size={args.size}", *no_ctc,
                    f"train.steps={args.steps}", f"train.out_dir={out}", "data.eval_size=0", "train.eval_every=0",
                    *overrides])
        minutes = (time.time() - start) / 60
        model = ZooModel.from_pretrained(str(out / "model"))
        splits = train.corpus(train_cfg.data)
        test = evaluate.load_split(splits["test_unseen"])
        test = test[: args.limit] if args.limit else test
        heads = [h for h in ("verbatim", "subtitle") if h in model.decoders]
        scores = evaluate.score(test, evaluate.transcribe_rows(model, test, heads))
        if "verbatim" in heads and model.spec_decoders["verbatim"]["type"] == "ctc" and args.lm_weight > 0:
            lm = evaluate.verbatim_lm(out / "model", model, evaluate.load_split(splits["train"]))
            weights = (args.lm_weight, args.insertion_bonus)
            if args.tune_lm:  # weights chosen on training voices / new sentences, scored on held-out voices
                dev = evaluate.load_split(splits["test_seen"])[: args.tune_lm]
                _, weights = evaluate.tune_lm_on_rows(model, dev, lm)
                scores["tuned_lm"] = list(weights)
            fused = {"verbatim": evaluate.decoding_options("ctc", 8, lm=lm, lm_weight=weights[0],
                                                           insertion_bonus=weights[1])}
            hyps = evaluate.transcribe_rows(model, test, ["verbatim"], options=fused)
            scores["verbatim_lm_wer"] = evaluate.score(test, hyps)["verbatim_wer"]
        rows.append({"kind": kind, "size": args.size, "steps": args.steps, "precision": train_cfg.train.precision,
                     "overrides": args.set, "train_minutes": round(minutes, 1),
                     "params": sum(p.numel() for p in model.parameters()), **scores})
        print(rows[-1], flush=True)
    print(f"\n{'preset':<22} {'params':>10} {'min':>6} {'verbatim WER':>13} {'+ LM':>7} {'subtitle WER':>13} {'BLEU':>6}")
    for r in rows:
        v = f"{100 * r['verbatim_wer']:.1f}%" if "verbatim_wer" in r else "-"
        lm = f"{100 * r['verbatim_lm_wer']:.1f}%" if "verbatim_lm_wer" in r else "-"
        lm += " (tuned {:g}/{:g})".format(*r["tuned_lm"]) if "tuned_lm" in r else ""
        s = f"{100 * r['subtitle_wer']:.1f}%" if "subtitle_wer" in r else "-"
        b = f"{r['subtitle_bleu']:.1f}" if "subtitle_bleu" in r else "-"
        print(f"asr_{r['kind']}_{r['size']:<12} {r['params']:>10,} {r['train_minutes']:>6} {v:>13} {lm:>7} {s:>13} {b:>6}")
    print(f"{len(rows)} presets trained and scored in {(time.time() - begin) / 60:.1f} min")
    by = {r["kind"]: r for r in rows}
    verdict = None
    if {"verbatim", "subtitle", "cascaded"} <= set(by):
        if max(r.get("subtitle_bleu", 0.0) for r in rows) < 1.0:  # WERs over 100%: comparing them is noise
            print("\ncascaded vs single-task: undecided, no subtitle decoder learned at this budget (BLEU < 1)")
        else:
            verdict = (by["cascaded"]["verbatim_wer"] < by["verbatim"]["verbatim_wer"]
                       and by["cascaded"]["subtitle_wer"] < by["subtitle"]["subtitle_wer"])
            print(f"\ncascaded beats both single-task models on their own output: {verdict}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.json or RESULTS / f"asr_subtitle_{args.size}.json").write_text(
        json.dumps({"rows": rows, "cascaded_beats_single_task": verdict,
                    "total_minutes": round((time.time() - begin) / 60, 1)}, indent=1))


if __name__ == "__main__":
    main()
