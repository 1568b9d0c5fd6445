"""Conformer and Transformer block stacks over frame features (B, T, D), padding-exact.

Conformer block (Gulati et al., 2020, "Conformer: Convolution-augmented Transformer for Speech
Recognition", §2.1-2.4, eq. 1): ``x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm``. The
self-attention uses Transformer-XL relative sinusoidal positions (Dai et al., 2019, §3.3; Gulati §2.1)
by default (``pos="rel"``), or absolute sinusoids added once at the input (``pos="abs"``, Vaswani et
al., 2017, §3.5), or none. The convolution module zeroes padded frames before its depthwise
convolution (as ESPnet does), so in eval mode a padded row's valid frames equal the unpadded row's.
``torchaudio.models.Conformer`` does not mask there, hence our own blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from encoders.generic import sinusoids
from zoo.contract import Encoder, Features, padding_mask
from zoo.layers import FastDropout
from zoo.registry import register_encoder

POSITIONS = ("rel", "abs", "none")


@dataclass(frozen=True)
class BlockDims:
    """Sizes of a block stack. ``kind``: "conformer" or "transformer"; ``conv_norm``: "batch" or "layer"."""

    dim: int = 144
    heads: int = 4
    ffn: int = 576
    layers: int = 6
    kernel: int = 15
    dropout: float = 0.1
    pos: str = "rel"
    kind: str = "conformer"
    conv_norm: str = "batch"

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; "
                             "pick dim = heads * head_dim")
        if self.pos not in POSITIONS:
            raise ValueError(f"pos='{self.pos}' is unknown; use one of {POSITIONS}")
        if self.kind not in ("conformer", "transformer"):
            raise ValueError(f"kind='{self.kind}' is unknown; use 'conformer' or 'transformer'")
        if self.kind == "conformer" and self.kernel % 2 == 0:
            raise ValueError(f"kernel={self.kernel} must be odd so the depthwise convolution keeps the "
                             "length")
        if self.conv_norm not in ("batch", "layer"):
            raise ValueError(f"conv_norm='{self.conv_norm}' is unknown; use 'batch' or 'layer'")


def relative_sinusoids(length: int, dim: int, device=None) -> Tensor:
    """(2*length-1, dim) sinusoids of relative positions length-1, ..., 0, ..., -(length-1)."""
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    inv = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(2 * length - 1, dim, device=device)
    angles = pos[:, None] * inv
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)[:, : dim // 2]
    return table


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    With ``relative=True`` the score of query i and key j is ``(q_i + u)·k_j + (q_i + v)·W_p r_{i-j}``
    (Dai et al., 2019, eq. in §3.3, terms (a)-(d)); the position term enters SDPA as an additive bias.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, relative: bool = False):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative = relative
        if relative:
            self.pos_proj = nn.Linear(dim, dim, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(heads, dim // heads))
            self.pos_bias_v = nn.Parameter(torch.zeros(heads, dim // heads))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: Tensor, pad: Tensor, pos_table: Tensor | None = None) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        bias = torch.zeros(pad.shape, dtype=q.dtype, device=q.device).masked_fill(pad, float("-inf"))
        bias = bias[:, None, None, :]  # (B, 1, 1, T): padded keys are never attended
        if self.relative:
            t = x.shape[1]
            p = rearrange(self.pos_proj(pos_table.to(x.dtype)), "n (h d) -> h n d", h=self.heads)
            bd = torch.einsum("bhtd,hnd->bhtn", q + self.pos_bias_v[:, None].to(q.dtype), p)
            steps = torch.arange(t, device=x.device)
            index = (t - 1) - steps[:, None] + steps[None, :]
            bd = bd.gather(-1, index.expand(*bd.shape[:2], t, t))  # relative position i - j
            bias = bias + bd / math.sqrt(q.shape[-1])
            q = q + self.pos_bias_u[:, None].to(q.dtype)
        p_drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p_drop)
        return self.out(rearrange(y, "b h t d -> b t (h d)"))


def feed_forward(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Pre-LN FFN with Swish (Gulati §2.3)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), FastDropout(dropout),
                         nn.Linear(hidden, dim), FastDropout(dropout))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, T): per frame, so padding never mixes in."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvModule(nn.Module):
    """LN -> pointwise conv (2D) -> GLU -> zero padded frames -> depthwise conv -> norm -> Swish -> pointwise
    -> dropout (Gulati §2.2, Fig. 2)."""

    def __init__(self, dim: int, kernel: int, dropout: float, norm: str = "batch"):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.BatchNorm1d(dim) if norm == "batch" else ChannelLayerNorm(dim)
        self.pointwise_out, self.drop = nn.Conv1d(dim, dim, 1), FastDropout(dropout)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        y = F.glu(self.pointwise_in(rearrange(self.norm_in(x), "b t d -> b d t")), dim=1)
        y = self.depthwise(y.masked_fill(pad[:, None, :], 0.0))
        y = self.norm(y)
        return self.drop(rearrange(self.pointwise_out(F.silu(y)), "b d t -> b t d"))


class ConformerBlock(nn.Module):
    """Macaron block: x + FFN/2, x + MHSA, x + Conv, x + FFN/2, LayerNorm (Gulati eq. 1)."""

    def __init__(self, d: BlockDims):
        super().__init__()
        self.ffn1, self.ffn2 = feed_forward(d.dim, d.ffn, d.dropout), feed_forward(d.dim, d.ffn, d.dropout)
        self.attn_norm = nn.LayerNorm(d.dim)
        self.attn = SelfAttention(d.dim, d.heads, d.dropout, relative=d.pos == "rel")
        self.attn_drop = FastDropout(d.dropout)
        self.conv = ConvModule(d.dim, d.kernel, d.dropout, d.conv_norm)
        self.norm_out = nn.LayerNorm(d.dim)

    def forward(self, x: Tensor, pad: Tensor, pos_table: Tensor | None) -> Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attn_drop(self.attn(self.attn_norm(x), pad, pos_table))
        x = x + self.conv(x, pad)
        x = x + 0.5 * self.ffn2(x)
        return self.norm_out(x)


class TransformerBlock(nn.Module):
    """Pre-LN Transformer encoder block (Vaswani et al., 2017, §3.1; pre-LN as in Xiong et al., 2020)."""

    def __init__(self, d: BlockDims):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d.dim)
        self.attn = SelfAttention(d.dim, d.heads, d.dropout, relative=d.pos == "rel")
        self.attn_drop = FastDropout(d.dropout)
        self.ffn = nn.Sequential(nn.LayerNorm(d.dim), nn.Linear(d.dim, d.ffn), nn.GELU(),
                                 FastDropout(d.dropout), nn.Linear(d.ffn, d.dim), FastDropout(d.dropout))

    def forward(self, x: Tensor, pad: Tensor, pos_table: Tensor | None) -> Tensor:
        x = x + self.attn_drop(self.attn(self.attn_norm(x), pad, pos_table))
        return x + self.ffn(x)


class BlockStack(nn.Module):
    """``layers`` blocks of one kind, positions handled once; returns (x, requested intermediates).

    ``intermediate_layers`` are 1-based layer numbers (e.g. ``[3, 6]`` for InterCTC, Lee & Watanabe 2021).
    """

    def __init__(self, d: BlockDims, intermediate_layers: list[int] | None = None):
        super().__init__()
        self.dims = d
        block = ConformerBlock if d.kind == "conformer" else TransformerBlock
        self.blocks = nn.ModuleList(block(d) for _ in range(d.layers))
        # pre-LN blocks need a final LN; Conformer blocks end with one
        self.norm = nn.LayerNorm(d.dim) if d.kind == "transformer" else nn.Identity()
        self.intermediate_layers = sorted(set(intermediate_layers or []))
        bad = [i for i in self.intermediate_layers if not 1 <= i <= d.layers]
        if bad:
            raise ValueError(f"intermediate_layers {bad} are outside 1..{d.layers} "
                             "(layer numbers are 1-based)")

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, list[Tensor] | None]:
        b, t, _ = x.shape
        pad = padding_mask(lengths, t, x.device, b)  # all False when lengths is None
        pos_table = None
        if self.dims.pos == "abs":
            x = x + sinusoids(t, x.shape[-1]).to(x.device, x.dtype)
        elif self.dims.pos == "rel":
            pos_table = relative_sinusoids(t, x.shape[-1], x.device)
        inter = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, pad, pos_table)
            if i in self.intermediate_layers:
                inter.append(self.norm(x))  # normalised like the output (as ESPnet's InterCTC)
        return self.norm(x), (inter if self.intermediate_layers else None)


class ConformerStack(Encoder):
    """Blocks over features (a cascade stage): Linear(in_dim, dim) if needed, then the stack; no
    subsampling."""

    def __init__(self, in_dim: int, dims: BlockDims, intermediate_layers: list[int] | None = None,
                 frame_shift_s: float | None = None):
        super().__init__()
        self.proj = nn.Linear(in_dim, dims.dim) if in_dim != dims.dim else nn.Identity()
        self.stack, self.out_dim = BlockStack(dims, intermediate_layers), dims.dim
        self.frame_shift_s = frame_shift_s  # seconds per frame, passed through from the upstream encoder

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        if inputs.dim() != 3:
            raise ValueError(f"conformer_stack takes (B, T, D) features, got shape {tuple(inputs.shape)}")
        x, inter = self.stack(self.proj(inputs), lengths)
        return Features(x, lengths, intermediates=inter)


@register_encoder(modality="any")
def conformer_stack(in_dim: int, dim: int = 144, layers: int = 6, heads: int = 4, ffn: int = 576,
                    kernel: int = 15, dropout: float = 0.1, pos: str = "rel", conv_norm: str = "batch",
                    intermediate_layers: list[int] | None = None,
                    frame_shift_s: float | None = None) -> ConformerStack:
    """Conformer blocks (Gulati et al. 2020) over (B, T, in_dim) features, e.g. cascaded on a speech
    encoder."""
    dims = BlockDims(dim, heads, ffn, layers, kernel, dropout, pos, "conformer", conv_norm)
    return ConformerStack(in_dim, dims, intermediate_layers, frame_shift_s)
