"""Modality-agnostic encoders: a frame-wise MLP, token embeddings and a Transformer encoder
(Vaswani et al., 2017, §3.1) that also serves as the upper stage of cascades."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.contract import Encoder, Features
from zoo.registry import register_encoder


class MLPEncoder(Encoder):
    """Frame-wise MLP: (B, T, in_dim) -> (B, T, dim). Lengths pass through."""

    def __init__(self, in_dim: int, dim: int = 128, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        blocks, d = [], in_dim
        for _ in range(layers):
            blocks += [nn.Linear(d, dim), nn.GELU(), nn.Dropout(dropout)]
            d = dim
        self.net, self.out_dim = nn.Sequential(*blocks), dim

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        return Features(self.net(inputs), lengths)


class TokenEmbeddingEncoder(Encoder):
    """Token ids (B, T) -> embeddings + sinusoidal positions."""

    def __init__(self, vocab_size: int, dim: int = 128, max_len: int = 4096):
        super().__init__()
        self.embed, self.out_dim = nn.Embedding(vocab_size, dim), dim
        self.register_buffer("positions", sinusoids(max_len, dim), persistent=False)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        return Features(self.embed(inputs) + self.positions[: inputs.shape[1]], lengths)


class TransformerEncoder(Encoder):
    """Pre-LN Transformer encoder over (B, T, in_dim) with a key padding mask from ``lengths``."""

    def __init__(self, in_dim: int, dim: int = 256, layers: int = 4, heads: int = 4, ffn: int | None = None,
                 dropout: float = 0.1, max_len: int = 8192, positions: bool = True):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        layer = nn.TransformerEncoderLayer(dim, heads, ffn or 4 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.out_dim = nn.LayerNorm(dim), dim
        self.register_buffer("positions", sinusoids(max_len, dim) if positions else None, persistent=False)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        x = self.proj(inputs)
        if self.positions is not None:
            x = x + self.positions[: x.shape[1]].to(x.dtype)
        feats = Features(x, lengths)
        mask = feats.padding_mask() if lengths is not None else None
        return Features(self.norm(self.layers(x, src_key_padding_mask=mask)), lengths)


def sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> Tensor:
    """Sinusoidal position table (length, dim) as in Vaswani et al. (2017) §3.5."""
    half = dim // 2
    inv = torch.exp(-math.log(max_timescale) * torch.arange(half) / max(half - 1, 1))
    angles = torch.arange(length)[:, None] * inv[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.nn.functional.pad(table, (0, dim - 2 * half))


@register_encoder(modality="any")
def mlp_encoder(in_dim: int, dim: int = 128, layers: int = 2, dropout: float = 0.0) -> MLPEncoder:
    """Frame-wise MLP encoder."""
    return MLPEncoder(in_dim, dim, layers, dropout)


@register_encoder(modality="text")
def token_embedding(vocab_size: int, dim: int = 128, max_len: int = 4096) -> TokenEmbeddingEncoder:
    """Token embedding + sinusoidal positions."""
    return TokenEmbeddingEncoder(vocab_size, dim, max_len)


@register_encoder(modality="any")
def transformer_encoder(in_dim: int, dim: int = 256, layers: int = 4, heads: int = 4, ffn: int | None = None,
                        dropout: float = 0.1, positions: bool = True) -> TransformerEncoder:
    """Pre-LN Transformer encoder (cascades: its input may be another encoder's output)."""
    return TransformerEncoder(in_dim, dim, layers, heads, ffn, dropout, positions=positions)
