"""Mask estimation networks ("maskers") for encoder/masker/decoder separation, with their own registry.

- ``tcn``: the Conv-TasNet separation module (Luo & Mesgarani, TASLP 2019, §2.3, Fig. 1(B)/Fig. 2,
  Table 1 symbols): layer norm on the encoder output, a 1x1 bottleneck N -> B, R repeats of X
  1-D conv blocks with dilations 1, 2, ..., 2^(X-1). Each block: 1x1 conv B -> H, PReLU, norm,
  depthwise conv (kernel P, dilation d), PReLU, norm, then 1x1 convs to the residual path (B) and
  the skip path (Sc) (the residual output of the very last block is unused, so it is omitted, as in
  torchaudio). Summed skips -> PReLU -> 1x1 conv Sc -> C*N masks -> mask nonlinearity. Non-causal:
  global layer norm (gLN, eq. (13)) and symmetric padding; causal: cumulative layer norm (cLN,
  eqs. (14)-(16)) and left-only padding, so frame t never sees frames after t.
- ``dprnn``: dual-path RNN (Luo, Chen & Yoshioka, ICASSP 2020, §2): the bottleneck sequence is cut
  into chunks of K frames with 50% overlap, then R blocks alternate an intra-chunk BiLSTM and an
  inter-chunk (Bi)LSTM, each followed by a linear layer, gLN and a residual connection; the chunks
  are overlap-added back and a gated 1x1 output layer gives the masks.

Every masker maps ``(B, N, T)`` features (+ optional frame ``lengths`` and a ``condition`` (B, Q)
query embedding applied by FiLM, Perez et al. AAAI 2018) to masks ``(B, n_src, mask_dim, T)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "MASKERS",
    "CumulativeLayerNorm",
    "DPRNNMasker",
    "FiLM",
    "GlobalLayerNorm",
    "TCNDims",
    "TCNMasker",
    "create_masker",
    "list_maskers",
    "register_masker",
]

MASKERS: dict[str, Callable[..., nn.Module]] = {}


def register_masker(name: str):
    def wrap(cls):
        if name in MASKERS:
            raise ValueError(f"masker '{name}' is already registered by {MASKERS[name].__qualname__}")
        MASKERS[name] = cls
        return cls

    return wrap


def create_masker(name: str, **kwargs) -> nn.Module:
    """Build a registered masker, e.g. ``create_masker("tcn", N=512, B=128, H=512, ...)``."""
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; registered maskers: {sorted(MASKERS)}")
    return MASKERS[name](**kwargs)


def list_maskers() -> list[str]:
    return sorted(MASKERS)


# --- normalisation and conditioning ------------------------------------------------------------
class GlobalLayerNorm(nn.Module):
    """gLN (eq. (13)): statistics over channels *and* time, per-channel gain and bias.

    Without a mask this is ``GroupNorm(1, C)`` (a fused kernel); with a (B, 1, T) mask of valid
    frames the statistics exclude padding, so a padded row normalises exactly as it would alone.
    """

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        count = mask.sum((1, 2), keepdim=True) * x.shape[1]
        mean = (x * mask).sum((1, 2), keepdim=True) / count
        var = ((x - mean) * mask).pow(2).sum((1, 2), keepdim=True) / count
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None] + self.bias[:, None]


class CumulativeLayerNorm(nn.Module):
    """cLN (eqs. (14)-(16)): at frame t, statistics over channels and frames 0..t only (causal)."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # padding only ever follows the valid frames, so it cannot reach them through cumulative sums
        acc = x.double()
        count = x.shape[1] * torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=acc.dtype)
        mean = acc.sum(1, keepdim=True).cumsum(-1) / count
        var = (acc.pow(2).sum(1, keepdim=True).cumsum(-1) / count - mean.pow(2)).clamp_min(0)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        return (x - mean.to(x.dtype)) * scale * self.weight[:, None] + self.bias[:, None]


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "gLN":
        return GlobalLayerNorm(channels)
    if kind == "cLN":
        return CumulativeLayerNorm(channels)
    raise ValueError(f"unknown norm {kind!r}; use 'gLN' (non-causal) or 'cLN' (causal)")


class FiLM(nn.Module):
    """Feature-wise linear modulation: one (gamma, beta) per slot from a condition (B, Q).

    Initialised to the identity (gamma = 1, beta = 0), so adding a query net does not disturb a
    trained masker at step 0.
    """

    def __init__(self, condition_dim: int, widths: list[int]):
        super().__init__()
        self.widths = list(widths)
        self.proj = nn.Linear(condition_dim, 2 * sum(widths))
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, condition: Tensor) -> list[tuple[Tensor, Tensor]]:
        if condition.dim() != 2 or condition.shape[1] != self.proj.in_features:
            raise ValueError(
                f"condition must be (B, {self.proj.in_features}); got {tuple(condition.shape)}. "
                "Pool a query embedding to one vector per row first."
            )
        gb = self.proj(condition).split([w for w in self.widths for _ in (0, 1)], dim=1)
        return [(1 + gb[2 * i], gb[2 * i + 1]) for i in range(len(self.widths))]


def _modulate(x: Tensor, film: tuple[Tensor, Tensor] | None) -> Tensor:
    if film is None:
        return x
    gamma, beta = film
    shape = (*gamma.shape, *([1] * (x.dim() - 2)))
    return x * gamma.view(shape) + beta.view(shape)


def _mask_activation(kind: str) -> Callable[[Tensor], Tensor]:
    """Mask nonlinearity over (B, n_src, D, T): sigmoid, relu, or softmax across the sources."""
    table = {"sigmoid": torch.sigmoid, "relu": torch.relu, "softmax": lambda m: m.softmax(dim=1)}
    if kind not in table:
        raise ValueError(f"unknown mask activation {kind!r}; use one of {sorted(table)}")
    return table[kind]


# --- Conv-TasNet TCN ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TCNDims:
    """Table 1 of the paper: N filters, B bottleneck, H hidden, Sc skip, P kernel, X blocks, R repeats."""

    N: int = 512
    B: int = 128
    H: int = 512
    Sc: int = 128
    P: int = 3
    X: int = 8
    R: int = 3


def depthwise_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int, left: int) -> Tensor:
    """Depthwise dilated conv (groups = channels) as P shifted multiply-adds, zero padding ``left``
    frames before and ``(P - 1) * dilation - left`` after, so the length is kept.

    Equal to ``F.conv1d(F.pad(x, ...), weight, bias, dilation=dilation, groups=C)``; on CPU it beat
    the oneDNN depthwise kernel for Conv-TasNet's shapes (512 channels, 4k frames) in our measurements.
    """
    frames, taps = x.shape[-1], weight[:, 0]  # (C, P)
    out = x * taps[:, left // dilation, None] if left % dilation == 0 else torch.zeros_like(x)
    for k in range(taps.shape[1]):
        offset = k * dilation - left  # out[t] += w_k * x[t + offset]
        if (offset == 0 and left % dilation == 0) or abs(offset) >= frames:
            continue
        if offset > 0:
            out[..., : frames - offset].addcmul_(x[..., offset:], taps[:, k, None])
        else:
            out[..., -offset:].addcmul_(x[..., : frames + offset], taps[:, k, None])
    return out if bias is None else out.add_(bias[:, None])


def prelu(act: nn.PReLU, x: Tensor) -> Tensor:
    """PReLU; without autograd a single-slope PReLU runs in place (a leaky ReLU), saving a buffer."""
    if act.weight.numel() == 1 and not torch.is_grad_enabled():
        return F.leaky_relu_(x, float(act.weight))
    return act(x)


class TemporalBlock(nn.Module):
    """One 1-D conv block (Fig. 1(C)): 1x1 B->H, PReLU, norm, depthwise P/d, PReLU, norm, 1x1 -> (B, Sc).

    The residual and skip 1x1 convs share one fused weight (``res_skip``: first B rows residual,
    then Sc rows skip), so a block costs one GEMM at its output.
    """

    def __init__(self, d: TCNDims, dilation: int, norm: str, causal: bool, last: bool):
        super().__init__()
        self.causal, self.last, self.bottleneck = causal, last, d.B
        self.dilation, self.left = dilation, (d.P - 1) * dilation if causal else (d.P - 1) * dilation // 2
        self.in_conv = nn.Conv1d(d.B, d.H, 1)
        self.act1, self.norm1 = nn.PReLU(), make_norm(norm, d.H)
        self.dw_conv = nn.Conv1d(
            d.H, d.H, d.P, dilation=dilation, groups=d.H, padding=0 if causal else (d.P - 1) * dilation // 2
        )
        self.act2, self.norm2 = nn.PReLU(), make_norm(norm, d.H)
        self.res_skip = nn.Conv1d(d.H, (0 if last else d.B) + d.Sc, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        y = self.norm1(prelu(self.act1, self.in_conv(x)), mask)
        if mask is not None:
            y = y * mask  # the depthwise conv must see zeros past a row's end, as it would alone
        if y.device.type == "cpu":
            y = depthwise_conv1d(y, self.dw_conv.weight, self.dw_conv.bias, self.dilation, self.left)
        else:
            y = self.dw_conv(F.pad(y, (self.left, 0)) if self.causal else y)
        y = self.res_skip(self.norm2(prelu(self.act2, y), mask))
        if self.last:
            return None, y
        return y[:, : self.bottleneck], y[:, self.bottleneck :]


@register_masker("tcn")
class TCNMasker(nn.Module):
    """Conv-TasNet's TCN separation module; see the module docstring. In/out: (B, N, T) -> (B, C, D, T)."""

    def __init__(
        self,
        N: int = 512,
        B: int = 128,
        H: int = 512,
        Sc: int = 128,
        P: int = 3,
        X: int = 8,
        R: int = 3,
        n_src: int = 2,
        norm: str | None = None,
        causal: bool = False,
        mask_act: str = "sigmoid",
        mask_dim: int | None = None,
        condition_dim: int | None = None,
    ):
        super().__init__()
        norm = norm or ("cLN" if causal else "gLN")
        if causal and norm == "gLN":
            raise ValueError("gLN looks at the whole utterance; a causal TCN needs norm='cLN'")
        if not causal and P % 2 == 0:
            raise ValueError(f"a non-causal TCN needs an odd kernel P for symmetric padding; got P={P}")
        self.dims, self.n_src, self.causal = TCNDims(N, B, H, Sc, P, X, R), n_src, causal
        self.mask_dim = mask_dim or N
        self.input_norm = make_norm(norm, N)
        self.bottleneck = nn.Conv1d(N, B, 1)
        self.blocks = nn.ModuleList(
            TemporalBlock(self.dims, 2**x, norm, causal, last=(r == R - 1 and x == X - 1))
            for r in range(R)
            for x in range(X)
        )
        self.output_act = nn.PReLU()
        self.output_conv = nn.Conv1d(Sc, n_src * self.mask_dim, 1)
        self.activate = _mask_activation(mask_act)
        self.film = FiLM(condition_dim, [B] * len(self.blocks)) if condition_dim else None

    @property
    def receptive_field(self) -> int:
        """Frames seen by one output frame: 1 + R * (P - 1) * (2^X - 1)."""
        d = self.dims
        return 1 + d.R * (d.P - 1) * (2**d.X - 1)

    def forward(self, x: Tensor, lengths: Tensor | None = None, condition: Tensor | None = None) -> Tensor:
        mask = _frame_mask(lengths, x)
        films = _films(self.film, condition, x.shape[0])
        y = self.bottleneck(self.input_norm(x, mask))
        skip, inplace = None, not torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            res, s = block(_modulate(y, films[i] if films else None), mask)
            if inplace:  # no autograd graph: reuse buffers instead of allocating per block
                skip = s.clone() if skip is None else skip.add_(s)
                y = y if res is None else y.add_(res)
            else:
                skip = s if skip is None else skip + s
                y = y if res is None else y + res
        masks = self.output_conv(prelu(self.output_act, skip))
        return self.activate(rearrange(masks, "b (c d) t -> b c d t", c=self.n_src))


def _frame_mask(lengths: Tensor | None, x: Tensor) -> Tensor | None:
    """(B, 1, T) float mask of valid frames, or None when every row is full length."""
    if lengths is None:
        return None
    if lengths.shape != x.shape[:1]:
        raise ValueError(f"frame lengths {tuple(lengths.shape)} do not match the batch of {x.shape[0]} rows")
    if bool((lengths >= x.shape[-1]).all()):
        return None
    return (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None]


def _films(film: FiLM | None, condition: Tensor | None, batch: int) -> list | None:
    """Per-block (gamma, beta) from the condition, or None (no conditioning)."""
    if condition is None:
        return None
    if film is None:
        raise ValueError(
            "a condition was given but this masker was built without condition_dim; "
            "build it with condition_dim=<query embedding size>"
        )
    if condition.shape[0] != batch:
        raise ValueError(f"condition has {condition.shape[0]} rows but the features have {batch}")
    return film(condition)


# --- DPRNN --------------------------------------------------------------------------------------
class DualPathBlock(nn.Module):
    """Intra-chunk BiRNN then inter-chunk RNN, each: RNN -> linear -> gLN -> + residual (§2.2)."""

    def __init__(self, B: int, H: int, bidirectional: bool, dropout: float):
        super().__init__()
        self.intra = nn.LSTM(B, H, batch_first=True, bidirectional=True)
        self.intra_fc, self.intra_norm = nn.Linear(2 * H, B), GlobalLayerNorm(B)
        self.inter = nn.LSTM(B, H, batch_first=True, bidirectional=bidirectional)
        self.inter_fc, self.inter_norm = nn.Linear(H * (2 if bidirectional else 1), B), GlobalLayerNorm(B)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (b, B, S chunks, K frames)
        b, _, _s, _k = x.shape
        y = self.intra_fc(self.dropout(self.intra(rearrange(x, "b c s k -> (b s) k c"))[0]))
        x = x + self.intra_norm(rearrange(y, "(b s) k c -> b c s k", b=b))
        y = self.inter_fc(self.dropout(self.inter(rearrange(x, "b c s k -> (b k) s c"))[0]))
        return x + self.inter_norm(rearrange(y, "(b k) s c -> b c s k", b=b))


@register_masker("dprnn")
class DPRNNMasker(nn.Module):
    """Dual-path RNN masker (Luo et al. 2020). ``K`` chunk size, hop K/2; ``R`` dual-path blocks.

    Frame ``lengths`` are accepted for interface parity but padding is not masked out of the RNNs:
    batch rows of equal length (or one row at a time) for exact results.
    """

    def __init__(
        self,
        N: int = 64,
        B: int = 64,
        H: int = 128,
        K: int = 100,
        R: int = 6,
        n_src: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.0,
        mask_act: str = "sigmoid",
        mask_dim: int | None = None,
        condition_dim: int | None = None,
    ):
        super().__init__()
        if K < 2:
            raise ValueError(f"DPRNN chunk size K must be >= 2, got {K}")
        self.n_src, self.chunk, self.hop, self.width = n_src, K, K // 2, B
        self.mask_dim = mask_dim or N
        self.input_norm, self.bottleneck = GlobalLayerNorm(N), nn.Conv1d(N, B, 1)
        self.blocks = nn.ModuleList(DualPathBlock(B, H, bidirectional, dropout) for _ in range(R))
        self.output_act, self.output_conv = nn.PReLU(), nn.Conv2d(B, n_src * B, 1)
        self.net_out, self.net_gate = nn.Conv1d(B, B, 1), nn.Conv1d(B, B, 1)
        self.mask_conv = nn.Conv1d(B, self.mask_dim, 1, bias=False)
        self.activate = _mask_activation(mask_act)
        self.film = FiLM(condition_dim, [B] * R) if condition_dim else None

    def forward(self, x: Tensor, lengths: Tensor | None = None, condition: Tensor | None = None) -> Tensor:
        batch, _, frames = x.shape
        films = _films(self.film, condition, batch)
        y = self.bottleneck(self.input_norm(x))
        extra = -(frames + 2 * self.hop - self.chunk) % self.hop
        padded = frames + 2 * self.hop + extra
        chunks = F.pad(y, (self.hop, self.hop + extra)).unfold(-1, self.chunk, self.hop)  # (b, B, S, K)
        for i, block in enumerate(self.blocks):
            chunks = block(_modulate(chunks, films[i] if films else None))
        out = self.output_conv(self.output_act(chunks))  # (b, C*B, S, K)
        out = rearrange(out, "b (c d) s k -> (b c) (d k) s", c=self.n_src)
        out = F.fold(out, (1, padded), (1, self.chunk), stride=(1, self.hop))[:, :, 0]  # overlap-add
        out = out[..., self.hop : self.hop + frames]
        out = torch.tanh(self.net_out(out)) * torch.sigmoid(self.net_gate(out))
        masks = rearrange(self.mask_conv(out), "(b c) d t -> b c d t", c=self.n_src)
        return self.activate(masks)
