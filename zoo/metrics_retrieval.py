"""Retrieval metrics for brain decoding, always "among N" with N stated (never in-batch accuracy).

* :func:`topk_among` - query i's correct candidate is candidate i; top-k accuracy when each query
  ranks ``n`` candidates (its own plus ``n - 1`` others), averaged over random draws of the
  candidate set, as in MindEye's 300-way protocol (Scotti et al., NeurIPS 2023, §3.3).
* :func:`two_way_identification` - the fraction of (i, j) pairs for which the prediction i is more
  similar to its own target than to target j (chance 0.5; e.g. Ozcelik & VanRullen 2023, §2.4).
* :func:`rank_candidates` - the ranking the ``zoo decode-brain`` command prints.

Similarity is cosine (rows L2-normalised); for M/EEG segments the ranking equals Défossez et al.'s
(2023) score normalised by the candidate norm, since the query norm is constant per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class RetrievalResult:
    n: int                       # candidates per query
    top: dict[int, float]        # k -> accuracy in [0, 1]
    queries: int
    trials: int

    def row(self) -> dict:
        return {"n": self.n, "queries": self.queries, "trials": self.trials,
                **{f"top{k}": round(v, 4) for k, v in self.top.items()}}


def _check(queries: Tensor, candidates: Tensor) -> None:
    if queries.dim() != 2 or candidates.dim() != 2:
        raise ValueError(f"queries and candidates must be (N, D) embeddings; got {tuple(queries.shape)} "
                         f"and {tuple(candidates.shape)} (flatten token/time axes first)")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"embedding sizes differ: queries D={queries.shape[1]}, candidates D={candidates.shape[1]}; "
                         "both must live in the same target space")
    if not torch.isfinite(queries).all() or not torch.isfinite(candidates).all():
        raise ValueError("embeddings contain NaN or inf; check the model inputs")


def similarity(queries: Tensor, candidates: Tensor) -> Tensor:
    """(Q, C) cosine similarities."""
    return F.normalize(queries.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T


def topk_among(queries: Tensor, candidates: Tensor, n: int | None = None, ks: tuple[int, ...] = (1, 5),
               trials: int = 30, seed: int = 0) -> RetrievalResult:
    """Top-k accuracy when query i (row i) must find candidate i among ``n`` candidates.

    With ``n`` < len(candidates) each trial draws ``n`` random pairs and every query in the draw
    ranks that draw's ``n`` candidates; results are averaged over ``trials``. ``n=None`` uses all.
    """
    _check(queries, candidates)
    total = queries.shape[0]
    if candidates.shape[0] != total:
        raise ValueError(f"{total} queries but {candidates.shape[0]} candidates: row i of each must be a pair")
    n = total if n is None else int(n)
    if n > total or n < 2:
        raise ValueError(f"cannot rank among n={n} candidates with {total} pairs; use 2 <= n <= {total}")
    if max(ks) > n:
        raise ValueError(f"top-{max(ks)} needs at least {max(ks)} candidates, but the candidate set has {n}; "
                         f"add candidates or lower k")
    sims = similarity(queries, candidates)
    g = torch.Generator().manual_seed(seed)
    trials = 1 if n == total else trials
    hits = {k: 0.0 for k in ks}
    for _ in range(trials):
        idx = torch.randperm(total, generator=g)[:n] if n < total else torch.arange(total)
        s = sims[idx][:, idx]
        own = s.diagonal().unsqueeze(1)
        rank = (s > own).sum(1)                      # candidates scoring strictly better than the right one
        for k in ks:
            hits[k] += float((rank < k).float().mean())
    return RetrievalResult(n, {k: v / trials for k, v in hits.items()}, total, trials)


def two_way_identification(queries: Tensor, candidates: Tensor) -> float:
    """Mean over i of the fraction of j != i with sim(q_i, c_i) > sim(q_i, c_j); chance 0.5."""
    _check(queries, candidates)
    total = queries.shape[0]
    if candidates.shape[0] != total or total < 2:
        raise ValueError(f"two-way identification needs >= 2 (query, candidate) pairs; got {total} and {candidates.shape[0]}")
    s = similarity(queries, candidates)
    own = s.diagonal().unsqueeze(1)
    wins = (own > s).float().sum(1)                 # the diagonal never counts (own > own is False)
    return float((wins / (total - 1)).mean())


def rank_candidates(query: Tensor, candidates: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """Indices and cosine scores of the ``k`` best candidates for one query embedding (D,)."""
    if candidates.shape[0] < k:
        raise ValueError(f"the candidate set has {candidates.shape[0]} entries but top-{k} was asked for; "
                         f"add candidates or lower k (e.g. --top {candidates.shape[0]})")
    _check(query.reshape(1, -1), candidates)
    scores = similarity(query.reshape(1, -1), candidates)[0]
    top = scores.topk(k)
    return top.indices, top.values
