"""Subtitle and transcript writers: SRT, WebVTT, plain text and JSON.

Cues are built from word timings (e.g. from CTC forced alignment): words are packed greedily into
lines of at most ``max_line_width`` characters and cues of at most ``max_line_count`` lines, and a
cue also breaks at a pause longer than ``max_gap`` seconds or at a segment boundary — the
conventions of whisper's ``ResultWriter`` options and broadcast subtitling guidelines.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence


@dataclass
class Word:
    text: str
    start: float
    end: float


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class CueOptions:
    max_line_width: int = 42     # characters per line (EBU / Netflix guideline for Latin scripts)
    max_line_count: int = 2      # lines per cue
    max_gap: float = 1.0         # a silence longer than this (s) starts a new cue
    min_duration: float = 0.5    # cues shorter than this are extended when the next cue allows

    def __post_init__(self):
        for name in ("max_line_width", "max_line_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1; use e.g. max_line_width=42 "
                                 "(characters per line) and max_line_count=2 (lines per cue)")


def words_to_cues(segments: Sequence[Sequence[Word]], options: CueOptions = CueOptions()) -> list[Cue]:
    """Pack the words of each segment (an utterance or sentence) into cues; cues never span segments."""
    cues: list[Cue] = []
    for words in segments:
        cue: Cue | None = None
        for w in words:
            if w.end < w.start:
                raise ValueError(f"word {w.text!r} ends ({w.end:.3f}s) before it starts ({w.start:.3f}s)")
            if cue is not None and w.start - cue.end > options.max_gap:
                cues.append(cue)
                cue = None
            if cue is None:
                cue = Cue(w.start, w.end, [w.text])
                continue
            line = cue.lines[-1]
            if len(line) + 1 + len(w.text) <= options.max_line_width:
                cue.lines[-1] = f"{line} {w.text}"
            elif len(cue.lines) < options.max_line_count:
                cue.lines.append(w.text)
            else:
                cues.append(cue)
                cue = Cue(w.start, w.end, [w.text])
                continue
            cue.end = w.end
        if cue is not None:
            cues.append(cue)
    for cur, nxt in zip(cues, cues[1:] + [None]):
        if cur.end - cur.start < options.min_duration:
            limit = nxt.start if nxt is not None else cur.start + options.min_duration
            cur.end = min(cur.start + options.min_duration, max(limit, cur.end))
    return cues


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: Iterable[Cue]) -> str:
    blocks = [f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n" for i, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def to_vtt(cues: Iterable[Cue]) -> str:
    blocks = [f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def parse_srt(text: str) -> list[Cue]:
    """Read SRT back (used by tests and evaluation)."""
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) < 2:
            continue
        start, end = (t.strip() for t in lines[1].split("-->"))
        cues.append(Cue(_seconds(start), _seconds(end), lines[2:]))
    return cues


def _seconds(stamp: str) -> float:
    hms, ms = stamp.replace(".", ",").split(",")
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s + int(ms) / 1000


def write_transcript(path: str | Path, fmt: str, segments: Sequence[Sequence[Word]], texts: Sequence[str],
                     options: CueOptions = CueOptions()) -> Path:
    """Write ``txt`` (one segment per line), ``srt``, ``vtt`` or ``json`` (segments with words)."""
    path = Path(path)
    if fmt == "txt":
        body = "\n".join(texts) + "\n"
    elif fmt in ("srt", "vtt"):
        cues = words_to_cues(segments, options)
        body = to_srt(cues) if fmt == "srt" else to_vtt(cues)
    elif fmt == "json":
        body = json.dumps([
            {"text": t, "start": ws[0].start if ws else None, "end": ws[-1].end if ws else None,
             "words": [asdict(w) for w in ws]} for t, ws in zip(texts, segments)
        ], indent=2)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose txt, srt, vtt or json")
    path.write_text(body, encoding="utf-8")
    return path
