"""CTC head (Graves et al., 2006): a linear projection to the vocabulary plus blank, trained with
``F.ctc_loss``; decoded greedily (batched best path) or by CTC prefix beam search (Graves, 2012, §7.5;
Hannun et al., 2014, "First-Pass LVCSR with Bi-directional RNNs", Algorithm 1) with an optional language
model hook; aligned with ``torchaudio.functional.forced_align`` (Viterbi) for per-token frame spans.

Targets: ``{"tokens": (B, L) long padded with 0, "lengths": (B,) long, optional "ids": list[str]}``.
The blank id is 0 unless set otherwise (tokenizers reserve 0 for blank/pad).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

from zoo.contract import Decoder, DecoderOutput, Features, Hypothesis, padding_mask
from zoo.layers import FastDropout
from zoo.registry import register_decoder

NEG_INF = float("-inf")


@dataclass(frozen=True)
class CTCDecodingOptions:
    """How ``CTCHead.decode`` searches.

    beam_size : 1 = batched greedy best path; > 1 = prefix beam search
    lm : a scoring hook, ``fn(prefix_tokens) -> log P(last token | the ones before)`` or an object with
        ``score(prefix, token) -> log prob``; added with weight ``lm_weight`` when a prefix grows
    insertion_bonus : added per emitted token (balances the LM's length penalty)
    prune_top_k, prune_threshold : per frame, only the k likeliest non-blank tokens with log prob >=
        threshold may extend a prefix (None disables either)
    timestamps : per-token (start, end) in seconds, from ``frame_shift_s`` (else the head's own value)
    n_best : > 1 returns a list of that many hypotheses per row
    tokenizer : anything with ``decode(ids) -> str`` to fill ``Hypothesis.text``
    """

    beam_size: int = 1
    lm: Any = None
    lm_weight: float = 0.0
    insertion_bonus: float = 0.0
    prune_top_k: int | None = 32
    prune_threshold: float | None = -12.0
    timestamps: bool = True
    frame_shift_s: float | None = None
    n_best: int = 1
    tokenizer: Any = None

    def __post_init__(self):
        if self.beam_size < 1 or self.n_best < 1:
            raise ValueError(f"beam_size ({self.beam_size}) and n_best ({self.n_best}) must be >= 1")
        if self.n_best > max(self.beam_size, 1) or (self.n_best > 1 and self.beam_size == 1):
            raise ValueError(f"n_best={self.n_best} needs beam_size >= n_best and > 1 (got {self.beam_size})")
        if self.lm is not None and not (callable(self.lm) or hasattr(self.lm, "score")):
            raise TypeError("lm must be a callable fn(prefix_tokens) -> log prob, "
                            "or have .score(prefix, token)")


def _lm_scorer(lm: Any) -> Callable[[tuple[int, ...], int], float]:
    if hasattr(lm, "score"):
        return lambda prefix, token: float(lm.score(list(prefix), token))
    return lambda prefix, token: float(lm(list(prefix) + [token]))


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(log_probs: Tensor, beam_size: int, blank: int = 0, lm: Any = None,
                       lm_weight: float = 0.0, insertion_bonus: float = 0.0, prune_top_k: int | None = None,
                       prune_threshold: float | None = None) -> list[tuple[tuple[int, ...], float, float]]:
    """CTC prefix beam search over one utterance's (T, V) log probs.

    Each prefix keeps log P(prefix, ends in blank) and log P(prefix, ends in a token), summed over all
    alignments (Hannun et al. 2014, Alg. 1). Returns up to ``beam_size`` (tokens, total score, CTC log prob),
    best first; total = CTC + lm_weight * LM + insertion_bonus * len.
    """
    lp = log_probs.detach().float().cpu()
    t_max, vocab = lp.shape
    cand = lp.clone()
    cand[:, blank] = NEG_INF
    k = vocab - 1 if prune_top_k is None else min(prune_top_k, vocab - 1)
    values, index = cand.topk(k, dim=-1) if k > 0 else (cand[:, :0], cand[:, :0].long())
    values, index, table = values.tolist(), index.tolist(), lp.tolist()
    score_lm = _lm_scorer(lm) if lm is not None and lm_weight != 0.0 else None
    lm_total: dict[tuple[int, ...], float] = {(): 0.0}

    def total(prefix, pb, pnb):
        return _logaddexp(pb, pnb) + lm_weight * lm_total[prefix] + insertion_bonus * len(prefix)

    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    for t in range(t_max):
        row, nxt = table[t], defaultdict(lambda: [NEG_INF, NEG_INF])
        tokens = [(c, v) for c, v in zip(index[t], values[t])
                  if prune_threshold is None or v >= prune_threshold]
        for prefix, (pb, pnb) in beams.items():
            both = _logaddexp(pb, pnb)
            stay = nxt[prefix]
            stay[0] = _logaddexp(stay[0], both + row[blank])
            last = prefix[-1] if prefix else None
            if last is not None:  # repeating the last token without a blank collapses into the same prefix
                stay[1] = _logaddexp(stay[1], pnb + row[last])
            for c, v in tokens:
                source = pb if c == last else both
                if source == NEG_INF:
                    continue
                new = prefix + (c,)
                if new not in lm_total:
                    lm_total[new] = lm_total[prefix] + (score_lm(prefix, c) if score_lm else 0.0)
                grown = nxt[new]
                grown[1] = _logaddexp(grown[1], source + v)
        alive = [kv for kv in nxt.items() if max(kv[1]) > NEG_INF]
        ranked = sorted(alive, key=lambda kv: total(kv[0], *kv[1]), reverse=True)
        beams = dict(ranked[:beam_size])
    out = [(p, total(p, pb, pnb), _logaddexp(pb, pnb)) for p, (pb, pnb) in beams.items()]
    return sorted(out, key=lambda r: r[1], reverse=True)


class CTCHead(Decoder):
    """Linear projection to ``vocab_size`` (blank included) and CTC; ``frame_shift_s`` (seconds per
    memory frame, e.g. the speech encoder's ``frame_shift_s``) turns frames into timestamps.

    ``inter_weight`` > 0 adds Intermediate CTC (Lee & Watanabe 2021, §3, ESPnet's ``interctc_weight``): the
    same projection scores the encoder's ``intermediates`` and the loss is ``(1 - w) * CTC(final) + w *
    mean(CTC(intermediate))``; the encoder must be built with ``intermediate_layers``."""

    label_keys = ("tokens", "lengths")

    def __init__(self, in_dim: int, vocab_size: int, blank: int = 0, reduction: str = "mean",
                 frame_shift_s: float | None = None, dropout: float = 0.0, inter_weight: float = 0.0):
        super().__init__()
        if not 0.0 <= inter_weight < 1.0:
            raise ValueError(f"inter_weight={inter_weight} must lie in [0, 1) (0 turns Intermediate CTC off)")
        self.inter_weight = inter_weight
        if not 0 <= blank < vocab_size:
            raise ValueError(f"blank id {blank} must be in 0..{vocab_size - 1} "
                             "(vocab_size includes the blank)")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction='{reduction}' is unknown; use 'mean', 'sum' or 'none' "
                             "(as F.ctc_loss)")
        self.proj, self.drop = nn.Linear(in_dim, vocab_size), FastDropout(dropout)
        self.vocab_size, self.blank, self.reduction = vocab_size, blank, reduction
        self.frame_shift_s = frame_shift_s

    # --- scores -----------------------------------------------------------------------------
    def logits(self, memory: Features) -> Tensor:
        return self.proj(self.drop(_one(memory).x))

    def log_probs(self, memory: Features) -> Tensor:
        """(B, T, V) log-softmax in float32."""
        return self._log_probs(_one(memory).x)

    def _log_probs(self, x: Tensor) -> Tensor:
        return self.proj(self.drop(x)).float().log_softmax(-1)

    # --- training ---------------------------------------------------------------------------
    def forward(self, memory: Features, targets: dict[str, Any]) -> DecoderOutput:
        memory = _one(memory)
        lp = self.log_probs(memory)
        frames = _frames(memory)
        tokens, lengths = targets["tokens"].long(), targets["lengths"].long()
        self.check_targets(tokens, lengths, frames, targets.get("ids"))
        loss = self._ctc_loss(lp, tokens, frames, lengths)
        if self.inter_weight > 0:
            if not memory.intermediates:
                raise ValueError("inter_weight > 0 (Intermediate CTC) needs intermediate encoder layers: build the "
                                 "encoder with intermediate_layers=[...] (e.g. the middle layer)")
            inter = [self._ctc_loss(self._log_probs(h), tokens, frames, lengths) for h in memory.intermediates]
            loss = (1 - self.inter_weight) * loss + self.inter_weight * torch.stack(inter).mean(0)
        return DecoderOutput(loss, lp, {"lengths": frames})

    def _ctc_loss(self, lp: Tensor, tokens: Tensor, frames: Tensor, lengths: Tensor) -> Tensor:
        return F.ctc_loss(lp.transpose(0, 1), tokens, frames, lengths, blank=self.blank,
                          reduction=self.reduction, zero_infinity=False)

    def check_targets(self, tokens: Tensor, lengths: Tensor, frames: Tensor,
                      ids: Sequence[str] | None = None) -> None:
        """Raise ValueError for rows CTC cannot align (L + adjacent repeats > frames) or with bad ids."""
        b, width = tokens.shape
        if lengths.shape != (b,) or frames.shape != (b,):
            raise ValueError(f"CTC targets: tokens {tuple(tokens.shape)}, lengths {tuple(lengths.shape)} and "
                             f"{tuple(frames.shape)} frame counts disagree on the batch size")
        valid = ~padding_mask(lengths, width)
        repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).sum(1)  # each needs a blank between
        bad_id = ((tokens == self.blank) | (tokens < 0) | (tokens >= self.vocab_size)) & valid
        stats = torch.stack([lengths, repeats, frames.to(lengths), bad_id.any(1).long()]).tolist()  # one sync
        name = (lambda i: f"'{ids[i]}'") if ids is not None else (lambda i: f"row {i}")
        if any(n > width or n < 0 for n in stats[0]):
            raise ValueError(f"CTC target lengths {stats[0]} must lie in 0..{width} (the padded token width)")
        too_long = [i for i in range(b) if stats[0][i] + stats[1][i] > stats[2][i]]
        if too_long:
            rows = "; ".join(f"utterance {name(i)}: {stats[0][i]} tokens + {stats[1][i]} repeats (each "
                             f"needs a blank between) > {stats[2][i]} frames" for i in too_long[:8])
            raise ValueError(f"CTC cannot align targets longer than the encoder output: {rows}. Use a lower "
                             "subsampling factor (e.g. 4 instead of 8) or shorter targets (a coarser "
                             "tokenizer, e.g. BPE instead of characters), or drop such utterances")
        wrong = [i for i in range(b) if stats[3][i]]
        if wrong:
            raise ValueError(f"CTC targets of {', '.join(name(i) for i in wrong[:8])} contain the blank id "
                             f"{self.blank} or ids outside 0..{self.vocab_size - 1}; tokenizers must reserve "
                             f"{self.blank} for blank and fit the head's vocab_size")

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, memory: Features, options: CTCDecodingOptions | None = None) -> list:
        """One Hypothesis per row (or a list of ``n_best`` per row); score = log prob of the result."""
        memory = _one(memory)
        return self.decode_log_probs(self.log_probs(memory), _frames(memory), options)

    def decode_log_probs(self, lp: Tensor, frames: Tensor, options: CTCDecodingOptions | None = None) -> list:
        """``decode`` from log probs already computed (B, T, V) and valid frames per row (B,)."""
        opts = options or CTCDecodingOptions()
        shift = opts.frame_shift_s if opts.frame_shift_s is not None else self.frame_shift_s
        if opts.beam_size == 1:
            results = self._greedy(lp, frames, shift if opts.timestamps else None)
        else:
            results, lp = [], lp.cpu()
            for b, n in enumerate(frames.tolist()):
                found = prefix_beam_search(lp[b, :n], opts.beam_size, self.blank, opts.lm, opts.lm_weight,
                                           opts.insertion_bonus, opts.prune_top_k, opts.prune_threshold)
                hyps = [Hypothesis(list(tokens), score=score) for tokens, score, _ in found[: opts.n_best]]
                if opts.timestamps and shift is not None:  # Viterbi spans of the chosen tokens
                    for h in hyps:
                        spans = self.align_row(lp[b, :n], h.tokens)
                        h.timestamps = [_seconds(s.start, s.end, shift) for s in spans]
                results.append(hyps if opts.n_best > 1 else hyps[0])
        if opts.tokenizer is not None:
            for r in results:
                for h in (r if isinstance(r, list) else [r]):
                    h.text = opts.tokenizer.decode(h.tokens)
        return results

    def _greedy(self, lp: Tensor, frames: Tensor, shift: float | None) -> list[Hypothesis]:
        """Batched best path: argmax per frame, merge repeats, drop blanks; spans are the token runs."""
        best, path = lp.max(-1)
        t = path.shape[1]
        valid = ~padding_mask(frames, t)
        change = torch.ones_like(valid)
        change[:, 1:] = path[:, 1:] != path[:, :-1]
        keep = change & valid & (path != self.blank)
        bounds = change | ~valid  # a run ends where the next one (or the padding) starts
        scores = (best * valid).sum(1).tolist()
        path, keep, bounds = path.cpu(), keep.cpu(), bounds.cpu()
        out = []
        for b in range(path.shape[0]):
            starts = keep[b].nonzero().squeeze(1)
            hyp = Hypothesis(path[b, starts].tolist(), score=scores[b])
            if shift is not None:
                edges = torch.cat([bounds[b].nonzero().squeeze(1), torch.tensor([t])])
                ends = edges[torch.searchsorted(edges, starts, right=True)]
                hyp.timestamps = [_seconds(s, e, shift) for s, e in zip(starts.tolist(), ends.tolist())]
            out.append(hyp)
        return out

    # --- alignment --------------------------------------------------------------------------
    @torch.no_grad()
    def align(self, memory: Features, tokens: Tensor | Sequence[Sequence[int]], lengths: Tensor | None = None,
              ids: Sequence[str] | None = None) -> list[list[AF.TokenSpan]]:
        """Viterbi forced alignment: per row, one ``TokenSpan(token, start, end, score)`` per token, frames
        ``[start, end)``, monotone; multiply by ``frame_shift_s`` for seconds (subtitle cue times)."""
        memory = _one(memory)
        lp, frames = self.log_probs(memory), _frames(memory)
        if not isinstance(tokens, Tensor):
            rows = [list(r) for r in tokens]
            lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
            tokens = torch.zeros(len(rows), max([1, *lengths.tolist()]), dtype=torch.long)
            for i, r in enumerate(rows):
                tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        lengths = lengths if lengths is not None else torch.full((tokens.shape[0],), tokens.shape[1])
        self.check_targets(tokens.long().to(lp.device), lengths.long().to(lp.device), frames, ids)
        return [self.align_row(lp[b, :n], tokens[b, :m].tolist())
                for b, (n, m) in enumerate(zip(frames.tolist(), lengths.tolist()))]

    def align_row(self, lp: Tensor, tokens: list[int]) -> list[AF.TokenSpan]:
        """Viterbi spans of ``tokens`` in one row's log posteriors ``lp`` (T, V): one TokenSpan per token."""
        if not tokens:
            return []
        target = torch.tensor([tokens], dtype=torch.int32, device=lp.device)
        path, scores = AF.forced_align(lp[None].float(), target, blank=self.blank)
        return AF.merge_tokens(path[0].cpu(), scores[0].exp().cpu(), blank=self.blank)


def _seconds(start: int, end: int, shift: float) -> tuple[float, float]:
    return round(start * shift, 6), round(end * shift, 6)


def _one(memory: Features | Sequence[Features]) -> Features:
    if isinstance(memory, Features):
        return memory
    if len(memory) == 1:
        return memory[0]
    raise ValueError(f"the CTC head reads one encoder but got {len(memory)}; give its node a single 'source'")


def _frames(memory: Features) -> Tensor:
    b, t = memory.x.shape[:2]
    if memory.lengths is None:
        return torch.full((b,), t, device=memory.x.device)
    return memory.lengths.long()


@register_decoder(task="asr")
def ctc(in_dim: int, vocab_size: int, blank: int = 0, reduction: str = "mean",
        frame_shift_s: float | None = None, dropout: float = 0.0, inter_weight: float = 0.0) -> CTCHead:
    """CTC head: Linear(in_dim, vocab_size) + CTC loss (+ Intermediate CTC with ``inter_weight``); greedy /
    prefix beam search with an LM hook; forced alignment."""
    return CTCHead(in_dim, vocab_size, blank, reduction, frame_shift_s, dropout, inter_weight)
