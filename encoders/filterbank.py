"""Waveform filterbank encoders for masking-based separation (the "encoder" of asteroid's
encoder/masker/decoder split).

- ``free_filterbank``: Conv-TasNet's learnable analysis basis (Luo & Mesgarani, TASLP 2019, §2.2,
  eq. (1)): N filters of length L applied with hop L/2, ``w = H(x U)`` with H a ReLU (the TasNet
  choice, which keeps the representation non-negative) or the identity (``activation="none"``, as in
  torchaudio's ``ConvTasNet``). Framing follows torchaudio exactly (end-padding to a whole number
  of hops, then ``padding=stride`` on both sides), so ``frames = ceil((T + 2S - L) / S) + 1``.
- ``stft_filterbank``: a fixed STFT (``torch.stft``, Hann window, centred) giving magnitude or
  real-and-imaginary features; the complex spectrum rides along in ``Features.spatial`` as a
  (B, 2, F, T') map so that a decoder can resynthesise with the mixture phase (iSTFT).

Both return ``Features(x=(B, T', D), lengths=frame counts)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.contract import Encoder, Features
from zoo.registry import register_encoder

__all__ = [
    "FreeFilterbank",
    "STFTFilterbank",
    "as_mono",
    "conv_frames",
    "free_filterbank",
    "stft_filterbank",
]


def as_mono(inputs: Tensor, min_samples: int, who: str) -> Tensor:
    """(B, T) or (B, 1, T) float audio -> (B, 1, T); clear errors for anything else."""
    if not torch.is_tensor(inputs) or not inputs.is_floating_point():
        raise TypeError(f"{who} expects float audio (B, T); got {getattr(inputs, 'dtype', type(inputs))}")
    if inputs.dim() == 2:
        inputs = inputs[:, None]
    if inputs.dim() != 3 or inputs.shape[1] != 1:
        raise ValueError(
            f"{who} expects mono audio (B, T) or (B, 1, T); got shape {tuple(inputs.shape)}. "
            "Down-mix (mean over channels) or pick one channel first."
        )
    if inputs.shape[-1] < min_samples:
        raise ValueError(
            f"{who}: audio of {inputs.shape[-1]} samples is shorter than one analysis window of "
            f"{min_samples} samples; pad the input to at least {min_samples} samples"
        )
    return inputs


def conv_frames(samples: Tensor | int, kernel_size: int, stride: int):
    """Frames of the free filterbank for ``samples`` input samples: ceil((T + 2S - L) / S) + 1."""
    return (samples + 2 * stride - kernel_size + stride - 1) // stride + 1


class FreeFilterbank(Encoder):
    """Learnable 1-D conv analysis: (B, T) -> (B, T', N), optional ReLU."""

    def __init__(
        self, n_filters: int = 512, kernel_size: int = 16, stride: int | None = None, activation: str = "relu"
    ):
        super().__init__()
        if activation not in ("relu", "none"):
            raise ValueError(f"filterbank activation must be 'relu' or 'none', got {activation!r}")
        self.kernel_size, self.stride = kernel_size, stride or kernel_size // 2
        if not 0 < self.stride <= kernel_size:
            raise ValueError(f"stride {self.stride} must be in 1..kernel_size ({kernel_size})")
        self.activation, self.out_dim = activation, n_filters
        self.conv = nn.Conv1d(1, n_filters, kernel_size, stride=self.stride, padding=self.stride, bias=False)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        wav = as_mono(inputs, self.kernel_size, "free_filterbank")
        L, S = self.kernel_size, self.stride
        extra = -(wav.shape[-1] + 2 * S - L) % S  # end padding to a whole number of hops (torchaudio)
        x = self.conv(F.pad(wav, (0, extra)) if extra else wav)
        if self.activation == "relu":
            x = torch.relu_(x)
        frames = None if lengths is None else conv_frames(lengths.to(x.device), L, S)
        return Features(x.transpose(1, 2), frames)  # a view: (B, T', N) over the conv's (B, N, T')


class STFTFilterbank(Encoder):
    """Fixed STFT analysis: magnitude (B, T', F) or real||imag (B, T', 2F); complex map in ``spatial``."""

    def __init__(
        self,
        n_fft: int = 256,
        hop_length: int | None = None,
        win_length: int | None = None,
        features: str = "magnitude",
    ):
        super().__init__()
        if features not in ("magnitude", "complex"):
            raise ValueError(f"stft features must be 'magnitude' or 'complex', got {features!r}")
        self.n_fft, self.hop_length = n_fft, hop_length or n_fft // 4
        self.win_length, self.features = win_length or n_fft, features
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        bins = n_fft // 2 + 1
        self.out_dim = bins if features == "magnitude" else 2 * bins

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        wav = as_mono(inputs, self.n_fft, "stft_filterbank")[:, 0]
        spec = torch.stft(
            wav,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window.to(wav.dtype),
            center=True,
            return_complex=True,
        )  # (B, F, T')
        x = spec.abs() if self.features == "magnitude" else torch.cat([spec.real, spec.imag], 1)
        frames = None if lengths is None else lengths.to(wav.device) // self.hop_length + 1
        return Features(x.transpose(1, 2), frames, spatial=torch.view_as_real(spec).permute(0, 3, 1, 2))


@dataclass(frozen=True)
class STFTSynthesis:
    """The inverse of an :class:`STFTFilterbank` (same n_fft / hop / window)."""

    n_fft: int
    hop_length: int
    win_length: int

    def __call__(self, spec: Tensor, window: Tensor) -> Tensor:
        """(..., F, T') complex -> (..., (T' - 1) hop) waveform."""
        lead = spec.shape[:-2]
        wav = torch.istft(
            spec.reshape(-1, *spec.shape[-2:]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            window,
            center=True,
            length=(spec.shape[-1] - 1) * self.hop_length,
        )
        return wav.reshape(*lead, -1)


@register_encoder(modality="audio", task="separation")
def free_filterbank(
    n_filters: int = 512, kernel_size: int = 16, stride: int | None = None, activation: str = "relu"
) -> FreeFilterbank:
    """Conv-TasNet learnable encoder: N filters of length L, hop L/2 (Luo & Mesgarani 2019, §2.2)."""
    return FreeFilterbank(n_filters, kernel_size, stride, activation)


@register_encoder(modality="audio", task="separation")
def stft_filterbank(
    n_fft: int = 256,
    hop_length: int | None = None,
    win_length: int | None = None,
    features: str = "magnitude",
) -> STFTFilterbank:
    """STFT encoder (Hann, centred): magnitude or real||imag features, complex spectrum in ``spatial``."""
    return STFTFilterbank(n_fft, hop_length, win_length, features)
