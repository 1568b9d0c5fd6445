"""Audio encoders for captioning and tagging.

- ``ast_audio``: the Audio Spectrogram Transformer (Gong, Chung & Glass, Interspeech 2021, §2.1): a
  log-mel spectrogram (25 ms Hann window, 10 ms hop, power STFT, HTK mel filters 20 Hz-Nyquist) cut into 16x16 patches (overlapping when the stride
  is below 16), linearly embedded, a [CLS] token and learned positions prepended/added, then a
  Transformer encoder. Patches are ordered time-major, so the valid tokens of a shorter clip are a
  prefix and ``Features.lengths`` counts them (+1 for [CLS]): the patches whose STFT windows lie wholly
  inside the clip's ``lengths`` samples (nothing of the padding reaches them). Normalisation uses AST's dataset
  statistics, ``(logmel - mean) / (2 std)``.
- ``clap_audio``: the CLAP audio tower (HTSAT, Wu et al., ICASSP 2023) through transformers'
  ``ClapAudioModel``, built from a config with random weights (or ``from_pretrained`` of a local
  directory / hub id), fed with ``ClapFeatureExtractor`` features.

Input: float waveforms (B, T) at ``sample_rate`` with optional ``lengths`` (B,) in samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from zoo.contract import Encoder, Features
from zoo.registry import register_encoder

__all__ = ["ASTDims", "ASTEncoder", "ast_audio", "clap_audio"]


@dataclass(frozen=True)
class ASTDims:
    sample_rate: int = 16_000
    n_mels: int = 128              # AST: 128
    patch: int = 16                # AST: 16 x 16 patches
    fstride: int = 10              # AST: 10 (overlap 6); 16 = no overlap
    tstride: int = 10
    dim: int = 768
    layers: int = 12
    heads: int = 12
    max_frames: int = 1024         # position table size, in frames (AST: 1024 = 10.24 s)
    dropout: float = 0.0
    norm_mean: float = -4.2677393  # AudioSet statistics of AST
    norm_std: float = 4.5689974

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.n_mels < self.patch:
            raise ValueError(f"n_mels={self.n_mels} must be >= patch={self.patch}")


class ASTEncoder(Encoder):
    """Log-mel -> overlapping patches -> [CLS] + positions -> pre-LN Transformer."""

    def __init__(self, dims: ASTDims):
        super().__init__()
        import torchaudio

        self.dims = d = dims
        self.win, self.hop = int(0.025 * d.sample_rate), int(0.01 * d.sample_rate)
        self.n_fft = 1 << (self.win - 1).bit_length()
        fb = torchaudio.functional.melscale_fbanks(self.n_fft // 2 + 1, 20.0, d.sample_rate / 2, d.n_mels, d.sample_rate)
        self.register_buffer("fbank", fb, persistent=False)  # (freqs, n_mels); fixed, so not in the state dict
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.patch_embed = nn.Conv2d(1, d.dim, d.patch, stride=(d.fstride, d.tstride))
        self.f_patches = (d.n_mels - d.patch) // d.fstride + 1
        self.t_max = self._t_patches(d.max_frames)
        self.cls = nn.Parameter(torch.zeros(1, 1, d.dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.t_max * self.f_patches, d.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(d.dim, d.heads, 4 * d.dim, d.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, d.layers, enable_nested_tensor=False)
        self.norm, self.out_dim = nn.LayerNorm(d.dim), d.dim

    def _t_patches(self, frames: Tensor | int):
        return (frames - self.dims.patch) // self.dims.tstride + 1

    def features(self, wav: Tensor) -> Tensor:
        """(B, T) -> normalised log-mel (B, n_mels, frames)."""
        spec = torch.stft(wav.float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          return_complex=True).abs().pow(2)
        logmel = torch.log(torch.einsum("bft,fm->bmt", spec, self.fbank) + 1e-6)
        return (logmel - self.dims.norm_mean) / (2 * self.dims.norm_std)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        if not torch.is_tensor(inputs) or not inputs.is_floating_point() or inputs.dim() != 2:
            raise ValueError(f"ast_audio expects float waveforms (B, T); got {getattr(inputs, 'shape', type(inputs))}")
        d = self.dims
        mel = self.features(inputs)
        if mel.shape[-1] < d.patch:
            raise ValueError(f"audio of {inputs.shape[1]} samples gives {mel.shape[-1]} frames, fewer than one "
                             f"patch ({d.patch} frames = {d.patch * self.hop / d.sample_rate:.2f} s); pad it")
        x = self.patch_embed(mel[:, None])                       # (B, D, F', T')
        tp = x.shape[-1]
        if tp > self.t_max:
            raise ValueError(f"audio gives {tp} time patches; the encoder holds {self.t_max} "
                             f"(max_frames={d.max_frames}); crop the audio or raise max_frames")
        x = rearrange(x, "b d f t -> b (t f) d")                 # time-major: a shorter clip is a prefix
        pos = rearrange(self.pos[:, 1:], "o (t f) d -> o t f d", f=self.f_patches)[:, :tp]
        x = x + rearrange(pos, "o t f d -> o (t f) d")
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1) + self.pos[:, :1], x], 1)
        out_lengths, mask = None, None
        if lengths is not None:
            # centred STFT frames lying wholly inside the valid samples, so padding never leaks into a valid token
            frames = (lengths.to(x.device) - self.n_fft // 2).clamp(min=0) // self.hop + 1
            out_lengths = 1 + self._t_patches(frames).clamp(min=1, max=tp) * self.f_patches
            mask = torch.arange(x.shape[1], device=x.device)[None] >= out_lengths[:, None]
        x = self.norm(self.blocks(x, src_key_padding_mask=mask))
        return Features(x, out_lengths)


class ClapAudioEncoder(Encoder):
    """transformers' CLAP audio tower (HTSAT) on 48 kHz ``ClapFeatureExtractor`` features -> its patch tokens."""

    def __init__(self, config: dict[str, Any] | None = None, pretrained: str | None = None, sample_rate: int = 48_000):
        super().__init__()
        from transformers import ClapAudioConfig, ClapAudioModel, ClapFeatureExtractor

        if pretrained:
            self.model = ClapAudioModel.from_pretrained(pretrained)
        else:
            self.model = ClapAudioModel(ClapAudioConfig(**(config or {})))
        self.extractor = ClapFeatureExtractor(sampling_rate=sample_rate, feature_size=self.model.config.num_mel_bins)
        self.sample_rate = sample_rate
        self.out_dim = int(self.model.config.hidden_size)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        wavs = [w[: int(n)] if lengths is not None else w for w, n in
                zip(inputs.float().cpu().numpy(), lengths.tolist() if lengths is not None else [0] * len(inputs))]
        feats = self.extractor(wavs, sampling_rate=self.sample_rate, return_tensors="pt", truncation="rand_trunc")
        dev = next(self.model.parameters()).device
        out = self.model(input_features=feats["input_features"].to(dev), is_longer=feats["is_longer"].to(dev))
        x = out.last_hidden_state  # (B, D, F, T) map of HTSAT
        if x.dim() == 4:
            return Features(rearrange(x, "b d f t -> b (f t) d"), None, spatial=x)
        return Features(x, None)


@register_encoder(modality="audio", task="captioning")
def ast_audio(sample_rate: int = 16_000, n_mels: int = 128, patch: int = 16, fstride: int = 10, tstride: int = 10,
              dim: int = 768, layers: int = 12, heads: int = 12, max_frames: int = 1024, dropout: float = 0.0,
              norm_mean: float = -4.2677393, norm_std: float = 4.5689974) -> ASTEncoder:
    """Audio Spectrogram Transformer (defaults: AST-Base/16 with 10-frame stride, 10.24 s)."""
    return ASTEncoder(ASTDims(sample_rate, n_mels, patch, fstride, tstride, dim, layers, heads, max_frames, dropout,
                              norm_mean, norm_std))


@register_encoder(modality="audio", task="captioning")
def clap_audio(config: dict[str, Any] | None = None, pretrained: str | None = None,
               sample_rate: int = 48_000) -> ClapAudioEncoder:
    """CLAP's HTSAT audio tower via transformers (random init from ``config`` offline, or ``pretrained``)."""
    return ClapAudioEncoder(config, pretrained, sample_rate)
