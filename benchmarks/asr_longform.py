"""Long-form transcription: cue timing against known boundaries, and memory that does not grow with length.

Builds long-form recordings of held-out-voice utterances separated by 0.3-1.5 s pauses (known
boundaries; ``recipes.asr_subtitle.corpus.build_longform``), transcribes each in a fresh process with
``recipes.asr_subtitle.transcribe.transcribe`` (buffered CTC over a streamed file, a second CTC pass and
the subtitle decoder per segment), and reports per length: wall time, RTFx, the process's peak RSS,
verbatim WER, and how many known utterance starts / ends have a verbatim SRT cue boundary within
150 ms (issue 3, must-show 5).

    .venv/bin/python benchmarks/asr_longform.py --model runs/asr-tiny/model [--minutes 3 30] [--threads 2]

Writes benchmarks/results/asr_longform.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "asr_longform.json"


def worker(args) -> None:
    """Transcribe one file in this process and print one JSON line (peak RSS covers only this run)."""
    import torch

    from recipes.asr_subtitle.transcribe import LongFormOptions, folder_lm, transcribe
    from recipes.asr_subtitle.words import boundaries_error
    from zoo import metrics
    from zoo.graph import ZooModel
    from zoo.subtitles import parse_srt

    torch.set_num_threads(args.threads)
    info = json.loads(Path(args.reference).read_text())
    audio = Path(args.reference).parent / info["audio_filepath"]
    model = ZooModel.from_pretrained(args.model)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    lm = folder_lm(args.model) if args.lm_weight > 0 else None
    opts = LongFormOptions(redecode=not args.one_pass, lm_weight=args.lm_weight, insertion_bonus=args.insertion_bonus,
                           attention_text=args.attention_text)
    with torch.inference_mode():
        written = transcribe(model, audio, args.out, formats=("srt",), opts=opts, lm=lm)
    seconds = time.perf_counter() - start
    cues = parse_srt(written["verbatim"][0].read_text())
    duration = info["segments"][-1]["end"]
    reference = " ".join(seg["text_verbatim"] for seg in info["segments"])
    wer = metrics.wer([reference], [" ".join(" ".join(c.lines) for c in cues)])
    print(json.dumps(dict(minutes=duration / 60, utterances=len(info["segments"]), cues=len(cues), seconds=seconds,
                          verbatim_wer=wer,
                          rtfx=duration / seconds, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          rss_after_model_load_mb=baseline_rss / 1024, **boundaries_error(cues, args.reference))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained ASR + subtitling model directory")
    parser.add_argument("--minutes", type=float, nargs="+", default=[3.0, 30.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", help="corpus root (default: the one the tiny config builds)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-asr-longform"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one-pass", action="store_true", help="skip the second pass over each segment")
    parser.add_argument("--lm-weight", type=float, default=0.0, help="second pass fused with the model's verbatim_lm.json")
    parser.add_argument("--insertion-bonus", type=float, default=0.0)
    parser.add_argument("--attention-text", action="store_true", help="a hybrid model: the second pass takes its "
                        "attention decoder's text, timed by CTC alignment (default: its CTC branch's)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from recipes.asr_subtitle import train
    from recipes.asr_subtitle.corpus import build_longform
    from zoo.config import load_config

    root = args.corpus or Path(train.corpus(load_config(train.AsrConfig, train.DEFAULT_CONFIG).data)["train"]).parent
    rows = []
    for minutes in args.minutes:
        reference = build_longform(root, minutes=minutes)
        out = subprocess.run([sys.executable, __file__, "--worker", "--model", args.model, "--reference",
                              str(reference), "--threads", str(args.threads), *(["--one-pass"] * args.one_pass),
                              *(["--attention-text"] * args.attention_text),
                              "--lm-weight", str(args.lm_weight), "--insertion-bonus", str(args.insertion_bonus),
                              "--out", str(args.workdir / f"{minutes:g}min")],
                             check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['minutes']:6.1f} min  {row['utterances']:4d} utts  {row['seconds']:7.1f} s  RTFx {row['rtfx']:6.1f}  "
              f"peak RSS {row['peak_rss_mb']:7.0f} MB  WER {row['verbatim_wer']:.1%}  starts within 150 ms {row['start_within_150ms']:.1%}  "
              f"ends {row['end_within_150ms']:.1%}  (median errors {1000 * row['start_median']:.0f} / "
              f"{1000 * row['end_median']:.0f} ms)", flush=True)
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS at {rows[-1]['minutes']:.0f} min / at {rows[0]['minutes']:.0f} min: {growth:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(model=args.model, threads=args.threads, one_pass=args.one_pass,
                                        attention_text=args.attention_text,
                                        lm_weight=args.lm_weight, insertion_bonus=args.insertion_bonus, rows=rows,
                                        rss_growth=growth), indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
