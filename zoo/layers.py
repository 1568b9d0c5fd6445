"""Small building blocks shared by encoders and decoders."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FastDropout"]


class _KeepMask(torch.autograd.Function):
    """``x * keep * scale`` whose backward reuses the boolean mask (no float mask is kept)."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0.0)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None, None


class FastDropout(nn.Dropout):
    """Inverted dropout (Srivastava et al., JMLR 2014) whose CPU mask costs one 64-bit draw per 8 units.

    On CPU, ``nn.Dropout`` draws one Mersenne-Twister number per element through ``bernoulli_``, which
    took ~20% of a Conformer training step on 2 cores. Here one 64-bit draw gives 8 random bytes and a
    unit is dropped when its byte is below ``round(256 p)``: the drop probability is ``p`` quantised to
    1/256 (0.1 -> 0.1016), and kept units are scaled by ``1 / (1 - p_quantised)`` so the expectation is
    exact. On CUDA it is ``F.dropout``; in eval mode the identity. Same constructor and state as ``nn.Dropout``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, True, self.inplace)
        threshold = round(self.p * 256)
        n = x.numel()
        words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
        random_bytes = words.view(torch.uint8)[:n]
        keep = (random_bytes >= threshold).view(x.shape)
        return _KeepMask.apply(x, keep, 256.0 / (256 - threshold))
