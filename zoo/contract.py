"""The one contract every encoder and decoder in the zoo speaks.

Every encoder returns :class:`Features`; every decoder consumes one ``Features`` (or a list, when
a graph node reads several encoders), trains through ``forward(memory, targets) -> DecoderOutput``
and infers through ``decode(memory, options)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn


@dataclass
class Features:
    """What every encoder returns.

    x : shape (B, T, D) frames, patches or tokens; T == 1 for a pooled vector
    lengths : shape (B,) valid lengths along T, or None when every step is valid
    spatial : shape (B, D, H, W) where a pixel decoder needs a map
    intermediates : per-layer hidden states, when asked for
    """

    x: Tensor
    lengths: Tensor | None = None
    spatial: Tensor | None = None
    intermediates: list[Tensor] | None = None

    @property
    def dim(self) -> int:
        return self.x.shape[-1]

    def padding_mask(self) -> Tensor:
        """(B, T) bool, True at padded positions (the convention of ``nn.MultiheadAttention``)."""
        return padding_mask(self.lengths, self.x.shape[1], self.x.device, self.x.shape[0])

    def select(self, index: Tensor) -> "Features":
        """The rows ``index`` of the batch, every field sliced alike."""
        return select_rows(self, index)


@dataclass
class DecoderOutput:
    """What a decoder's training forward returns: a scalar loss plus whatever it computed."""

    loss: Tensor
    logits: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hypothesis:
    """One decoded result: tokens, text, a score and, where the decoder can, timestamps (s)."""

    tokens: list[int]
    text: str = ""
    score: float = 0.0
    timestamps: list[tuple[float, float]] | None = None


class Encoder(nn.Module):
    """Base class: ``forward(inputs, lengths=None, **conditions) -> Features``; sets ``out_dim``."""

    out_dim: int

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions: Any) -> Features:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")


class Decoder(nn.Module):
    """Base class: ``forward(memory, targets) -> DecoderOutput`` and ``decode(memory, options)``.

    ``targets`` is a dict of tensors whose first dimension is the batch (e.g. ``tokens`` and
    ``lengths``). ``label_keys`` names the keys a batch must provide for this head to train.
    """

    label_keys: tuple[str, ...] = ()

    def forward(self, memory: Features | Sequence[Features], targets: dict[str, Tensor]) -> DecoderOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    @torch.no_grad()
    def decode(self, memory: Features | Sequence[Features], options: Any = None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement decode")


def padding_mask(lengths: Tensor | None, max_len: int, device=None, batch: int | None = None) -> Tensor:
    """(B, T) bool mask, True where ``t >= lengths[b]``; all False when ``lengths`` is None."""
    if lengths is None:
        return torch.zeros(batch or 1, max_len, dtype=torch.bool, device=device)
    steps = torch.arange(max_len, device=lengths.device)
    return steps[None, :] >= lengths[:, None]


def select_rows(obj: Any, index: Tensor) -> Any:
    """Slice the batch dimension of tensors nested in Features, dicts, lists and tuples."""
    if isinstance(obj, Tensor):
        return obj.index_select(0, index.to(obj.device)) if obj.dim() > 0 else obj
    if isinstance(obj, Features):
        return replace(
            obj,
            x=select_rows(obj.x, index),
            lengths=select_rows(obj.lengths, index),
            spatial=select_rows(obj.spatial, index),
            intermediates=select_rows(obj.intermediates, index),
        )
    if isinstance(obj, dict):
        return {k: select_rows(v, index) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if obj and not isinstance(obj[0], (Tensor, Features, dict, list, tuple)):
            return [obj[i] for i in index.tolist()]  # a list of ids or strings: one entry per row
        return type(obj)(select_rows(v, index) for v in obj)
    return obj
