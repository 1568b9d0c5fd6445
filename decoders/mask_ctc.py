"""Mask-CTC: non-autoregressive ASR by refining a CTC hypothesis with a conditional masked LM (Higuchi et
al., 2020, "Mask CTC: Non-Autoregressive End-to-End ASR with CTC and Mask Predict", §3; ESPnet's
``MaskCTCInference``).

- Training (§3.1): the CTC head and a Mask-Predict (CMLM) decoder share the encoder,
  ``loss = ctc_weight * L_ctc + (1 - ctc_weight) * L_mlm`` (here the MLM is a third loss of the hybrid
  CTC/attention head, ``ctc_attention(mlm_weight=...)``, so one model decodes all three ways).
- Decoding (§3.2): greedy CTC gives the tokens and, per token, its confidence (the highest frame posterior
  of its run); tokens below ``threshold`` (P_thres, 0.999 in the paper) are masked and the MLM fills them
  "easy first": over ``min(K, N)`` passes for N masks, each pass fixes the ``N // passes`` masks it is
  surest of and the last pass fixes the rest. The length is the CTC hypothesis's; a hypothesis with no
  mask costs no MLM pass, and each pass runs only the rows that still hold masks.
- ``ctc_weight`` (ours, off by default) adds the CTC posteriors of the masked run to the MLM's choice:
  the MLM alone is often less sure of a token than CTC was, and a small model's MLM is weak.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.contract import Features, Hypothesis

__all__ = ["MaskCTCOptions", "ctc_tokens_with_confidence", "mask_ctc_decode"]


@dataclass(frozen=True)
class MaskCTCOptions:
    threshold: float = 0.999   # P_thres: CTC tokens less confident than this are masked and re-predicted
    iterations: int = 10       # K: MLM passes at most
    ctc_weight: float = 0.0    # > 0: a masked token is re-predicted by log p_MLM + ctc_weight * (its best CTC log
    #                            posterior over the frames of the masked run); not in the paper, which uses p_MLM

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a probability in [0, 1], got {self.threshold}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.ctc_weight < 0:
            raise ValueError(f"ctc_weight must be >= 0 (0 = the paper's MLM-only fill), got {self.ctc_weight}")


def ctc_tokens_with_confidence(log_probs: Tensor, frames: Tensor, blank: int,
                               run_log_probs: bool = False) -> tuple[Tensor, ...]:
    """Greedy CTC over (B, T, V) log probs: tokens (B, L) padded with ``blank``, lengths (B,) and each
    token's confidence (B, L), the highest posterior over the frames of its run (§3.2). With
    ``run_log_probs`` also (B, L, V): every vocabulary entry's highest log posterior over each token's run."""
    best, path = log_probs.max(-1)
    rows = []
    for b in range(path.shape[0]):
        p, s = path[b, : int(frames[b])], best[b, : int(frames[b])]
        tok, run = torch.unique_consecutive(p, return_inverse=True)       # run index of every frame
        conf = s.new_full((len(tok),), float("-inf")).scatter_reduce(0, run, s, "amax")
        keep = tok != blank
        runs = None
        if run_log_probs:
            lp = log_probs[b, : int(frames[b])]
            runs = lp.new_full((len(tok), lp.shape[-1]), float("-inf")).scatter_reduce(
                0, run[:, None].expand_as(lp), lp, "amax")[keep]
        rows.append((tok[keep], conf[keep].exp(), runs))
    width = max([len(t) for t, _, _ in rows] + [1])
    tokens = path.new_full((len(rows), width), blank)
    conf = best.new_ones(len(rows), width)
    for b, (t, c, _) in enumerate(rows):
        tokens[b, : len(t)], conf[b, : len(c)] = t, c
    out = (tokens, torch.tensor([len(t) for t, _, _ in rows], device=path.device), conf)
    if not run_log_probs:
        return out
    runs = log_probs.new_full((len(rows), width, log_probs.shape[-1]), float("-inf"))
    for b, (t, _, r) in enumerate(rows):
        runs[b, : len(t)] = r
    return (*out, runs)


@torch.no_grad()
def mask_ctc_decode(ctc, mlm, memory: Features, options: MaskCTCOptions = MaskCTCOptions()) -> list[Hypothesis]:
    """Mask-CTC decoding of ``memory`` with a ``CTCHead`` and a ``MaskPredictDecoder`` on the same encoder.
    Sets ``mlm.passes`` to the MLM passes it ran."""
    lp = ctc.log_probs(memory).float()
    frames = memory.lengths if memory.lengths is not None else torch.full((lp.shape[0],), lp.shape[1])
    tokens, lengths, conf, *run_lp = ctc_tokens_with_confidence(lp, frames, ctc.blank, options.ctc_weight > 0)
    run_lp = run_lp[0] if run_lp else None                            # (B, L, V) with ctc_weight > 0
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]
    masked = (conf < options.threshold) & valid
    total = masked.sum(1)                                             # N per row
    passes = total.clamp(max=options.iterations)                      # min(K, N) per row (on any device)
    per_pass = total // passes.clamp(min=1)                           # N // passes (0 without masks)
    d = mlm.dims
    banned = torch.tensor(sorted({d.pad_id, d.bos_id, d.eos_id, ctc.blank}), device=tokens.device)
    scores = conf.clamp(min=1e-30).log().masked_fill(~valid, 0.0)
    tokens = tokens.masked_fill(masked, mlm.mask_id)
    mlm.passes = 0
    if masked.any():
        mem, pad = mlm.memory(memory)
        for t in range(int(passes.max())):
            # only the rows that still hold masks run the MLM, trimmed to their longest hypothesis and memory
            rows = masked.any(1).nonzero().squeeze(1)
            width, span = int(lengths[rows].max()), int((~pad[rows]).sum(1).max())
            logp = mlm.token_logits(tokens[rows, :width], lengths[rows], mem[rows, :span],
                                    pad[rows, :span]).float().log_softmax(-1)
            if run_lp is not None:
                logp = logp + options.ctc_weight * run_lp[rows, :width]
            logp[..., banned] = float("-inf")
            best_lp, best = logp.max(-1)
            mlm.passes += 1
            # the per_pass surest masks of a row, or all that are left on its last pass
            todo = masked[rows, :width]
            surest = best_lp.masked_fill(~todo, float("-inf")).argsort(1, descending=True).argsort(1)
            fill = todo & ((surest < per_pass[rows, None]) | (t >= passes[rows] - 1)[:, None])
            tokens[rows, :width] = torch.where(fill, best, tokens[rows, :width])
            scores[rows, :width] = torch.where(fill, best_lp, scores[rows, :width])
            masked[rows, :width] = todo & ~fill
            if not masked.any():
                break
    return [Hypothesis(tokens[b, : int(n)].tolist(), score=float(scores[b, : int(n)].sum()))
            for b, n in enumerate(lengths.tolist())]
