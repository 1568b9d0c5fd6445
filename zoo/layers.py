"""Small building blocks shared by encoders and decoders."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DecodingLinear", "FastDropout", "few_row_linear"]


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


def few_row_linear(owner: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` with the faster operand layout for the few rows of a decoding step.

    On CPU a product of 1-12 rows with a weight is memory-bound, and MKL's speed there depends on the
    layout (fp32, 1 thread, weights not in cache): one row against a wide ``(out, in)`` weight runs
    ~2x faster as ``x @ W^T`` with ``W^T`` stored contiguously (384 -> 1536: 0.28 -> 0.14 ms; the
    51,865-token vocabulary: 9.3 -> 3.4 ms), 2-12 rows against a vocabulary as ``W @ x^T``
    (4 rows: 13.5 -> 6.0 ms), and so do 2-8 rows against the layers of a Whisper-tiny decoder (the 24
    products of a step, 2 threads, weights evicted: 2 rows 6.6 -> 3.7 ms, 4 rows 9.0 -> 3.9 ms, 8 rows
    7.1 -> 6.1 ms; 12 rows are slower that way; layers under 2^17 weights, e.g. d=144, gain nothing
    and keep ``F.linear``). Exact fp32 either way (only the summation order differs). Training, GPUs
    and other shapes take ``F.linear``. The transposed copy is cached on ``owner`` and rebuilt when
    the weight changes.
    """
    out_f, in_f = weight.shape
    rows = x.numel() // in_f if in_f else 0
    if torch.is_grad_enabled() or x.device.type != "cpu" or weight.dtype != torch.float32 or not 0 < rows <= 12:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, in_f)
    if rows == 1 and out_f >= 2 * in_f:
        key = (weight.data_ptr(), weight._version)
        if getattr(owner, "_weight_t", (None,))[0] != key:
            owner._weight_t = (key, weight.detach().t().contiguous())
        w_t = owner._weight_t[1]
        y = flat @ w_t if bias is None else torch.addmm(bias, flat, w_t)
    elif out_f >= 4096:
        y = torch.stack((weight @ flat.T).unbind(1))  # 4x faster than .T.contiguous() at (51865, 8)
        y = y if bias is None else y + bias
    elif 2 <= rows <= 8 and out_f * in_f >= 1 << 17:  # small layers: F.linear's lower overhead wins
        y = (weight @ flat.T if bias is None else torch.addmm(bias[:, None], weight, flat.T)).T.contiguous()
    else:
        return F.linear(x, weight, bias)
    return y.view(*x.shape[:-1], out_f)


class DecodingLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose decoding steps use :func:`few_row_linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return few_row_linear(self, x, self.weight, self.bias)
