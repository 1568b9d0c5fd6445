"""A token n-gram language model for CTC shallow fusion (the ``lm`` hook of ``decoders.ctc``).

Interpolated Kneser-Ney smoothing (Kneser & Ney, ICASSP 1995; the interpolated form of Chen & Goodman,
"An Empirical Study of Smoothing Techniques for Language Modeling", 1998, §3.5, eq. 17) over token ids, so
over characters for a character tokenizer: spaces are tokens, which is what repairs the word-boundary
merges a small character CTC model makes. Sentences are padded with ``order - 1`` begin symbols; the
model scores ``log P(token | previous order-1 tokens)``, the hook ``score(prefix, token)``.

We count in plain Python rather than call KenLM: ``lmplz`` does not install from PyPI and a character
model of a recipe's text (a few hundred kB) trains in well under a second. Saved as JSON next to a model.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["NGramLM"]

BOS = -1  # a context-only symbol, never predicted


class NGramLM:
    """Interpolated Kneser-Ney n-gram over token ids; ``discount`` is KN's absolute discount D."""

    cache_size = 200_000  # memoised probabilities kept at most (cleared when full)

    def __init__(self, order: int = 6, vocab_size: int = 0, discount: float = 0.75):
        if order < 1:
            raise ValueError(f"order={order}: an n-gram model needs order >= 1")
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount={discount}: Kneser-Ney's D must lie in (0, 1)")
        self.order, self.vocab_size, self.discount = order, vocab_size, discount
        self.counts: list[dict[tuple, Counter]] = [defaultdict(Counter) for _ in range(order)]
        self._cache: dict[tuple, float] = {}

    @classmethod
    def train(cls, sequences: Iterable[Sequence[int]], vocab_size: int, order: int = 6,
              discount: float = 0.75) -> NGramLM:
        """Count highest-order n-grams; lower orders get KN continuation counts (distinct left contexts)."""
        lm = cls(order, vocab_size, discount)
        top = lm.counts[order - 1]
        for seq in sequences:
            padded = [BOS] * (order - 1) + [int(t) for t in seq]
            for i in range(order - 1, len(padded)):
                top[tuple(padded[i - order + 1: i])][padded[i]] += 1
        if not top:
            raise ValueError("the language model got no training tokens; pass non-empty token sequences")
        lm._freeze()
        return lm

    def _freeze(self) -> None:
        """Lower orders from the highest: KN continuation counts N1+(. context token); totals per context."""
        for n in range(self.order - 1, 0, -1):
            lower = self.counts[n - 1]
            for context, nexts in self.counts[n].items():
                for token in nexts:
                    lower[context[1:]][token] += 1
        self.totals = [{c: sum(n.values()) for c, n in level.items()} for level in self.counts]
        self._cache.clear()

    def _prob(self, context: tuple, token: int) -> float:
        key = (context, token)
        if key in self._cache:
            return self._cache[key]
        n = len(context)
        if n == 0:
            lower = 1.0 / max(self.vocab_size, 1)  # uniform base distribution
        else:
            lower = self._prob(context[1:], token)
        nexts = self.counts[n].get(context)
        if not nexts:
            p = lower
        else:
            total = self.totals[n][context]
            p = (max(nexts.get(token, 0) - self.discount, 0.0) + self.discount * len(nexts) * lower) / total
        if len(self._cache) >= self.cache_size:  # bounded: long-form decoding must not grow memory with length
            self._cache.clear()
        self._cache[key] = p
        return p

    def score(self, prefix: Sequence[int], token: int) -> float:
        """log P(token | the last order-1 tokens of prefix), natural log."""
        k = self.order - 1
        context = ([BOS] * k + [int(t) for t in prefix])[-k:] if k else []
        return math.log(self._prob(tuple(context), int(token)))

    def log_prob(self, sequence: Sequence[int]) -> float:
        return sum(self.score(sequence[:i], t) for i, t in enumerate(sequence))

    def save(self, path: str | Path) -> Path:
        top = {" ".join(map(str, c)): dict(n) for c, n in self.counts[self.order - 1].items()}
        Path(path).write_text(json.dumps(dict(order=self.order, vocab_size=self.vocab_size,
                                              discount=self.discount, counts=top)))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> NGramLM:
        data = json.loads(Path(path).read_text())
        lm = cls(data["order"], data["vocab_size"], data["discount"])
        top = lm.counts[lm.order - 1]
        for context, nexts in data["counts"].items():
            top[tuple(int(t) for t in context.split())] = Counter({int(t): c for t, c in nexts.items()})
        lm._freeze()
        return lm
