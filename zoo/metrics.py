"""Text metrics with a stated normaliser: WER/CER through jiwer, corpus BLEU through torchmetrics.

Normaliser (``normalize_text``): Unicode NFKC, lower case, digits kept, every character that is
not a letter, digit, apostrophe or space removed (hyphens become spaces), whitespace collapsed. It
is applied to references and hypotheses alike before WER/CER; BLEU for subtitles is computed on the
raw cased, punctuated text (sacreBLEU-style 13a tokenisation), since casing and punctuation are part
of a subtitle.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import jiwer

_DROP = re.compile(r"[^\w' ]+", flags=re.UNICODE)


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("-", " ").replace("_", " ")
    text = _DROP.sub(" ", text)
    return " ".join(text.split())


def _prepare(refs: Sequence[str], hyps: Sequence[str], normalize: bool) -> tuple[list[str], list[str]]:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses; pass one hypothesis per reference")
    if not refs:
        raise ValueError("no references to score")
    f = normalize_text if normalize else (lambda t: t)
    refs = [f(r) for r in refs]
    hyps = [f(h) for h in hyps]
    empty = [i for i, r in enumerate(refs) if not r.strip()]
    if empty:
        raise ValueError(f"references {empty[:5]} are empty after normalisation; WER is undefined for them")
    return refs, hyps


def wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    """Corpus word error rate (total edits / total reference words), in [0, inf)."""
    r, h = _prepare(refs, hyps, normalize)
    return float(jiwer.wer(r, h))


def cer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    """Corpus character error rate."""
    r, h = _prepare(refs, hyps, normalize)
    return float(jiwer.cer(r, h))


def bleu(refs: Sequence[str], hyps: Sequence[str], n_gram: int = 4) -> float:
    """Corpus sacreBLEU (13a tokenisation, cased) in [0, 100], one reference per hypothesis."""
    from torchmetrics.functional.text import sacre_bleu_score

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    return 100.0 * float(sacre_bleu_score(list(hyps), [[r] for r in refs], n_gram=n_gram, tokenize="13a"))
