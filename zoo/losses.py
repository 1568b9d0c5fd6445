"""Separation objectives: SI-SNR, its pairwise matrix, permutation-invariant training and MixIT.

- SI-SNR (Le Roux et al., "SDR -- half-baked or well done?", ICASSP 2019, eq. (4); Luo & Mesgarani,
  Conv-TasNet, TASLP 2019, §3.2 eq. (12)): zero-mean signals, target projected onto the estimate's
  reference, ``10 log10 |s_target|^2 / |e_noise|^2``. Same epsilon placement as torchmetrics'
  ``scale_invariant_signal_noise_ratio`` so the two agree to float precision.
- PIT (Yu et al., "Permutation invariant training...", ICASSP 2017; Kolbæk et al. 2017 utterance-level
  PIT): the best one-to-one assignment of estimates to references, by exhaustive search over the
  C! permutations for C <= 3 and by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
  beyond, since the objective is a sum over matched pairs.
- MixIT (Wisdom et al., "Unsupervised sound separation using mixture invariant training", NeurIPS
  2020, §3 eq. (3)): estimates are assigned to the reference *mixtures* by a binary matrix A
  (each estimate to exactly one mixture), searched exhaustively over the M^C matrices, with the
  thresholded negative SNR of §4 (tau = 10^(-SNR_max/10), SNR_max = 30 dB).

Permutation convention (as torchmetrics): ``perm[b, i]`` is the estimate matched to reference ``i``,
so ``reorder(estimates, perm)`` lines the estimates up with the references.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "EXHAUSTIVE_MAX_SOURCES",
    "MixITResult",
    "PITResult",
    "mixit",
    "pairwise_si_snr",
    "pit_from_matrix",
    "pit_si_snr",
    "reorder",
    "si_snr",
    "thresholded_snr",
]

EXHAUSTIVE_MAX_SOURCES = 3  # above this, Hungarian assignment (C! grows too fast)


@dataclass
class PITResult:
    loss: Tensor  # scalar: negative SI-SNR (dB) of the best assignment, averaged over sources and rows
    perm: Tensor  # (B, C) long: estimate index matched to each reference
    metric: Tensor  # (B,) per-row mean SI-SNR (dB) of the best assignment


@dataclass
class MixITResult:
    loss: Tensor  # scalar: mean over rows of the summed negative SNR over mixtures
    assignment: Tensor  # (B, M, C) 0/1: estimate c is added into mixture m
    remixed: Tensor  # (B, M, T) the best remix of the estimates


def _check(estimates: Tensor, references: Tensor, what: str) -> None:
    if estimates.shape != references.shape:
        raise ValueError(
            f"{what}: estimates {tuple(estimates.shape)} and references {tuple(references.shape)} differ in "
            "shape; trim or pad the estimates to the references' length first"
        )


def _valid_mask(lengths: Tensor | None, like: Tensor) -> Tensor | None:
    """(B, 1, ..., T) float mask of valid samples, broadcastable to ``like`` (B, ..., T)."""
    if lengths is None:
        return None
    if lengths.shape != like.shape[:1]:
        raise ValueError(
            f"lengths has shape {tuple(lengths.shape)}; expected ({like.shape[0]},): one per row"
        )
    steps = torch.arange(like.shape[-1], device=like.device)
    mask = (steps[None, :] < lengths.to(like.device)[:, None]).to(like.dtype)
    return mask.view(like.shape[0], *([1] * (like.dim() - 2)), like.shape[-1])


def _zero_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x - x.mean(-1, keepdim=True)
    mean = (x * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)
    return (x - mean) * mask


def si_snr(
    estimates: Tensor, references: Tensor, lengths: Tensor | None = None, zero_mean: bool = True
) -> Tensor:
    """Scale-invariant SNR in dB over the last axis; (..., T) -> (...). ``lengths`` (B,) masks padding."""
    _check(estimates, references, "si_snr")
    eps = torch.finfo(estimates.dtype).eps
    mask = _valid_mask(lengths, estimates)
    if zero_mean:
        estimates, references = _zero_mean(estimates, mask), _zero_mean(references, mask)
    elif mask is not None:
        estimates, references = estimates * mask, references * mask
    alpha = ((estimates * references).sum(-1, keepdim=True) + eps) / (
        references.pow(2).sum(-1, keepdim=True) + eps
    )
    target = alpha * references
    noise = target - estimates
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def pairwise_si_snr(estimates: Tensor, references: Tensor, lengths: Tensor | None = None) -> Tensor:
    """(B, C, T) x (B, C, T) -> (B, C_ref, C_est): SI-SNR of every estimate against every reference."""
    if estimates.dim() != 3 or references.dim() != 3 or estimates.shape[::2] != references.shape[::2]:
        raise ValueError(
            f"pairwise_si_snr wants (B, C, T) estimates and references with equal B and T; got "
            f"{tuple(estimates.shape)} and {tuple(references.shape)}"
        )
    est = estimates[:, None, :, :]  # (B, 1, C_est, T)
    ref = references[:, :, None, :]  # (B, C_ref, 1, T)
    mask = _valid_mask(lengths, est)  # (B, 1, 1, T) or None
    eps = torch.finfo(estimates.dtype).eps
    est, ref = _zero_mean(est, mask), _zero_mean(ref, mask)
    alpha = ((est * ref).sum(-1, keepdim=True) + eps) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = target - est
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def _permutations(n: int, device) -> Tensor:
    return torch.tensor(list(itertools.permutations(range(n))), device=device)


def pit_from_matrix(metric: Tensor, maximize: bool = True, method: str = "auto") -> tuple[Tensor, Tensor]:
    """Best one-to-one assignment on a (B, C_ref, C_est) metric matrix.

    Returns ``(best, perm)``: (B,) the mean metric over the matched pairs (differentiable) and (B, C)
    the estimate index per reference. ``method``: "auto" (exhaustive for C <= 3, Hungarian beyond),
    "exhaustive" or "hungarian".
    """
    if metric.dim() != 3 or metric.shape[1] != metric.shape[2]:
        raise ValueError(f"PIT needs a square (B, C, C) metric matrix; got {tuple(metric.shape)}")
    if method not in ("auto", "exhaustive", "hungarian"):
        raise ValueError(f"unknown PIT method {method!r}; use 'auto', 'exhaustive' or 'hungarian'")
    n = metric.shape[1]
    if method == "exhaustive" or (method == "auto" and n <= EXHAUSTIVE_MAX_SOURCES):
        perms = _permutations(n, metric.device)  # (P, C)
        index = perms.T[None].expand(metric.shape[0], n, perms.shape[0])  # (B, C, P)
        scores = metric.gather(2, index).mean(1)  # (B, P)
        best = scores.argmax(1) if maximize else scores.argmin(1)
        perm = perms[best]
    else:
        from scipy.optimize import linear_sum_assignment

        rows = metric.detach().float().cpu().numpy()
        perm = torch.stack(
            [torch.as_tensor(linear_sum_assignment(m, maximize=maximize)[1]) for m in rows]
        ).to(metric.device)
    return metric.gather(2, perm[:, :, None]).squeeze(2).mean(1), perm


def pit_si_snr(
    estimates: Tensor, references: Tensor, lengths: Tensor | None = None, method: str = "auto"
) -> PITResult:
    """Utterance-level PIT with negative SI-SNR: the loss of Conv-TasNet (§3.2)."""
    if estimates.shape != references.shape:
        raise ValueError(
            f"PIT: estimates {tuple(estimates.shape)} vs references {tuple(references.shape)}; both must be "
            "(B, n_src, T) with the same number of sources and samples"
        )
    best, perm = pit_from_matrix(
        pairwise_si_snr(estimates, references, lengths), maximize=True, method=method
    )
    return PITResult(-best.mean(), perm, best)


def reorder(estimates: Tensor, perm: Tensor) -> Tensor:
    """Line estimates (B, C, ...) up with the references: ``out[b, i] = estimates[b, perm[b, i]]``."""
    index = perm.view(*perm.shape, *([1] * (estimates.dim() - 2))).expand(*perm.shape, *estimates.shape[2:])
    return estimates.gather(1, index)


def thresholded_snr(estimates: Tensor, references: Tensor, snr_max: float = 30.0) -> Tensor:
    """SNR with a soft ceiling (MixIT §4): ``10 log10 |y|^2 / (|y - y_hat|^2 + tau |y|^2)`` over T."""
    tau = 10 ** (-snr_max / 10)
    power = references.pow(2).sum(-1)
    error = (references - estimates).pow(2).sum(-1)
    eps = torch.finfo(estimates.dtype).eps
    return 10 * torch.log10((power + eps) / (error + tau * power + eps))


def mixit(estimates: Tensor, mixtures: Tensor, snr_max: float = 30.0) -> MixITResult:
    """Mixture invariant training: (B, C, T) estimates against (B, M, T) mixtures, M^C remixes searched."""
    if estimates.dim() != 3 or mixtures.dim() != 3 or estimates.shape[::2] != mixtures.shape[::2]:
        raise ValueError(
            f"MixIT wants (B, C, T) estimates and (B, M, T) mixtures with equal B and T; got "
            f"{tuple(estimates.shape)} and {tuple(mixtures.shape)}"
        )
    n_mix, n_src = mixtures.shape[1], estimates.shape[1]
    if n_src < n_mix:
        raise ValueError(f"MixIT needs at least as many estimates ({n_src}) as mixtures ({n_mix})")
    choices = torch.tensor(
        list(itertools.product(range(n_mix), repeat=n_src)), device=estimates.device
    )  # (K, C)
    assign = torch.nn.functional.one_hot(choices, n_mix).transpose(1, 2).to(estimates.dtype)  # (K, M, C)
    remixes = torch.einsum("kmc,bct->bkmt", assign, estimates)  # (B, K, M, T)
    scores = thresholded_snr(remixes, mixtures[:, None]).sum(-1)  # (B, K)
    best = scores.argmax(1)
    rows = torch.arange(estimates.shape[0], device=estimates.device)
    return MixITResult(-scores[rows, best].mean(), assign[best], remixes[rows, best])
