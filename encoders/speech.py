"""Speech encoders over raw audio: log-mel frontend -> SpecAugment -> Conv2d subsampling -> Conformer or
Transformer blocks (encoders/conformer.py). A graph node feeds them ``batch["audio"]`` (B, samples) and
``batch["audio_lengths"]`` (samples); ``Features.lengths`` are frame counts after subsampling and the
encoder's ``frame_shift_s`` gives the seconds per output frame.

Every step is padding-exact: framing pads with zeros (not reflection), normalisation statistics use valid
frames only and the convolutions see no padded frame, so in eval mode a row of a padded batch gives the
same valid frames as the row alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from encoders.conformer import BlockDims, BlockStack
from zoo.contract import Encoder, Features, padding_mask
from zoo.layers import FastDropout
from zoo.registry import register_encoder


def check_audio(inputs: Tensor, lengths: Tensor | None, min_samples: int, name: str,
                sample_rate: int = 16000) -> Tensor:
    """Validate a (B, samples) float batch; return lengths (B,) long. Raises ValueError naming the fix."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} takes audio as a torch.Tensor (B, samples), got {type(inputs).__name__}")
    if inputs.dim() == 3:
        raise ValueError(f"{name} takes mono audio (B, samples) but got shape {tuple(inputs.shape)} "
                         "(B, channels, samples); average the channels first: audio.mean(dim=1)")
    if inputs.dim() != 2:
        raise ValueError(f"{name} takes audio of shape (B, samples), got {tuple(inputs.shape)}; "
                         "add a batch dimension with audio[None] for a single clip")
    if not inputs.is_floating_point():
        raise TypeError(f"{name} takes float audio in [-1, 1], got {inputs.dtype}; "
                        "for int16 PCM use audio / 32768")
    b, t = inputs.shape
    if lengths is None:
        lengths = torch.full((b,), t, device=inputs.device, dtype=torch.long)
    lengths = lengths.to(inputs.device).long()
    if lengths.shape != (b,):
        raise ValueError(f"{name}: lengths must have shape ({b},) (one sample count per row), "
                         f"got {tuple(lengths.shape)}")
    finite = torch.isfinite(inputs).all(dim=1)
    flags = torch.stack([finite.long(), lengths]).tolist()  # one host sync for all checks
    bad = [i for i, ok in enumerate(flags[0]) if not ok]
    if bad:
        raise ValueError(f"{name}: audio rows {bad[:8]} contain NaN or Inf; clean the input "
                         "(e.g. torch.nan_to_num) or drop those clips")
    over = [i for i, n in enumerate(flags[1]) if n > t or n < 0]
    if over:
        raise ValueError(f"{name}: lengths of rows {over[:8]} are outside 0..{t} samples (the padded width)")
    short = [(i, n) for i, n in enumerate(flags[1]) if n < min_samples]
    if short:
        rows = ", ".join(f"row {i}: {n} samples ({n / sample_rate:.3f} s)" for i, n in short[:8])
        raise ValueError(f"{name}: audio too short ({rows}); it needs at least {min_samples} samples "
                         f"({min_samples / sample_rate:.3f} s), the receptive field of its frontend and "
                         "subsampling. Pad such clips with silence or drop them")
    return lengths


@dataclass(frozen=True)
class FrontendConfig:
    """Log-mel options. ``norm``: "utterance" (per-row mean/var over valid frames), "global" (stored
    mean/std buffers, see ``LogMelFrontend.estimate_global_stats``) or "none"."""

    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 400
    hop: int = 160
    norm: str = "utterance"
    eps: float = 1e-6

    def __post_init__(self):
        if self.norm not in ("utterance", "global", "none"):
            raise ValueError(f"norm='{self.norm}' is unknown; use 'utterance', 'global' or 'none'")


class LogMelFrontend(nn.Module):
    """Raw audio (B, samples) -> log-mel (B, frames, n_mels) and frame counts ``samples // hop + 1``.

    Frames are centred (``center=True``) with zero padding, so a frame never reads a neighbour row's
    padding differently from silence; computed in float32 even under autocast.
    """

    def __init__(self, cfg: FrontendConfig = FrontendConfig()):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop,
                                                        n_mels=cfg.n_mels, center=True, pad_mode="constant")
        # torch.hann_window returns a view into a longer buffer, which safetensors refuses to save; the
        # window and filterbank are functions of the config, so they stay out of the state dict
        spec, scale = self.mel.spectrogram, self.mel.mel_scale
        spec.register_buffer("window", spec.window.clone(), persistent=False)
        scale.register_buffer("fb", scale.fb.clone(), persistent=False)
        self.register_buffer("mean", torch.zeros(cfg.n_mels))
        self.register_buffer("std", torch.ones(cfg.n_mels))

    def frames(self, samples: Tensor) -> Tensor:
        return torch.div(samples, self.cfg.hop, rounding_mode="floor") + 1

    def log_mel(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised log-mel (B, T, n_mels) and frame counts; padded frames are arbitrary."""
        with torch.autocast(audio.device.type, enabled=False):
            audio = audio.float().masked_fill(padding_mask(lengths, audio.shape[1]), 0.0)
            return torch.log(self.mel(audio) + self.cfg.eps).transpose(1, 2), self.frames(lengths)

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised log-mel (B, T, n_mels), zero at padded frames, and frame counts (B,)."""
        x, frames = self.log_mel(audio, lengths)
        valid = (~padding_mask(frames, x.shape[1])).unsqueeze(-1)
        if self.cfg.norm == "utterance":
            count = frames.clamp_min(1)[:, None, None].to(x.dtype)
            mean = (x * valid).sum(1, keepdim=True) / count
            var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / count
            x = (x - mean) / (var + 1e-5).sqrt()
        elif self.cfg.norm == "global":
            x = (x - self.mean) / self.std
        return x * valid, frames

    @torch.no_grad()
    def estimate_global_stats(self, batches) -> None:
        """Set the ``global`` mean/std from an iterable of ``(audio, lengths)`` (e.g. the training set)."""
        total, sq, n = 0.0, 0.0, 0
        for audio, lengths in batches:
            x, frames = self.log_mel(audio, lengths)
            x = x * (~padding_mask(frames, x.shape[1])).unsqueeze(-1)
            total, sq, n = total + x.sum((0, 1)), sq + (x ** 2).sum((0, 1)), n + int(frames.sum())
        if n == 0:
            raise ValueError("estimate_global_stats got no frames; "
                             "pass a non-empty iterable of (audio, lengths)")
        self.mean.copy_(total / n)
        self.std.copy_((sq / n - self.mean ** 2).clamp_min(1e-8).sqrt())


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Park et al. (2019), §2: time warp W (0 = off), ``freq_masks`` masks of width <= F, ``time_masks``
    masks of width <= T and <= ``time_ratio`` * length (the adaptive bound p). ``warmup_steps``: the first
    that many training forwards pass unmasked, a curriculum (easy inputs first, as SortaGrad in Amodei et
    al. 2016, §3.1) that lets a small CTC model leave its all-blank plateau before the masks make the task
    harder (BENCHMARKS.md: ASR tiny preset); the count is a buffer, so a resumed run continues it exactly."""

    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: int = 40
    time_ratio: float = 1.0
    time_warp: int = 0
    mask_value: float = 0.0
    warmup_steps: int = 0


class SpecAugment(nn.Module):
    """Masks (B, T, F) features within each row's valid frames; the identity in eval mode."""

    def __init__(self, cfg: SpecAugmentConfig = SpecAugmentConfig()):
        super().__init__()
        self.cfg = cfg
        if cfg.warmup_steps > 0:
            self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.training:
            return x
        if self.cfg.warmup_steps > 0:
            self.seen += 1
            if int(self.seen) <= self.cfg.warmup_steps:
                return x
        c, (b, t, f) = self.cfg, x.shape
        if c.time_warp > 0:
            x = torch.stack([self.warp(row, int(n)) for row, n in zip(x, lengths.tolist())])
        mask = torch.zeros(b, t, f, dtype=torch.bool, device=x.device)
        if c.freq_masks > 0:
            width = (torch.rand(b, c.freq_masks, device=x.device) * (min(c.freq_width, f) + 1)).long()
            start = (torch.rand(b, c.freq_masks, device=x.device) * (f - width + 1)).long()
            bins = torch.arange(f, device=x.device)
            band = (bins >= start[..., None]) & (bins < (start + width)[..., None])  # (B, masks, F)
            mask |= band.any(1)[:, None, :]
        if c.time_masks > 0:
            cap = torch.minimum((c.time_ratio * lengths).long(), lengths).clamp_max(c.time_width)
            width = (torch.rand(b, c.time_masks, device=x.device) * (cap[:, None] + 1)).long()
            start = (torch.rand(b, c.time_masks, device=x.device) * (lengths[:, None] - width + 1)).long()
            steps = torch.arange(t, device=x.device)
            span = (steps >= start[..., None]) & (steps < (start + width)[..., None])  # (B, masks, T)
            mask |= span.any(1)[:, :, None]
        valid = (torch.arange(t, device=x.device)[None, :] < lengths[:, None])[:, :, None]
        return x.masked_fill(mask & valid, c.mask_value)

    def warp(self, row: Tensor, n: int) -> Tensor:
        """Move a random point c in (W, n - W) to c + w, w ~ U[-W, W], stretching both sides linearly."""
        w = self.cfg.time_warp
        if n <= 2 * w + 1:
            return row
        center = int(torch.randint(w + 1, n - w, ()))
        target = center + int(torch.randint(-w, w + 1, ()))
        valid = row[:n].T[None]  # (1, F, n)
        left = F.interpolate(valid[..., :center], size=target, mode="linear", align_corners=True)
        right = F.interpolate(valid[..., center:], size=n - target, mode="linear", align_corners=True)
        return torch.cat([torch.cat([left, right], -1)[0].T, row[n:]])


SUBSAMPLING = {2: ((3, 2), (3, 1)), 4: ((3, 2), (3, 2)), 6: ((3, 2), (5, 3)), 8: ((3, 2), (3, 2), (3, 2))}


class ConvSubsampling(nn.Module):
    """ESPnet-style Conv2d subsampling (Conv2dSubsampling{2,4,6,8}): unpadded Conv2d + ReLU layers over
    (time, mel), then Linear(channels * freq_out, dim). Per layer ``L -> (L - k) // s + 1``, so valid output
    frames read valid input frames only."""

    def __init__(self, in_feats: int, dim: int, factor: int = 4, channels: int | None = None):
        super().__init__()
        if factor not in SUBSAMPLING:
            raise ValueError(f"subsampling factor {factor} is unsupported; use one of {sorted(SUBSAMPLING)}")
        self.layers, ch = SUBSAMPLING[factor], channels or dim
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else ch, ch, k, s)
                                   for i, (k, s) in enumerate(self.layers))
        freq = self.out_length(in_feats)
        if freq < 1:
            raise ValueError(f"{in_feats} feature bins are too few for {factor}x subsampling; "
                             f"use at least {self.min_length()} (e.g. more mel bins)")
        self.proj, self.factor = nn.Linear(ch * freq, dim), factor

    def out_length(self, length):
        for k, s in self.layers:
            length = (length - k) // s + 1
        return length

    def min_length(self) -> int:
        need = 1
        for k, s in reversed(self.layers):
            need = (need - 1) * s + k
        return need

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        y = x.unsqueeze(1)  # (B, 1, T, F)
        for conv in self.convs:
            y = F.relu(conv(y))
        y = self.proj(y.permute(0, 2, 1, 3).flatten(2))  # (B, T', C * F')
        return y, self.out_length(lengths)


class SpeechEncoder(Encoder):
    """Raw audio -> log-mel -> SpecAugment (training only) -> Conv2d subsampling -> block stack."""

    def __init__(self, dims: BlockDims, frontend: FrontendConfig = FrontendConfig(), subsampling: int = 4,
                 subsampling_channels: int | None = None, spec_augment: SpecAugmentConfig | None = None,
                 intermediate_layers: list[int] | None = None, name: str = "speech encoder"):
        super().__init__()
        self.name = name
        self.frontend = LogMelFrontend(frontend)
        self.spec_augment = SpecAugment(spec_augment) if spec_augment is not None else None
        self.subsample = ConvSubsampling(frontend.n_mels, dims.dim, subsampling, subsampling_channels)
        self.drop = FastDropout(dims.dropout)
        self.stack, self.out_dim = BlockStack(dims, intermediate_layers), dims.dim
        self.frame_shift_s = frontend.hop * subsampling / frontend.sample_rate
        # fewest samples giving one output frame: frames = samples // hop + 1 >= min frames
        self.min_samples = (self.subsample.min_length() - 1) * frontend.hop

    def output_lengths(self, samples: Tensor) -> Tensor:
        """Output frame counts for audio of ``samples`` samples."""
        return self.subsample.out_length(self.frontend.frames(samples))

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        lengths = check_audio(inputs, lengths, self.min_samples, self.name, self.frontend.cfg.sample_rate)
        x, frames = self.frontend(inputs, lengths)
        if self.spec_augment is not None:
            x = self.spec_augment(x, frames)
        x, frames = self.subsample(x, frames)
        x, inter = self.stack(self.drop(x), frames)
        return Features(x, frames, intermediates=inter)


def _build(kind: str, dim: int, layers: int, heads: int, ffn: int, kernel: int, dropout: float, pos: str,
           conv_norm: str, subsampling: int, subsampling_channels: int | None, spec_augment: dict | None,
           intermediate_layers: list[int] | None, **frontend) -> SpeechEncoder:
    dims = BlockDims(dim, heads, ffn, layers, kernel, dropout, pos, kind, conv_norm)
    aug = SpecAugmentConfig(**spec_augment) if isinstance(spec_augment, dict) else spec_augment
    return SpeechEncoder(dims, FrontendConfig(**frontend), subsampling, subsampling_channels, aug,
                         intermediate_layers, f"{kind}_speech")


@register_encoder(modality="audio")
def conformer_speech(dim: int = 144, layers: int = 6, heads: int = 4, ffn: int = 576, kernel: int = 15,
                     dropout: float = 0.1, pos: str = "rel", conv_norm: str = "batch",
                     sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, hop: int = 160,
                     norm: str = "utterance", subsampling: int = 4, subsampling_channels: int | None = 64,
                     spec_augment: dict | None = None,
                     intermediate_layers: list[int] | None = None) -> SpeechEncoder:
    """Conformer (Gulati et al. 2020) on raw audio: log-mel, SpecAugment (a dict of SpecAugmentConfig fields,
    or None for off), Conv2d subsampling (2, 4, 6 or 8x), relative-position Conformer blocks. The defaults
    are the 3.1M-parameter CTC model of shared/research/calibration.md."""
    return _build("conformer", dim, layers, heads, ffn, kernel, dropout, pos, conv_norm, subsampling,
                  subsampling_channels, spec_augment, intermediate_layers, sample_rate=sample_rate,
                  n_mels=n_mels, n_fft=n_fft, hop=hop, norm=norm)


@register_encoder(modality="audio")
def transformer_speech(dim: int = 256, layers: int = 6, heads: int = 4, ffn: int = 1024, dropout: float = 0.1,
                       pos: str = "abs", sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400,
                       hop: int = 160, norm: str = "utterance", subsampling: int = 4,
                       subsampling_channels: int | None = None, spec_augment: dict | None = None,
                       intermediate_layers: list[int] | None = None) -> SpeechEncoder:
    """Speech Transformer (Dong et al. 2018; Karita et al. 2019): log-mel, Conv2d subsampling, pre-LN
    Transformer blocks with absolute sinusoidal positions (or ``pos="rel"``)."""
    return _build("transformer", dim, layers, heads, ffn, 15, dropout, pos, "batch", subsampling,
                  subsampling_channels, spec_augment, intermediate_layers, sample_rate=sample_rate,
                  n_mels=n_mels, n_fft=n_fft, hop=hop, norm=norm)
