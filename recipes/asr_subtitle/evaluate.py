"""Evaluate an ASR + subtitling model on the corpus's held-out splits and write the card's results.

    zoo eval asr_subtitle --model runs/asr-tiny/model [--split test_unseen test_seen] [--beam 1]
                          [--lm-weight 0.5 --ctc-beam 8] [--tune-lm [--tune-split test_seen]]

Verbatim: WER and CER against verbatim references after ``zoo.metrics.normalize_text``. With
``--lm-weight`` > 0 the CTC head decodes by prefix beam search fused with a character n-gram LM
(``zoo.lm.NGramLM``, Kneser-Ney) of the training split's verbatim text, saved as ``verbatim_lm.json`` in
the model folder (shallow fusion as in ESPnet / NeMo CTC decoding with an LM). ``--tune-lm`` picks the LM
weight and insertion bonus by WER on a tuning split (default ``test_seen``: training voices, new sentences)
and reports the other splits with them.
Subtitles: WER (same normaliser) and cased sacreBLEU against subtitle references.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from recipes.asr_subtitle.data import HEADS, SpeechTextDataset, collate, load_split
from zoo import metrics

SPLITS = {"test_unseen": "held-out voices", "test_seen": "new sentences, training voices"}


LM_FILE = "verbatim_lm.json"


def decoding_options(head_type: str, beam: int = 1, max_len: int = 200, lm=None, lm_weight: float = 0.0,
                     insertion_bonus: float = 0.0):
    if head_type == "ctc":
        from decoders.ctc import CTCDecodingOptions

        return CTCDecodingOptions(beam_size=beam, timestamps=False, lm=lm, lm_weight=lm_weight,
                                  insertion_bonus=insertion_bonus, prune_top_k=8)
    from decoders.search import DecodingOptions

    return DecodingOptions(beam_size=beam, max_len=max_len)


def audio_batches(rows: Sequence[dict], batch_size: int, device=None, progress: bool = False):
    """(row indices, {"audio", "audio_lengths"}) batches of ``rows``, similar lengths together (sorted by duration)."""
    dataset = SpeechTextDataset(rows, {}, label_mode="both")
    order = sorted(range(len(rows)), key=lambda i: rows[i]["duration"])
    for start in tqdm(range(0, len(order), batch_size), desc="decode", disable=not progress):
        idx = order[start: start + batch_size]
        batch = collate([dataset[i] for i in idx])
        yield idx, {"audio": batch["audio"].to(device), "audio_lengths": batch["audio_lengths"].to(device)}


@torch.no_grad()
def transcribe_rows(model, rows: Sequence[dict], heads: Sequence[str], batch_size: int = 16, beam: int = 1,
                    progress: bool = False, max_len: int = 200, options: dict | None = None) -> dict[str, list[str]]:
    """Hypothesis texts per head, in row order; ``options`` overrides a head's decoding options."""
    model.eval()
    options = {h: decoding_options(model.spec_decoders[h]["type"], beam, max_len) for h in heads} | (options or {})
    texts: dict[str, dict[int, str]] = {h: {} for h in heads}
    device = next(model.parameters()).device
    for idx, batch in audio_batches(rows, batch_size, device, progress):
        result = model.generate(batch, heads=list(heads), options=options)
        for h in heads:
            for i, hyp in zip(idx, result[h]):
                texts[h][i] = hyp.text
    return {h: [texts[h][i] for i in range(len(rows))] for h in heads}


def score(rows: Sequence[dict], hyps: dict[str, list[str]]) -> dict[str, float]:
    scores = {}
    if "verbatim" in hyps:
        refs = [r["text_verbatim"] for r in rows]
        scores["verbatim_wer"] = metrics.wer(refs, hyps["verbatim"])
        scores["verbatim_cer"] = metrics.cer(refs, hyps["verbatim"])
    if "subtitle" in hyps:
        refs = [r["text_subtitle"] for r in rows]
        scores["subtitle_wer"] = metrics.wer(refs, hyps["subtitle"])
        scores["subtitle_bleu"] = metrics.bleu(refs, hyps["subtitle"])
    return scores


def verbatim_lm(model_dir: Path, model, train_rows: Sequence[dict], order: int = 6):
    """The model folder's character n-gram LM of the verbatim head, trained on ``train_rows`` if absent."""
    from zoo.lm import NGramLM

    path = Path(model_dir) / LM_FILE
    if path.is_file():
        return NGramLM.load(path)
    tokenizer = model.tokenizer("verbatim")
    lm = NGramLM.train((tokenizer.encode(r["text_verbatim"]) for r in train_rows), tokenizer.vocab_size, order)
    lm.save(path)
    return lm


@torch.no_grad()
def ctc_log_probs(model, rows: Sequence[dict], head: str = "verbatim", batch_size: int = 16) -> list[torch.Tensor]:
    """The CTC head's (frames, vocab) log probs of every row, in row order, on the CPU."""
    model.eval()
    ctc, out = model.decoders[head], {}
    device = next(model.parameters()).device
    for idx, batch in audio_batches(rows, batch_size, device):
        memory = model.memory(model.encode(batch, needed={model.spec_decoders[head]["source"]}), head)
        lp = ctc.log_probs(memory).float().cpu()
        frames = memory.lengths.tolist() if memory.lengths is not None else [lp.shape[1]] * len(idx)
        out.update({i: lp[j, :n] for j, (i, n) in enumerate(zip(idx, frames))})
    return [out[i] for i in range(len(rows))]


def tune_lm_fusion(log_probs: Sequence[torch.Tensor], refs: Sequence[str], tokenizer, lm,
                   weights: Sequence[float] = (0.0, 0.3, 0.6, 0.9, 1.2), bonuses: Sequence[float] = (0.0, 1.0, 2.0),
                   beam: int = 8, blank: int = 0) -> tuple[dict[tuple[float, float], float], tuple[float, float]]:
    """WER of CTC prefix beam search + ``lm`` for every (lm_weight, insertion_bonus) on a tuning split, and the
    best pair: shallow-fusion weights are chosen on development data, as ESPnet's and NeMo's decoding
    recipes do, never on the test split they are reported on. The acoustic model runs once (``log_probs``)."""
    from decoders.ctc import prefix_beam_search

    grid = {}
    for w in weights:
        for b in bonuses:
            hyps = [tokenizer.decode(list(prefix_beam_search(lp, beam, blank, lm, w, b, prune_top_k=8)[0][0]))
                    for lp in log_probs]
            grid[(w, b)] = metrics.wer(list(refs), hyps)
    return grid, min(grid, key=lambda k: (grid[k], k))


def tune_lm_on_rows(model, rows: Sequence[dict], lm, beam: int = 8):
    """:func:`tune_lm_fusion` on ``rows`` of a manifest: the verbatim CTC head's log probs against their verbatim
    references; returns (grid, (lm_weight, insertion_bonus))."""
    return tune_lm_fusion(ctc_log_probs(model, rows), [r["text_verbatim"] for r in rows], model.tokenizer("verbatim"),
                          lm, beam=beam)


def make_eval_fn(rows: Sequence[dict], heads: Sequence[str], batch_size: int = 16):
    def eval_fn(model) -> dict[str, float]:
        return score(rows, transcribe_rows(model, rows, heads, batch_size))

    return eval_fn


def eval_results(scores: dict[str, float], split: str, verbatim_decoding: str = "") -> list[dict]:
    """Model-index rows; ``verbatim_decoding`` (e.g. ", CTC beam 8 + char 6-gram LM") names a non-greedy run."""
    out = []
    for key, value in scores.items():
        head, metric = key.split("_", 1)
        note = verbatim_decoding if head == "verbatim" else ""
        out.append(dict(task_type="automatic-speech-recognition", task_name=f"{head} head{note}",
                        dataset_name=f"eSpeak NG broadcast corpus ({SPLITS.get(split, split)})",
                        dataset_type="encdec-zoo/espeak-broadcast", dataset_split=split,
                        metric_type=metric, metric_value=round(100 * value if metric != "bleu" else value, 2)))
    return out


def corpus_splits(model_dir: str | Path, corpus_root: str | Path | None = None) -> dict[str, Path]:
    """Manifest path per split: of ``corpus_root`` as it is, else of the corpus the model was trained on (its run
    folder's config.yaml beside the model directory; built if missing), else of the default corpus."""
    if corpus_root:
        return {split: Path(corpus_root) / f"{split}.jsonl" for split in (*SPLITS, "train")}
    from recipes.asr_subtitle.train import AsrConfig, DataConfig, corpus
    from zoo.config import load_config

    run_config = Path(model_dir).parent / "config.yaml"
    return corpus(load_config(AsrConfig, run_config).data if run_config.is_file() else DataConfig())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo eval asr_subtitle", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained")
    parser.add_argument("--corpus", default=None, help="corpus root (default: the corpus of the training run's "
                        "config.yaml beside the model directory, else the default corpus)")
    parser.add_argument("--split", nargs="+", default=None, choices=list(SPLITS),
                        help="splits to score (default: both, less the --tune-split with --tune-lm)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N utterances of each split")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=200, help="most tokens an attention decoder generates")
    parser.add_argument("--lm-weight", type=float, default=0.0, help="character n-gram LM weight for the CTC head")
    parser.add_argument("--lm-order", type=int, default=6)
    parser.add_argument("--insertion-bonus", type=float, default=0.0, help="per-token bonus with the LM")
    parser.add_argument("--ctc-beam", type=int, default=8, help="CTC prefix beam width when --lm-weight > 0")
    parser.add_argument("--tune-lm", action="store_true", help="choose --lm-weight and --insertion-bonus by WER on "
                        "--tune-split first (a grid of 5 x 3, weight 0 included), then score --split with them")
    parser.add_argument("--tune-split", default="test_seen", choices=list(SPLITS))
    parser.add_argument("--tune-limit", type=int, default=100, help="utterances of --tune-split to tune on")
    parser.add_argument("--mask-ctc", type=float, default=None, metavar="P_THRES",
                        help="decode the verbatim head by Mask-CTC (asr_maskctc_* models), masking CTC tokens less "
                        "confident than P_THRES (the paper: 0.999; 0.5 suits a tiny model)")
    parser.add_argument("--mask-ctc-iterations", type=int, default=1, help="Mask-CTC's K: masked-LM passes at most")
    parser.add_argument("--mask-ctc-ctc-weight", type=float, default=0.0, help="weight of the masked run's CTC "
                        "posteriors in Mask-CTC's fill (0: the paper's MLM-only fill)")
    parser.add_argument("--speculative", action="store_true", help="greedy AR heads decoded speculatively, the same "
                        "text faster: a hybrid verbatim head drafts from its own CTC hypothesis, an AR subtitle head "
                        "from the verbatim transcript (copied through text)")
    parser.add_argument("--no-card", action="store_true")
    args = parser.parse_args(argv)
    if args.mask_ctc is not None and (args.lm_weight > 0 or args.tune_lm):
        raise ValueError("--mask-ctc decodes without the n-gram LM; drop --lm-weight / --tune-lm")
    if args.split is None:
        args.split = [s for s in SPLITS if not (args.tune_lm and s == args.tune_split)]

    from zoo.cards import add_eval_results
    from zoo.graph import ZooModel

    directory = Path(args.model)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass --model a directory written by save_pretrained")
    model = ZooModel.from_pretrained(str(directory))
    splits = corpus_splits(directory, args.corpus)
    heads = [h for h in HEADS if h in model.decoders]
    options, lm_note = {}, ""
    if args.lm_weight > 0 or args.tune_lm:
        if model.spec_decoders.get("verbatim", {}).get("type") != "ctc":
            raise ValueError("--lm-weight / --tune-lm fuse an n-gram LM into a CTC verbatim head; this model has none")
        lm = verbatim_lm(directory, model, load_split(splits["train"]), args.lm_order)
        if args.tune_lm:
            if args.tune_split in args.split:
                raise ValueError(f"--tune-split {args.tune_split} is also in --split: weights tuned on a split must "
                                 "not be scored on it; pass --split test_unseen")
            tune = load_split(splits[args.tune_split])[: args.tune_limit]
            grid, (args.lm_weight, args.insertion_bonus) = tune_lm_on_rows(model, tune, lm, args.ctc_beam)
            print(f"LM fusion tuned on {len(tune)} {args.tune_split} utterances (WER by weight, bonus): " +
                  ", ".join(f"{w:g}/{b:g} {100 * v:.1f}%" for (w, b), v in grid.items()) +
                  f"; chosen: --lm-weight {args.lm_weight:g} --insertion-bonus {args.insertion_bonus:g}")
        options["verbatim"] = decoding_options("ctc", args.ctc_beam, lm=lm, lm_weight=args.lm_weight,
                                               insertion_bonus=args.insertion_bonus)
        lm_note = (f", CTC beam {args.ctc_beam} + char {args.lm_order}-gram LM (weight {args.lm_weight:g}, "
                   f"bonus {args.insertion_bonus:g}{', tuned on ' + args.tune_split if args.tune_lm else ''})")
        heads = ["verbatim"]  # the LM changes only the verbatim head's decoding
    if args.mask_ctc is not None:
        head = model.decoders["verbatim"] if "verbatim" in model.decoders else None
        if getattr(head, "mlm", None) is None:
            raise ValueError("--mask-ctc needs a verbatim ctc_attention head with the masked LM (preset asr_maskctc_*, "
                             "or python -m recipes.asr_subtitle.train_mask_ctc)")
        from decoders.mask_ctc import MaskCTCOptions

        options["verbatim"] = MaskCTCOptions(threshold=args.mask_ctc, iterations=args.mask_ctc_iterations,
                                             ctc_weight=args.mask_ctc_ctc_weight)
        fused = f", CTC weight {args.mask_ctc_ctc_weight:g}" if args.mask_ctc_ctc_weight else ""
        lm_note = f", Mask-CTC (P_thres {args.mask_ctc:g}, K={args.mask_ctc_iterations}{fused})"
        heads = ["verbatim"]
    if args.speculative:
        from decoders.search import DecodingOptions

        types = {h: c["type"] for h, c in model.spec_decoders.items()}
        if types.get("verbatim") == "ctc_attention" and "verbatim" not in options:
            options["verbatim"] = DecodingOptions(max_len=args.max_len, draft="ctc")
        if types.get("subtitle") == "transformer_decoder" and "verbatim" in types and "subtitle" in heads:
            options["subtitle"] = DecodingOptions(max_len=args.max_len, draft="verbatim")
        if args.beam > 1 or not any(isinstance(o, DecodingOptions) and o.draft for o in options.values()):
            raise ValueError("--speculative decodes greedy AR heads with drafts: it needs --beam 1 and a ctc_attention "
                             "verbatim head (preset asr_hybrid_* or asr_maskctc_*, without --lm-weight or --mask-ctc) "
                             f"or an AR subtitle head beside a verbatim head (asr_cascaded_*); this model has {types}")
    results = []
    print(f"{'split':<12} " + " ".join(f"{k:>14}" for k in ("verbatim_wer", "verbatim_cer", "subtitle_wer", "subtitle_bleu")))
    for split in args.split:
        rows = load_split(splits[split])
        rows = rows[: args.limit] if args.limit else rows
        scores = score(rows, transcribe_rows(model, rows, heads, args.batch_size, args.beam, progress=True,
                                             max_len=args.max_len, options=options))
        cells = [f"{100 * scores[k]:>13.1f}%" if k in scores and "bleu" not in k else
                 (f"{scores[k]:>14.1f}" if k in scores else f"{'-':>14}")
                 for k in ("verbatim_wer", "verbatim_cer", "subtitle_wer", "subtitle_bleu")]
        print(f"{split:<12} " + " ".join(cells), flush=True)
        results += eval_results(scores, split, lm_note)
    if not args.no_card:
        add_eval_results(directory, results, model=model)
        print(f"results written to {directory / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
