"""M/EEG encoder after Défossez et al., "Decoding speech perception from non-invasive brain
recordings" (Nat. Mach. Intell. 2023, Methods, "Model"), reimplemented from the paper's description.

1. Spatial attention: each of ``merger_channels`` outputs is a softmax-weighted sum of the input
   sensors; the weights are a learned function of the sensors' 2-D layout positions in [0, 1]
   (Fourier features). Missing/masked sensors get a score of -inf, hence weight 0 and zero gradient,
   so recordings with different sensor sets share one model. During training, sensors within a
   random radius are dropped (spatial dropout).
2. A 1x1 convolution, then a subject layer: a per-subject D x D matrix gathered by ``subject_ids``.
3. Five blocks of three convolutions (kernel 3): two residual, dilated 2^(2k mod 5) and
   2^(2k+1 mod 5), each BatchNorm + GELU; the third doubles the channels and halves them by a GLU.
4. Two 1x1 convolutions (2D channels with GELU, then ``out_dim``): output Features (B, T, out_dim).

Inputs: (B, C, T) sensor signals with rows padded to the widest sensor set; conditions
``subject_ids`` (B,), ``sensor_positions`` (B, C, 2) and ``sensor_mask`` (B, C) (True = valid).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.contract import Encoder, Features
from zoo.registry import register_encoder


class FourierEmbedding(nn.Module):
    """cos/sin(2 pi (kx x + ky y) / (1 + 2 margin)) for kx, ky < n: ``dim`` = 2 n^2 features per position."""

    def __init__(self, dim: int = 128, margin: float = 0.2):
        super().__init__()
        n = int(round(math.sqrt(dim / 2)))
        if 2 * n * n != dim:
            raise ValueError(f"Fourier position dim must be 2 * n^2 (e.g. 32, 72, 128, 288), got {dim}")
        k = torch.arange(n, dtype=torch.float32)
        kx, ky = torch.meshgrid(k, k, indexing="ij")
        scale = 2 * math.pi / (1 + 2 * margin)
        self.register_buffer("freqs", torch.stack([kx.flatten(), ky.flatten()], 1) * scale, persistent=False)
        self.margin = margin

    def forward(self, positions: Tensor) -> Tensor:
        phase = (positions + self.margin) @ self.freqs.T
        return torch.cat([phase.cos(), phase.sin()], dim=-1)


class SpatialAttention(nn.Module):
    """Sensors (B, C, T) -> (B, out_channels, T) with position-driven softmax weights over sensors."""

    def __init__(self, out_channels: int, pos_dim: int = 128, dropout_radius: float = 0.1):
        super().__init__()
        self.embedding = FourierEmbedding(pos_dim)
        self.heads = nn.Parameter(torch.randn(out_channels, pos_dim) / math.sqrt(pos_dim))
        self.dropout_radius = dropout_radius

    def weights(self, positions: Tensor, valid: Tensor) -> Tensor:
        scores = torch.einsum("bcp,op->boc", self.embedding(positions), self.heads)
        if self.training and self.dropout_radius > 0:
            centre = torch.rand(positions.shape[0], 1, 2, device=positions.device)
            dropped = valid & ((positions - centre).norm(dim=-1) < self.dropout_radius)
            keep_some = (valid & ~dropped).any(1, keepdim=True)        # never drop a row's last sensors
            valid = valid & ~(dropped & keep_some)
        return scores.masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)

    def forward(self, x: Tensor, positions: Tensor, valid: Tensor) -> Tensor:
        x = x.masked_fill(~valid[..., None], 0.0)  # padded sensors may hold anything (even NaN)
        return torch.einsum("bct,boc->bot", x, self.weights(positions.masked_fill(~valid[..., None], 0.0), valid))


class SubjectLayer(nn.Module):
    """Per-subject D x D matrices (identity-initialised), gathered per sample by subject id."""

    def __init__(self, n_subjects: int, dim: int):
        super().__init__()
        self.weights = nn.Parameter(torch.eye(dim).repeat(n_subjects, 1, 1))

    def forward(self, x: Tensor, subject_ids: Tensor) -> Tensor:
        n = self.weights.shape[0]
        bad = subject_ids[(subject_ids < 0) | (subject_ids >= n)]
        if bad.numel():
            raise ValueError(f"MEG subject ids {sorted(set(bad.tolist()))} have no subject layer (this encoder has "
                             f"ids 0..{n - 1}); call encoder.add_subject() and fine-tune, or map ids to 0..{n - 1}")
        return torch.einsum("bct,bcd->bdt", x, self.weights[subject_ids])

    def add_subject(self) -> int:
        dim = self.weights.shape[1]
        self.weights = nn.Parameter(torch.cat([self.weights.data, torch.eye(dim, device=self.weights.device)[None]]))
        return self.weights.shape[0] - 1


class ConvBlock(nn.Module):
    """Two residual dilated convs (BatchNorm, GELU) and a channel-doubling conv halved by a GLU."""

    def __init__(self, dim: int, k: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, 3, padding=d, dilation=d), nn.BatchNorm1d(dim), nn.GELU(), nn.Dropout(dropout))
            for d in (2 ** ((2 * k) % 5), 2 ** ((2 * k + 1) % 5))
        )
        self.glu = nn.Conv1d(dim, 2 * dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(x)
        return nn.functional.glu(self.glu(x), dim=1)


class MEGEncoder(Encoder):
    """Spatial attention -> 1x1 conv -> subject layer -> dilated GLU conv blocks -> 1x1 convs."""

    def __init__(self, n_subjects: int, out_dim: int = 64, hidden: int = 128, merger_channels: int = 128,
                 blocks: int = 5, pos_dim: int = 128, dropout_radius: float = 0.1, dropout: float = 0.0):
        super().__init__()
        self.merger = SpatialAttention(merger_channels, pos_dim, dropout_radius)
        self.initial = nn.Conv1d(merger_channels, hidden, 1)
        self.subject = SubjectLayer(n_subjects, hidden)
        self.blocks = nn.ModuleList(ConvBlock(hidden, k, dropout) for k in range(blocks))
        self.final = nn.Sequential(nn.Conv1d(hidden, 2 * hidden, 1), nn.GELU(), nn.Conv1d(2 * hidden, out_dim, 1))
        self.out_dim = out_dim

    def add_subject(self) -> int:
        """A fresh (identity) subject layer; returns its id."""
        return self.subject.add_subject()

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, subject_ids: Tensor | None = None,
                sensor_positions: Tensor | None = None, sensor_mask: Tensor | None = None, **conditions) -> Features:
        if inputs.dim() != 3:
            raise ValueError(f"M/EEG input must be (B, channels, time), got shape {tuple(inputs.shape)}")
        b, c, _ = inputs.shape
        if subject_ids is None:
            raise ValueError("the MEG encoder needs subject_ids (B,): list 'subject_ids' in the node's conditions")
        if sensor_positions is None:
            raise ValueError("the MEG encoder needs sensor_positions (B, channels, 2) in [0, 1], e.g. from "
                             "recipes.brain_decoding.formats.sensor_positions(info) (mne.find_layout)")
        if sensor_positions.shape != (b, c, 2):
            raise ValueError(f"sensor_positions must be (B, channels, 2) = {(b, c, 2)}, got {tuple(sensor_positions.shape)}")
        valid = torch.ones(b, c, dtype=torch.bool, device=inputs.device) if sensor_mask is None else sensor_mask.bool()
        if valid.shape != (b, c):
            raise ValueError(f"sensor_mask must be (B, channels) = {(b, c)}, got {tuple(valid.shape)}")
        missing = valid & ~torch.isfinite(sensor_positions).all(-1)
        if missing.any():
            rows, chans = missing.nonzero(as_tuple=True)
            raise ValueError(f"sensors {chans[:10].tolist()} (rows {sorted(set(rows.tolist()))[:10]}) are marked valid but "
                             "have no finite 2-D position; set their sensor_mask to False or supply the positions")
        if not valid.any(1).all():
            raise ValueError(f"rows {(~valid.any(1)).nonzero().squeeze(1).tolist()} have no valid sensor")
        x = self.merger(inputs, sensor_positions, valid)
        x = self.subject(self.initial(x), torch.as_tensor(subject_ids, device=x.device).long().reshape(-1))
        for block in self.blocks:
            x = block(x)
        return Features(self.final(x).transpose(1, 2), lengths)


@register_encoder(modality="meg")
def meg_encoder(n_subjects: int, out_dim: int = 64, hidden: int = 128, merger_channels: int = 128, blocks: int = 5,
                pos_dim: int = 128, dropout_radius: float = 0.1, dropout: float = 0.0) -> MEGEncoder:
    """Défossez et al. (2023) brain module for M/EEG: spatial attention, subject layer, dilated GLU convs."""
    return MEGEncoder(n_subjects, out_dim, hidden, merger_channels, blocks, pos_dim, dropout_radius, dropout)
