"""Whisper's audio encoder (Radford et al., 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", §2.2) and its log-mel frontend.

- :class:`LogMel`: 25 ms Hann windows every 10 ms of 16 kHz audio padded to 30 s, 80 (or 128)
  Slaney mel bands, ``log10`` clamped to 8 below the utterance's maximum and scaled to roughly
  [-1, 1] (openai/whisper ``audio.py``); equal to transformers' ``WhisperFeatureExtractor``.
- :class:`WhisperEncoder`: two 3-wide conv1d with GELU (the second of stride 2), sinusoidal
  positions, pre-LN Transformer blocks and a final LayerNorm; input log-mel (B, n_mels, frames) or
  raw audio (B, samples). Whisper attends over the padding of its 30 s window, so by default no
  lengths are returned; ``mask_padding=True`` masks padded frames and returns their lengths.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from encoders.generic import sinusoids
from zoo.contract import Encoder, Features, padding_mask
from zoo.registry import register_encoder

__all__ = ["LogMel", "WhisperAudioDims", "WhisperEncoder", "mel_filters", "whisper_encoder"]

SAMPLE_RATE, N_FFT, HOP = 16000, 400, 160


@dataclass(frozen=True)
class WhisperAudioDims:
    n_mels: int = 80
    n_ctx: int = 1500   # positions after the stride-2 conv: 30 s = 3000 mel frames -> 1500
    dim: int = 384
    heads: int = 6
    layers: int = 4
    ffn: int = 0        # 0 = 4 * dim
    eps: float = 1e-5


def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-scale, Slaney-normalised triangles over 0..8 kHz (librosa's default)."""
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate,
                                               norm="slaney", mel_scale="slaney")
    return fb.T.contiguous()


class LogMel(nn.Module):
    """Raw audio (B, samples) -> Whisper log-mel (B, n_mels, frames), frame lengths (B,)."""

    def __init__(self, n_mels: int = 80, chunk_seconds: float | None = 30.0):
        super().__init__()
        self.n_samples = None if chunk_seconds is None else int(chunk_seconds * SAMPLE_RATE)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", mel_filters(n_mels), persistent=False)

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if audio.dim() != 2 or not audio.is_floating_point():
            raise ValueError(f"LogMel expects float mono audio (B, samples) at 16 kHz; got {tuple(audio.shape)} "
                             f"{audio.dtype}")
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        if self.n_samples is not None:  # pad (with silence) or trim to the 30 s window
            audio = F.pad(audio, (0, max(0, self.n_samples - audio.shape[1])))[:, : self.n_samples]
        stft = torch.stft(audio.float(), N_FFT, HOP, window=self.window, return_complex=True)
        power = stft[..., :-1].abs().pow(2)
        log_spec = (self.filters @ power).clamp(min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        return log_spec, (lengths.clamp(max=audio.shape[1]) // HOP).long()


class EncoderBlock(nn.Module):
    """Pre-LN: x += SelfAttn(LN x); x += MLP(LN x). Fused QKV (the key bias is inert, see the decoder)."""

    def __init__(self, dim: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attn_ln = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp_ln = nn.LayerNorm(dim, eps=eps)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        q, k, v = rearrange(self.qkv(self.attn_ln(x)), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(rearrange(o, "b h t d -> b t (h d)"))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


class WhisperEncoder(Encoder):
    """Log-mel (B, n_mels, frames) or audio (B, samples) -> Features (B, frames / 2, dim)."""

    def __init__(self, dims: WhisperAudioDims, mask_padding: bool = False, chunk_seconds: float | None = 30.0):
        super().__init__()
        self.dims, self.mask_padding, self.out_dim = dims, mask_padding, dims.dim
        self.frontend = LogMel(dims.n_mels, chunk_seconds)
        self.conv1 = nn.Conv1d(dims.n_mels, dims.dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.dim, dims.dim, 3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(dims.n_ctx, dims.dim))
        ffn = dims.ffn or 4 * dims.dim
        self.blocks = nn.ModuleList(EncoderBlock(dims.dim, dims.heads, ffn, dims.eps) for _ in range(dims.layers))
        self.ln_post = nn.LayerNorm(dims.dim, eps=dims.eps)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        if inputs.dim() == 2:
            inputs, lengths = self.frontend(inputs, lengths)
        if inputs.dim() != 3 or inputs.shape[1] != self.dims.n_mels:
            raise ValueError(f"whisper_encoder expects log-mel (B, {self.dims.n_mels}, frames) or audio (B, samples); "
                             f"got shape {tuple(inputs.shape)}")
        x = F.gelu(self.conv1(inputs.to(self.conv1.weight.dtype)))
        x = rearrange(F.gelu(self.conv2(x)), "b d t -> b t d")
        if x.shape[1] > self.dims.n_ctx:
            raise ValueError(f"{inputs.shape[-1]} mel frames give {x.shape[1]} positions > n_ctx={self.dims.n_ctx}; "
                             f"split the audio into windows of at most {2 * self.dims.n_ctx} frames")
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        out_lengths = None if lengths is None else (lengths.to(x.device) - 1) // 2 + 1
        mask = None
        if self.mask_padding and out_lengths is not None:
            mask = ~padding_mask(out_lengths, x.shape[1])[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return Features(self.ln_post(x), out_lengths if self.mask_padding else None)



@register_encoder(modality="audio")
def whisper_encoder(n_mels: int = 80, n_ctx: int = 1500, dim: int = 384, heads: int = 6, layers: int = 4,
                    ffn: int = 0, eps: float = 1e-5, mask_padding: bool = False,
                    chunk_seconds: float | None = 30.0) -> WhisperEncoder:
    """Whisper audio encoder (tiny dims by default) with its own log-mel frontend for raw 16 kHz audio."""
    return WhisperEncoder(WhisperAudioDims(n_mels, n_ctx, dim, heads, layers, ffn, eps), mask_padding, chunk_seconds)
