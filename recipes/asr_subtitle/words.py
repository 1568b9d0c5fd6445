"""Words with times from CTC output, and their grouping into pause-delimited segments (long-form
transcription, ``recipes.asr_subtitle.transcribe``): a best path's character runs give each word its first
and last emission; words split at spaces and at long pauses; segments group words between pauses and own
the words centred on their side of a neighbour; a segment's edges move over frames the model heard as speech
but did not write; and how far a transcript's cue boundaries lie from the reference ones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from zoo.subtitles import Word

__all__ = ["aligned_words", "boundaries_error", "ctc_words", "extend_edges", "own_words", "span_words",
           "split_segments"]


def ctc_words(path: np.ndarray, shift: float, tokenizer, blank: int = 0, max_gap_s: float | None = None) -> list[Word]:
    """Words with times from a best path: a word spans its first to last character emission.

    A character emitted more than ``max_gap_s`` after the previous one starts a new word even without a
    space: a small model often runs the last word of one sentence into the first of the next across a
    pause, and the pause, not the missing space, is where a subtitle cue must end."""
    path = np.asarray(path)
    starts = np.flatnonzero(np.r_[len(path) > 0, path[1:] != path[:-1]])  # one run of equal frames per emission
    ends = np.r_[starts[1:], len(path)]
    keep = path[starts] != blank
    spans = [(s * shift, e * shift) for s, e in zip(starts[keep].tolist(), ends[keep].tolist())]
    return span_words(path[starts[keep]].tolist(), spans, tokenizer, max_gap_s)


def span_words(tokens: Sequence[int], spans: Sequence[tuple[float, float]], tokenizer,
               max_gap_s: float | None = None) -> list[Word]:
    """Words from tokens with (start, end) seconds each (a best path's runs, or a beam-search hypothesis
    Viterbi-aligned), split at spaces and at pauses longer than ``max_gap_s``."""
    space = tokenizer.encode(" ")[0] if hasattr(tokenizer, "symbols") else None
    words, chars, start, end = [], [], None, None
    for tok, (t0, t1) in zip(tokens, spans):
        if tok == space or (chars and max_gap_s is not None and t0 - end > max_gap_s):
            if chars:
                words.append(Word(tokenizer.decode(chars), start, end))
            chars, start = [], None
        if tok != space:
            chars.append(tok)
            start = t0 if start is None else start
            end = t1
    if chars:
        words.append(Word(tokenizer.decode(chars), start, end))
    return words


def aligned_words(ctc, log_probs, tokens: Sequence[int], shift: float, tokenizer,
                  max_gap_s: float | None = None) -> list[Word] | None:
    """Words of a hypothesis from another decoder (a hybrid's attention branch), timed by Viterbi-aligning its
    tokens to the CTC log posteriors ``log_probs`` (T, V) of the same audio; None where CTC cannot align them
    (more tokens and repeats than frames, or a token CTC never emits)."""
    if not tokens:
        return []
    ids = torch.tensor([list(tokens)])
    try:
        ctc.check_targets(ids, torch.tensor([len(tokens)]), torch.tensor([log_probs.shape[0]]))
    except ValueError:
        return None
    spans = ctc.align_row(log_probs, list(tokens))
    return span_words(tokens, [(t.start * shift, t.end * shift) for t in spans], tokenizer, max_gap_s)


def split_segments(words: Sequence[Word], max_pause_s: float,
                   max_segment_s: float = float("inf")) -> list[list[Word]]:
    """Consecutive words grouped at pauses longer than ``max_pause_s``; a segment that would outgrow
    ``max_segment_s`` ends before the word that would make it so (speech without pauses still decodes
    in bounded pieces)."""
    segments: list[list[Word]] = []
    for w in words:
        last = segments[-1] if segments else None
        if last and w.start - last[-1].end <= max_pause_s and w.end - last[0].start <= max_segment_s:
            last.append(w)
        else:
            segments.append([w])
    return segments


def own_words(words: Sequence[Word], lo: float, hi: float) -> list[Word]:
    """The words whose centre lies in [lo, hi), their times clipped to it."""
    return [Word(w.text, max(w.start, lo), min(w.end, hi)) for w in words if lo <= (w.start + w.end) / 2 < hi]


def extend_edges(segments: Sequence[Sequence[Word]], speech: np.ndarray, shift: float, start_min: float,
                 end_min: float, max_s: float) -> list[list[Word]]:
    """Move each segment's end past the frames after its last character whose speech posterior
    (1 - P(blank), ``speech``, one per frame of the segment's own pass) stays >= ``end_min``, and its start
    back over the frames before its first character that stay >= ``start_min`` (0: that edge stays), each by
    at most ``max_s`` and never into a neighbouring segment. A small model often writes a word's first sounds
    and drops the rest ("frogs" -> "fr"), or drops a first vowel ("okay" -> "kay"); the frames it heard but
    did not write still carry non-blank mass, and a cue cut at its written characters is late to start or
    early to end (BENCHMARKS.md, long-form section)."""
    out: list[list[Word]] = []
    for i, seg in enumerate(segments):
        first, last = seg[0], seg[-1]
        start, end = first.start, last.end
        if end_min > 0:
            limit = segments[i + 1][0].start if i + 1 < len(segments) else len(speech) * shift
            t, stop = int(round(end / shift)), int(min(limit, end + max_s) / shift + 1e-6)
            while t < min(stop, len(speech)) and speech[t] >= end_min:
                t += 1
            end = max(end, t * shift)
        if start_min > 0:
            limit = out[-1][-1].end if out else 0.0
            t, stop = int(round(start / shift)), int(np.ceil(max(limit, start - max_s) / shift - 1e-6))
            while t - 1 >= stop and speech[t - 1] >= start_min:
                t -= 1
            start = min(start, t * shift)
        words = [Word(w.text, w.start, w.end) for w in seg]
        words[0] = Word(first.text, start, words[0].end)
        words[-1] = Word(words[-1].text, words[-1].start, end)
        out.append(words)
    return out


def boundaries_error(srt_or_segments, reference_json: str | Path) -> dict[str, float]:
    """Match every known utterance to the nearest cue start/end; report the errors in seconds."""
    ref = json.loads(Path(reference_json).read_text())["segments"]
    starts = np.array([c.start for c in srt_or_segments])
    ends = np.array([c.end for c in srt_or_segments])
    start_err = [float(np.min(np.abs(starts - r["start"]))) for r in ref]
    end_err = [float(np.min(np.abs(ends - r["end"]))) for r in ref]
    return {"start_median": float(np.median(start_err)), "end_median": float(np.median(end_err)),
            "start_within_150ms": float(np.mean(np.array(start_err) <= 0.15)),
            "end_within_150ms": float(np.mean(np.array(end_err) <= 0.15))}
