"""Oracle time-frequency masks (Conv-TasNet paper §IV-C baselines): ideal binary mask (IBM), ideal
ratio mask (IRM, |S_i| / Σ_j |S_j|) and a Wiener-like power-ratio mask (|S_i|² / Σ_j |S_j|²), applied
to the mixture STFT (Hann 512 / hop 128 at 8 kHz = 64 / 16 ms) and inverted with the mixture phase."""
from __future__ import annotations

import torch
from torch import Tensor

ORACLES = ("ibm", "irm", "wiener")


def oracle_separate(mix: Tensor, sources: Tensor, kind: str, n_fft: int = 512, hop: int = 128) -> Tensor:
    """mix (B, T), sources (B, S, T) -> estimates (B, S, T) from the oracle mask ``kind``."""
    if kind not in ORACLES:
        raise ValueError(f"unknown oracle {kind!r}; choose one of {ORACLES}")
    window = torch.hann_window(n_fft, device=mix.device)
    spec = lambda x: torch.stft(x, n_fft, hop, window=window, return_complex=True)  # noqa: E731
    b, s, t = sources.shape
    mix_spec = spec(mix)                                     # (B, F, N)
    mags = spec(sources.reshape(b * s, t)).abs().reshape(b, s, *mix_spec.shape[1:])
    if kind == "ibm":
        mask = (mags == mags.max(1, keepdim=True).values).to(mix.dtype)
    elif kind == "irm":
        mask = mags / mags.sum(1, keepdim=True).clamp_min(1e-8)
    else:
        power = mags ** 2
        mask = power / power.sum(1, keepdim=True).clamp_min(1e-12)
    est = mask * mix_spec.unsqueeze(1)
    out = torch.istft(est.reshape(b * s, *est.shape[2:]), n_fft, hop, window=window, length=t)
    return out.reshape(b, s, t)
