"""Caption and mask metrics, pure Python (no Java): corpus-level CIDEr-D and BLEU-4 as the COCO
caption evaluation computes them (tylin/coco-caption, packaged as ``pycocoevalcap``), mIoU and distinct-n.

Inputs are already tokenised: strings are lower-cased and split on whitespace (the grammar of this
recipe has no punctuation, so this equals the PTB tokenisation that pycocoevalcap runs through Java).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["bleu", "cider_d", "distinct_n", "mean_iou", "ngrams"]


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def ngrams(words: Sequence[str], n: int) -> Counter:
    """Counts of the 1..n-grams of ``words`` (tuples)."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists; give one list per hypothesis")
    if any(isinstance(r, str) or len(r) == 0 for r in references):
        raise ValueError("each entry of references must be a non-empty list of strings (the references of one item)")


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (Vedantam et al., CVPR 2015, §4 and the CIDEr-D variant of coco-caption), x1 as
    pycocoevalcap reports it (multiply by 100 for the usual "CIDEr-D 116" numbers).

    TF-IDF n-gram vectors with the document frequency taken over the *whole* reference corpus; per n,
    the similarity is ``sum_g min(h_g, r_g) * r_g / (|h| |r|)`` (clipping) times the Gaussian length
    penalty ``exp(-(l_h - l_r)^2 / (2 sigma^2))``; averaged over references and n and scaled by 10.
    As in ``cider_scorer.py``, the length ``l`` is the number of bigrams (words - 1).
    """
    _check(hypotheses, references)
    refs = [[ngrams(_tokens(r), n) for r in rs] for rs in references]
    hyps = [ngrams(_tokens(h), n) for h in hypotheses]
    df: Counter = Counter()
    for rs in refs:
        df.update({g for r in rs for g in r})
    log_n = math.log(float(len(refs)))

    def vec(counts: Counter):
        v = [defaultdict(float) for _ in range(n)]
        norm, length = [0.0] * n, 0
        for g, tf in counts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (log_n - math.log(max(1.0, df[g])))
            norm[k] += v[k][g] ** 2
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for hyp, rs in zip(hyps, refs):
        vh, nh, lh = vec(hyp)
        total = np.zeros(n)
        for r in rs:
            vr, nr, lr = vec(r)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(x, vr[k][g]) * vr[k][g] for g, x in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(float(total.mean()) / len(rs) * 10.0)
    return float(np.mean(scores))


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> float:
    """Corpus BLEU-n (Papineni et al., ACL 2002, §2) in [0, 1]: clipped n-gram precisions pooled over the
    corpus, geometric mean, brevity penalty against the *closest* reference length (coco-caption's
    ``option='closest'``; the average for a one-item corpus, as there; with its 1e-15 / 1e-9 smoothing of empty counts)."""
    _check(hypotheses, references)
    correct, total = [0] * n, [0] * n
    hyp_len, ref_len = 0, 0.0
    average = len(hypotheses) == 1  # coco-caption: 'average' reference length for a one-item corpus
    for h, rs in zip(hypotheses, references):
        words = _tokens(h)
        counts = ngrams(words, n)
        rlens = [len(_tokens(r)) for r in rs]
        best: Counter = Counter()
        for r in rs:
            for g, c in ngrams(_tokens(r), n).items():
                best[g] = max(best[g], c)
        hyp_len += len(words)
        ref_len += sum(rlens) / len(rlens) if average else min(rlens, key=lambda rl: (abs(rl - len(words)), rl))
        for k in range(n):
            total[k] += max(0, len(words) - k)
        for g, c in counts.items():
            correct[len(g) - 1] += min(c, best[g])
    tiny, small = 1e-15, 1e-9
    log_p = sum(math.log((correct[k] + tiny) / (total[k] + small)) for k in range(n)) / n
    ratio = (hyp_len + tiny) / (ref_len + small)
    bp = 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)
    return bp * math.exp(log_p)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al., NAACL 2016, §4.2): unique n-grams / all n-grams over ``texts``; 0 when none."""
    grams = [tuple(w[i:i + n]) for t in texts for w in [_tokens(t)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_iou(predictions, targets, threshold: float = 0.5) -> float:
    """Mean over masks of |P ∩ T| / |P ∪ T|; probabilities are binarised at ``threshold``; an empty
    prediction of an empty target counts 1."""
    ious = []
    for p, t in zip(predictions, targets):
        p, t = np.asarray(p), np.asarray(t).astype(bool)
        p = p >= threshold if p.dtype != bool else p
        if p.shape != t.shape:
            raise ValueError(f"prediction mask {p.shape} and target mask {t.shape} differ; resize the prediction")
        union = np.logical_or(p, t).sum()
        ious.append(1.0 if union == 0 else np.logical_and(p, t).sum() / union)
    if not ious:
        raise ValueError("mean_iou needs at least one mask pair")
    return float(np.mean(ious))
