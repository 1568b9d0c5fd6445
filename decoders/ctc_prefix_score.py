"""Vectorised CTC prefix scoring for joint CTC/attention beam search (Watanabe et al., 2017, "Hybrid
CTC/Attention Architecture for End-to-End Speech Recognition", §3.2, Algorithm 2), batched over all
hypotheses and their candidate tokens at once as in ESPnet's ``CTCPrefixScoreTH`` (Seki et al., 2019).

For a prefix g the forward variables r_t^n(g), r_t^b(g) are the log-probabilities of having emitted g
by frame t with the last frame a token / a blank. Extending g by c (Algorithm 2):

    phi_t = r_t^b(g) + [r_t^n(g) if c != last(g)]                 (log-sum)
    r_t^n(g+c) = (r_{t-1}^n(g+c) (+) phi_{t-1}) + x_t(c)
    r_t^b(g+c) = (r_{t-1}^n(g+c) (+) r_{t-1}^b(g+c)) + x_t(blank)
    psi(g+c) = r_{start-1}^n(g+c) (+) sum_t phi_{t-1} x_t(c)       the prefix probability
    psi(g+eos) = r_T^n(g) (+) r_T^b(g)                            the full-sequence probability

Padded frames get log-prob 0 for blank and -inf otherwise, so every utterance's variables carry its
final values through to the common last frame. The score a beam adds for a token is
``psi(g+c) - psi(g)``; summed over a hypothesis this telescopes to its CTC prefix log-probability.
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.contract import padding_mask

__all__ = ["CTCPrefixScorer", "pre_beam_size"]

NEG_INF = float("-inf")


def pre_beam_size(beam_size: int, vocab_size: int) -> int:
    """Candidates scored per hypothesis: ESPnet's 1.5 x beam, and at least beam + 1, so that with
    ``ctc_weight=0`` the joint search keeps exactly the continuations plain beam search keeps."""
    return min(vocab_size, max(int(1.5 * beam_size), beam_size + 1))


class CTCPrefixScorer:
    """CTC prefix scores of every row's candidate continuations, fused into ``decoders.search.BeamSearch``.

    log_probs : (B, T, V) CTC log-probabilities; lengths : (B,) valid frames (None = all)
    weight : lambda of the joint score (1 - lambda) * attention + lambda * CTC
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor | None, blank: int, eos: int, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"ctc weight must lie in [0, 1], got {weight}")
        x = log_probs.float().transpose(0, 1).clone()  # (T, B, V)
        if lengths is not None:
            pad = padding_mask(lengths.to(x.device), x.shape[0]).T  # (T, B) True at padded frames
            x[pad] = NEG_INF
            x[..., blank] = x[..., blank].masked_fill(pad, 0.0)
        self.x, self.blank, self.eos, self.weight = x, blank, eos, weight
        frames, batch, _ = x.shape
        self.r = torch.full((frames, 2, batch), NEG_INF, device=x.device)  # [non-blank end, blank end]
        self.r[:, 1] = x[:, :, blank].cumsum(0)                             # the empty prefix: blanks only
        self.psi = torch.zeros(batch, device=x.device)                      # log P(prefix...) of each row
        self.last = torch.full((batch,), -1, dtype=torch.long, device=x.device)
        self.row_utt = torch.arange(batch, device=x.device)
        self.length = 0                                                     # tokens in every prefix
        self._cand = self._r_new = self._psi_new = None

    def score(self, cand: Tensor) -> Tensor:
        """Prefix log-probabilities psi(g + c) for candidates ``cand`` (N, C) of the N current rows."""
        x, r_prev = self.x, self.r
        frames, batch, vocab = x.shape
        rows, width = cand.shape
        xs = x.reshape(frames, batch * vocab)[:, (self.row_utt * vocab)[:, None] + cand]  # (T, N, C)
        xb = x[:, self.row_utt, self.blank][:, :, None]                                    # (T, N, 1)
        r_sum = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])                                # (T, N)
        phi = torch.where(cand[None] == self.last[None, :, None], r_prev[:, 1, :, None], r_sum[:, :, None])
        r = torch.full((frames, 2, rows, width), NEG_INF, device=x.device)
        if self.length == 0:
            r[0, 0] = xs[0]
        start = max(self.length, 1)
        for t in range(start, frames):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xs[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]
        if start <= frames:
            psi = torch.cat([r[start - 1, 0][None], phi[start - 1:-1] + xs[start:]]).logsumexp(0)
        else:  # more tokens than frames: no CTC path emits this prefix
            psi = torch.full((rows, width), NEG_INF, device=x.device)
        psi = torch.where(cand == self.eos, r_sum[-1][:, None], psi)
        psi = psi.masked_fill(cand == self.blank, NEG_INF)
        self._cand, self._r_new, self._psi_new = cand, r, psi
        return psi

    def joint(self, logp: Tensor, beam_size: int) -> Tensor:
        """Attention log-probs (N, V) -> (1 - w) att + w (psi(g+c) - psi(g)) on the pre-beam candidates
        (the top ``pre_beam_size`` attention tokens of each row; every token when w = 1, as the attention
        then has no say), -inf elsewhere."""
        width = logp.shape[-1] if self.weight == 1.0 else pre_beam_size(beam_size, logp.shape[-1])
        att, cand = logp.topk(width, dim=-1)
        dead = self.psi[:, None] == NEG_INF  # a prefix CTC cannot emit stays impossible
        gain = (self.score(cand) - self.psi[:, None]).masked_fill(dead, NEG_INF)
        if self.weight == 0.0:
            joint = att
        elif self.weight == 1.0:  # CTC alone; suppressed tokens stay suppressed
            joint = gain.masked_fill(att == NEG_INF, NEG_INF)
        else:
            joint = (1.0 - self.weight) * att + self.weight * gain
        return torch.full_like(logp, NEG_INF).scatter_(1, cand, joint)

    def select(self, rows: Tensor, tokens: Tensor, utts: Tensor | None = None) -> None:
        """New rows extend old ``rows`` by ``tokens``; ``utts`` keeps only those utterances."""
        if self._cand is None:
            raise RuntimeError("CTCPrefixScorer.select called before score()")
        col = (self._cand[rows] == tokens[:, None]).int().argmax(1)
        self.r = self._r_new[:, :, rows, col]
        self.psi = self._psi_new[rows, col]
        self.last = tokens
        self.length += 1
        if utts is not None:
            self.x = self.x[:, utts]
        utterances = self.x.shape[1]
        self.row_utt = torch.arange(utterances, device=self.x.device).repeat_interleave(rows.numel() // utterances)
