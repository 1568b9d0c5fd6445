"""Transcribe and subtitle audio of any length with an ASR + subtitling model.

Long-form, buffered CTC (as OWSM-CTC's ``decode_long_batched_buffered`` and NeMo's buffered CTC):
the file is read in windows of ``chunk_s`` plus ``context_s`` on both sides, a batch of windows is
encoded at once, and only each window's centre frames are kept; greedy CTC over the stitched frames
gives tokens with frame times. Audio is streamed from disk window by window and only one byte per
frame is kept, so memory is bounded by the chunk size, not the file length. Words are split into
segments at pauses. Second pass (``redecode``): each segment's own audio is decoded again, batched —
a model trained on single utterances transcribes one utterance far better than a window holding
several (the VAD-then-decode recipe of WhisperX / NeMo's VAD pipelines, with the first CTC pass as
the VAD). Each segment's subtitle comes from the subtitle head run on the same segment audio, with
the segment's CTC times as cue times.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from recipes.asr_subtitle.audio_source import AudioSource, release_freed_memory
from recipes.asr_subtitle.words import (
    aligned_words,
    ctc_words,
    extend_edges,
    own_words,
    span_words,
    split_segments,
)
from zoo.subtitles import CueOptions, Word, write_transcript


@dataclass(frozen=True)
class LongFormOptions:
    chunk_s: float = 16.0        # centre part of each window (kept)
    context_s: float = 2.0       # audio on each side of the centre, seen but not kept
    batch_size: int = 8          # windows encoded at once
    max_pause_s: float = 0.3     # a silence longer than this between characters ends a segment (and a word)
    segment_pad_s: float = 0.4   # audio kept around a segment for its second pass and subtitle decoding (a
    #                              first pass that cut a word short gets its end back; BENCHMARKS.md)
    subtitle_batch: int = 8      # segments decoded at once (second pass and subtitles)
    redecode: bool = True        # second CTC pass on each segment's own audio (redecode_segments)
    max_segment_s: float = 30.0  # speech without pauses is cut into segments of at most this length
    width_step_s: float = 1.0    # segment batches are padded to a multiple of this: few distinct shapes
    lm_weight: float = 0.0       # > 0: the second pass is CTC prefix beam search fused with ``lm`` (transcribe)
    insertion_bonus: float = 0.0
    ctc_beam: int = 8
    end_speech_min: float = 0.05  # > 0: a segment's end moves past the frames after its last character whose
    #                              non-blank posterior stays >= this (second pass, extend_edges; 0 = off; 0.05
    #                              chosen on test_seen)
    start_speech_min: float = 0.3  # the same for a segment's start, over the frames before its first character
    #                              (0.3 chosen on test_seen)
    end_extend_max_s: float = 0.5  # at most this far, either way
    speculative: bool = False    # an AR subtitle head drafts from the segment's verbatim text (the same subtitles)
    attention_text: bool = False  # a hybrid verbatim head: the second pass's text is its attention branch's (greedy,
    #                               speculative from its CTC), timed by CTC alignment (off: its CTC branch's, which
    #                               scored better on long-form audio; BENCHMARKS.md)

    def __post_init__(self):
        for name in ("chunk_s", "max_pause_s", "max_segment_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 seconds")
        for name in ("start_speech_min", "end_speech_min"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} is a posterior threshold: use a value in "
                                 f"[0, 1] (0 turns it off; default {getattr(LongFormOptions, name)})")


def _ctc_branch(model, head: str):
    """(CTC decoder, frame shift in seconds, encoder node name) of ``head``; a hybrid CTC/attention head
    (``ctc_attention``) is read through its CTC branch."""
    ctc = model.decoders[head]
    ctc = getattr(ctc, "ctc", ctc)
    return ctc, float(ctc.frame_shift_s or model.meta.get("frame_shift_s")), model.spec_decoders[head]["source"]


def _windows(length: int, sr: int, opts: LongFormOptions, shift_samples: int) -> Iterator[tuple[int, int]]:
    """(centre start, centre stop) in samples, multiples of the frame shift."""
    chunk = max(shift_samples, int(round(opts.chunk_s * sr / shift_samples)) * shift_samples)
    for start in range(0, length, chunk):
        yield start, min(start + chunk, length)


@torch.no_grad()
def buffered_ctc_path(model, source: AudioSource, head: str = "verbatim",
                      opts: LongFormOptions = LongFormOptions()) -> tuple[np.ndarray, float]:
    """Per-frame argmax token ids (uint8/int16) of the CTC head over the whole signal, and the frame shift.
    A hybrid CTC/attention head (``ctc_attention``) is read through its CTC branch."""
    ctc, shift, encoder = _ctc_branch(model, head)
    sr = source.sample_rate
    hop = int(round(shift * sr))
    context = int(round(opts.context_s * sr / hop)) * hop
    device = next(model.parameters()).device
    windows = list(_windows(source.length, sr, opts, hop))
    pieces: list[np.ndarray] = []
    dtype = np.uint8 if ctc.vocab_size <= 256 else np.int32
    for b in range(0, len(windows), opts.batch_size):
        batch = windows[b: b + opts.batch_size]
        # context is cut at the signal's ends rather than zero-filled: digital silence never enters a window
        # (the model never heard any in training, and it skews the per-utterance feature normalisation)
        left = [min(context, s) for s, _ in batch]
        spans = [(s - lc, min(e + context, source.length)) for (s, e), lc in zip(batch, left)]
        lengths = torch.tensor([hi - lo for lo, hi in spans])
        audio = torch.stack([source.read(lo, lo + int(lengths.max())) for lo, _ in spans])  # tail is masked
        feats = model.encode({"audio": audio.to(device), "audio_lengths": lengths.to(device)}, needed={encoder})
        path = ctc.log_probs(feats[encoder]).argmax(-1).cpu()
        for row, (s, e), lc in zip(path, batch, left):
            first = lc // hop
            pieces.append(row[first: first + (e - s + hop - 1) // hop].numpy().astype(dtype))
        del feats, path
        release_freed_memory()
    return np.concatenate(pieces), shift


def segment_batches(source: AudioSource, segments: Sequence[Sequence[Word]], opts: LongFormOptions
                    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Batches of consecutive segments' audio (``segment_pad_s`` each side): first samples, padded audio
    (B, N), lengths (B,). A batch holds at most ``subtitle_batch`` segments and, padded, no more audio than
    a batch of first-pass windows, so peak memory stays that of the first pass whatever the file length.
    N is rounded up to a multiple of ``width_step_s``: with a few distinct shapes the allocator reuses
    freed blocks, where a new shape per batch let the heap's peak creep up with the file length."""
    sr, pad = source.sample_rate, int(opts.segment_pad_s * source.sample_rate)
    step = max(1, int(opts.width_step_s * sr))

    def padded(n: int) -> int:  # n samples rounded up to a whole number of steps
        return -(-n // step) * step

    budget = opts.batch_size * int((opts.chunk_s + 2 * opts.context_s) * sr)
    spans = [(max(0, int(seg[0].start * sr) - pad), min(source.length, int(seg[-1].end * sr) + pad))
             for seg in segments]
    batch: list[tuple[int, int]] = []
    for span in [*spans, None]:
        longest = padded(max([hi - lo for lo, hi in batch + [span or (0, 0)]]))
        if batch and (span is None or len(batch) == opts.subtitle_batch or (len(batch) + 1) * longest > budget):
            clips = [source.read(lo, hi) for lo, hi in batch]
            width = padded(max(map(len, clips)))
            audio = torch.stack([torch.nn.functional.pad(c, (0, width - len(c))) for c in clips])
            yield [lo for lo, _ in batch], audio, torch.tensor([len(c) for c in clips])
            release_freed_memory()
            batch = []
        if span is not None:
            batch.append(span)


@torch.no_grad()
def redecode_segments(model, source: AudioSource, segments: Sequence[Sequence[Word]], head: str = "verbatim",
                      opts: LongFormOptions = LongFormOptions(), lm=None) -> list[list[Word]]:
    """Second pass: CTC over each pause-delimited segment's own audio, word times shifted to the file —
    greedy, or with ``lm`` and ``opts.lm_weight > 0`` prefix beam search fused with the LM, its words timed
    by Viterbi alignment. A segment is split again at the pauses this pass finds (the first pass over a
    window of several utterances often emits characters across the pause between them). A segment keeps only
    the words centred on its side of the middle of the pauses to its neighbours (``own_words``): the padded
    clips of close segments overlap, and a word decoded in both would be written twice, in overlapping cues.
    Segments longer than ``max_segment_s`` (one long word) or that come back empty keep their first-pass
    words."""
    from decoders.ctc import CTCDecodingOptions
    from decoders.search import DecodingOptions

    ctc, shift, encoder = _ctc_branch(model, head)
    device = next(model.parameters()).device
    tokenizer = model.tokenizer(head)
    fused = lm is not None and opts.lm_weight > 0
    attention = opts.attention_text and hasattr(model.decoders[head], "attention")  # checked in transcribe()
    beam = CTCDecodingOptions(beam_size=opts.ctc_beam, lm=lm, lm_weight=opts.lm_weight,
                              insertion_bonus=opts.insertion_bonus, frame_shift_s=shift) if fused else None
    out = [[list(seg)] for seg in segments]
    todo = [i for i, seg in enumerate(segments) if seg[-1].end - seg[0].start <= opts.max_segment_s]
    # each segment owns the audio up to the middle of the pauses on either side: a padded clip also holds a
    # close neighbour's first or last sounds, which that neighbour's own pass decodes
    cuts = [(a[-1].end + b[0].start) / 2 for a, b in zip(segments, segments[1:])]
    owned = list(zip([-np.inf, *cuts], [*cuts, np.inf]))
    targets = iter(todo)
    for firsts, audio, lengths in segment_batches(source, [segments[i] for i in todo], opts):
        batch = {"audio": audio.to(device), "audio_lengths": lengths.to(device)}
        feats = model.encode(batch, needed={encoder})[encoder]
        log_probs = ctc.log_probs(feats)
        frames = feats.lengths.tolist() if feats.lengths is not None else [feats.x.shape[1]] * len(feats.x)
        if fused:
            decoded = [span_words(h.tokens, h.timestamps, tokenizer, opts.max_pause_s)
                       for h in ctc.decode_log_probs(log_probs, torch.tensor(frames), beam)]
        else:
            paths = log_probs.argmax(-1).cpu()
            decoded = [ctc_words(path[:n].numpy(), shift, tokenizer, max_gap_s=opts.max_pause_s)
                       for path, n in zip(paths, frames)]
        if attention:  # the attention branch's words where CTC can time them (else its own, above)
            hyps = model.decoders[head].decode(feats, DecodingOptions(draft="ctc"))
            timed = [aligned_words(ctc, lp[:n], h.tokens, shift, tokenizer, opts.max_pause_s)
                     for lp, n, h in zip(log_probs, frames, hyps)]
            decoded = [own if own is not None else words for own, words in zip(timed, decoded)]
        edges = opts.start_speech_min > 0 or opts.end_speech_min > 0
        speech = (1 - log_probs[..., ctc.blank].exp()).cpu().numpy() if edges else None
        for row, (first, words, target, n) in enumerate(zip(firsts, decoded, targets, frames)):
            offset = first / source.sample_rate
            lo, hi = owned[target][0] - offset, owned[target][1] - offset
            words = own_words(words, lo, hi)
            if not words:
                continue
            pieces = split_segments(words, opts.max_pause_s, opts.max_segment_s)
            if speech is not None:
                pieces = extend_edges(pieces, speech[row, :n], shift, opts.start_speech_min, opts.end_speech_min,
                                      opts.end_extend_max_s)
            out[target] = [[Word(w.text, w.start + offset, w.end + offset) for w in own_words(piece, lo, hi)]
                           for piece in pieces]
    return [piece for pieces in out for piece in pieces]


@torch.no_grad()
def subtitle_segments(model, source: AudioSource, segments: Sequence[Sequence[Word]], head: str = "subtitle",
                      opts: LongFormOptions = LongFormOptions()) -> list[str]:
    """Decode the subtitle head on each segment's audio, a batch of segments at a time."""
    from recipes.asr_subtitle.evaluate import decoding_options

    options = decoding_options(model.spec_decoders[head]["type"])
    if opts.speculative:  # CopySpec across heads (ZooModel.generate)
        options = replace(options, draft="verbatim")
    device = next(model.parameters()).device
    texts = []
    for _, audio, lengths in segment_batches(source, segments, opts):
        out = model.generate({"audio": audio.to(device), "audio_lengths": lengths.to(device)}, heads=head,
                             options={head: options})
        texts += [h.text for h in out[head]]
    return texts


def transcribe(model, audio, out_dir: str | Path, formats: Sequence[str] = ("srt",), name: str | None = None,
               cue_options: CueOptions = CueOptions(), opts: LongFormOptions = LongFormOptions(),
               audio_sample_rate: int | None = None, plot: bool = False, lm=None) -> dict[str, list[Path]]:
    """Write ``<name>.verbatim.<fmt>`` and, when the model has a subtitle head, ``<name>.subtitle.<fmt>``.
    ``lm`` (e.g. the model folder's ``verbatim_lm.json``) with ``opts.lm_weight > 0`` fuses it into the
    second pass."""
    if opts.lm_weight > 0 and (lm is None or not opts.redecode):
        raise ValueError("lm_weight > 0 fuses an LM into the second pass: pass lm= (zoo.lm.NGramLM.load("
                         "'<model>/verbatim_lm.json')) and keep redecode=True")
    if model.spec_decoders.get("verbatim", {}).get("type") not in ("ctc", "ctc_attention"):
        raise ValueError("long-form transcription needs a CTC or hybrid 'verbatim' head for timing; "
                         f"this model has heads {dict((h, c['type']) for h, c in model.spec_decoders.items())}. "
                         "Use a model trained from an asr_verbatim_*, asr_shared_*, asr_cascaded_*, asr_ctc_*, "
                         "asr_hybrid_* or asr_maskctc_* preset")
    if opts.attention_text and (model.spec_decoders["verbatim"]["type"] != "ctc_attention" or opts.lm_weight > 0
                                or not opts.redecode):
        raise ValueError("attention_text (--attention-text) takes the second pass's text from a hybrid verbatim head's "
                         "attention decoder: it needs a ctc_attention head, the second pass (no --one-pass) and no "
                         "--lm-weight")
    if opts.speculative and model.spec_decoders.get("subtitle", {}).get("type") != "transformer_decoder":
        raise ValueError("speculative (--speculative) drafts an AR subtitle head from the verbatim text: this model "
                         "has no transformer_decoder 'subtitle' head (use an asr_cascaded_* model, or drop it)")
    model.eval()
    sr = int(model.meta.get("sample_rate", 16000))
    source = AudioSource(audio, sr, audio_sample_rate)
    name = name or (Path(audio).stem if isinstance(audio, (str, Path)) else "audio")
    path, shift = buffered_ctc_path(model, source, "verbatim", opts)
    words = ctc_words(path, shift, model.tokenizer("verbatim"), max_gap_s=opts.max_pause_s)
    segments = split_segments(words, opts.max_pause_s, opts.max_segment_s)
    if opts.redecode:
        segments = redecode_segments(model, source, segments, "verbatim", opts, lm)
        words = [w for seg in segments for w in seg]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"verbatim": []}
    texts = [" ".join(w.text for w in seg) for seg in segments]
    for fmt in formats:
        written["verbatim"].append(write_transcript(out_dir / f"{name}.verbatim.{fmt}", fmt, segments, texts, cue_options))
    if "subtitle" in model.decoders and segments:
        subs = subtitle_segments(model, source, segments, "subtitle", opts)
        # one cue per segment: the subtitle words spread evenly over the segment's CTC time span
        sub_segments = []
        for seg, text in zip(segments, subs):
            tokens = text.split() or [""]
            step = (seg[-1].end - seg[0].start) / len(tokens)
            sub_segments.append([Word(t, seg[0].start + i * step, seg[0].start + (i + 1) * step)
                                 for i, t in enumerate(tokens)])
        written["subtitle"] = [write_transcript(out_dir / f"{name}.subtitle.{fmt}", fmt, sub_segments, subs,
                                                _no_gap_split(cue_options)) for fmt in formats]
    if plot:
        from zoo.plots import plot_alignment

        seconds = min(source.length / sr, 20.0)
        shown = [(w.text, w.start, w.end) for w in words if w.end <= seconds]
        written["plot"] = [plot_alignment(out_dir / f"{name}.alignment.png", source.read(0, int(seconds * sr)), sr,
                                          shown, title=f"{name}: first {seconds:.0f} s, CTC word alignment")]
    return written


def _no_gap_split(options: CueOptions) -> CueOptions:
    return CueOptions(options.max_line_width, options.max_line_count, max_gap=1e9, min_duration=options.min_duration)


def folder_lm(model_dir: str | Path):
    """The character LM that ``zoo eval asr_subtitle`` saves in a model folder, for ``--lm-weight``."""
    from recipes.asr_subtitle.evaluate import LM_FILE
    from zoo.lm import NGramLM

    path = Path(model_dir) / LM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--lm-weight needs the model folder's {LM_FILE} ({path} is missing); build it with "
                                f"`zoo eval asr_subtitle --model {model_dir} --lm-weight 0.6`")
    return NGramLM.load(path)


def main(args) -> int:
    from zoo.device import pick_device
    from zoo.graph import ZooModel

    device = pick_device(args.device)
    cue = CueOptions(max_line_width=args.max_line_width, max_line_count=args.max_line_count)
    for audio in args.audio:  # fail before the model loads
        if not Path(audio).is_file():
            raise FileNotFoundError(f"{audio}: no such audio file; check the path")
    if args.lm_weight > 0 and args.one_pass:
        raise ValueError("--lm-weight fuses the LM into the second pass; drop --one-pass")
    lm = folder_lm(args.model) if args.lm_weight > 0 else None
    model = ZooModel.from_pretrained(args.model).to(device)
    opts = LongFormOptions(chunk_s=args.chunk, context_s=args.context, redecode=not args.one_pass,
                           lm_weight=args.lm_weight, insertion_bonus=args.insertion_bonus,
                           max_pause_s=args.max_pause, start_speech_min=args.start_speech_min,
                           end_speech_min=args.end_speech_min, speculative=args.speculative,
                           attention_text=args.attention_text)
    for audio in args.audio:
        written = transcribe(model, audio, args.out, args.format, cue_options=cue, opts=opts, plot=args.plot, lm=lm)
        for track, paths in written.items():
            for p in paths:
                print(f"{track:>9}: {p}")
    return 0


def add_arguments(p) -> None:
    p.add_argument("model", help="a save_pretrained directory or a hub repo id")
    p.add_argument("audio", nargs="+", help="audio files (any length; resampled to the model's rate if needed)")
    p.add_argument("--format", nargs="+", default=["srt"], choices=["txt", "srt", "vtt", "json"])
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--max-line-width", type=int, default=42)
    p.add_argument("--max-line-count", type=int, default=2)
    p.add_argument("--chunk", type=float, default=16.0, help="seconds per window centre")
    p.add_argument("--context", type=float, default=2.0, help="seconds of context on each side")
    p.add_argument("--one-pass", action="store_true", help="keep the windowed CTC pass's words (skip decoding "
                   "each pause-delimited segment again on its own audio)")
    p.add_argument("--lm-weight", type=float, default=0.0, help="fuse the model folder's verbatim_lm.json into the "
                   "second pass (CTC prefix beam search, words timed by Viterbi alignment); 0: greedy")
    p.add_argument("--insertion-bonus", type=float, default=0.0, help="per-token bonus with --lm-weight")
    d = LongFormOptions()
    p.add_argument("--max-pause", type=float, default=d.max_pause_s, help="seconds of silence that end a cue")
    p.add_argument("--start-speech-min", type=float, default=d.start_speech_min, help="a cue starts earlier over "
                   "the frames before its first character whose non-blank posterior is at least this (0: off)")
    p.add_argument("--end-speech-min", type=float, default=d.end_speech_min, help="a cue ends later over the "
                   "frames after its last character whose non-blank posterior is at least this (0: off)")
    p.add_argument("--plot", action="store_true", help="also write a spectrogram + alignment PNG")
    p.add_argument("--speculative", action="store_true", help="decode an AR subtitle head with drafts copied from "
                   "the verbatim text (the same subtitles; faster where the two texts overlap)")
    p.add_argument("--attention-text", action="store_true", help="a hybrid model: the verbatim text of each "
                   "segment from its attention decoder (speculative, timed by CTC alignment), not its CTC branch")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else cpu), cpu, cuda or cuda:N")
