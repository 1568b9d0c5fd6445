"""Exact greedy argmax over a large vocabulary through an int8 screen (CPU).

A greedy step needs the argmax of ``h @ W^T`` over the vocabulary, not the logits themselves. At
Whisper's 51,865 tokens the fp32 product reads 80 MB of weights per step and is bound by memory on
a CPU. :class:`VocabScreen` computes every logit approximately with fbgemm's int8 product (a
quarter of the bytes, 20 MB: it fits in cache) together with a proven bound on the error, then
rescores in fp32 only the few tokens the bound cannot rule out. The token is that of the fp32
argmax (the classic filter-and-refine of exact top-k retrieval); only the log-normaliser of the
score comes from the int8 logits.

The bound. The weight is quantised per row, ``w_v ~ s_v q_v`` (int8 in [-127, 127]); the hidden
state on a shared grid, ``h ~ s k`` (k in [-63, 64]: 7 bits, as fbgemm's AVX2 kernel needs
``reduce_range`` to avoid int16 saturation). One extra row holding ``-63 s`` and ``64 s`` pins
fbgemm's own dynamic quantisation to exactly this grid, so its integer product is ``q_v . k``
exactly. With ``w^_v = s_v q_v`` and ``r = h - s k``,

    |w_v . h - w^_v . (s k)| = |(w_v - w^_v) . h + w^_v . r| <= max_v ||w_v - w^_v|| ||h|| + max_v ||w^_v|| ||r||

(Cauchy-Schwarz), plus a slack for fp32 rounding. Every token outside the top ``k`` approximate
logits scores at most (k-th approximate logit + bound); when the best fp32-rescored candidate beats
that strictly, it is the argmax. Rows where it does not (near-ties at the bound's scale) rescore 32x
as many candidates, then, if still unsettled, take the full fp32 product. At construction the screen
checks fbgemm against an exact float64 product of the same integers (``exact``); ``build`` returns
None, with a warning, if they disagree.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["VocabScreen"]

ACT_LOW, ACT_HIGH = -63, 64  # the 7-bit activation grid: fbgemm's reduce_range maps it to 0..127, zero point 63
ROUNDING_SLACK = 1e-4        # relative to max ||w|| ||h||: far above fp32 rounding of a length-D dot product


class VocabScreen:
    """int8 approximate logits with an error bound, and the exact argmax they certify (see module doc)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, candidates: int = 32):
        w = weight.detach().float()
        scales = (w.abs().amax(1) / 127).clamp_min(1e-30)
        with warnings.catch_warnings():  # torch >= 2.12 deprecates quantized tensors; build() falls back if removed
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(w, scales.double(), torch.zeros(w.shape[0], dtype=torch.long), 0,
                                                 torch.qint8)
        w_hat = qweight.int_repr().double() * qweight.q_per_channel_scales()[:, None].float().double()
        self.weight, self.bias, self.candidates = weight.detach(), None if bias is None else bias.detach(), candidates
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.weight_error = float((w.double() - w_hat).norm(dim=1).max())  # max_v ||w_v - w^_v||
        self.hat_norm = float(w_hat.norm(dim=1).max())                     # max_v ||w^_v||
        self.norm = float(w.norm(dim=1).max())
        self.pin = w.new_zeros(1, w.shape[1])  # times the grid step: -63 and 64 steps, fbgemm's range
        self.pin[0, 0], self.pin[0, 1] = ACT_LOW, ACT_HIGH
        self.exact = self._self_check(w_hat)  # fbgemm's product equals the integer product (else build -> None)

    @classmethod
    def build(cls, weight: Tensor, bias: Tensor | None = None) -> VocabScreen | None:
        """A screen for ``weight`` (V, D), or None where fbgemm is missing or fails the exactness check."""
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.shape[1] < 2:
            return None
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            return None
        try:
            screen = cls(weight, bias)
        except (RuntimeError, AttributeError) as err:  # an op missing from this torch build (or removed)
            warnings.warn(f"vocab_screen disabled: int8 product unavailable ({err}); decoding uses fp32 logits")
            return None
        if not screen.exact:
            warnings.warn("vocab_screen disabled: fbgemm's int8 product did not match the exact integer product; "
                          "decoding uses fp32 logits")
            return None
        return screen

    def _self_check(self, w_hat: Tensor) -> bool:
        h = torch.randn(3, self.weight.shape[1], generator=torch.Generator().manual_seed(0))
        approx, _, grid = self._approx(h)
        exact = grid.double() @ w_hat.T
        scale = grid.double().abs() @ w_hat.abs().T  # sum |w^||x^|: the size the products' rounding scales with
        return bool(((approx.double() - exact).abs() <= 1e-5 * scale + 1e-30).all())

    def _approx(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rows = h.shape[0]
        step = h.abs().amax().clamp_min(1e-12) / -ACT_LOW  # a tensor: no host sync
        x = h.new_empty(rows + 1, h.shape[1])  # the rows on the grid, then the pinning row
        grid = torch.div(h, step, out=x[:rows]).round_().clamp_(ACT_LOW, ACT_HIGH).mul_(step)
        torch.mul(self.pin, step, out=x[rows:])
        approx = torch.ops.quantized.linear_dynamic(x, self.packed, True)[:rows]
        return approx, h - grid, grid

    def approx(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (R, D) fp32 -> approximate logits (R, V) and per row a bound on |exact - approximate|."""
        approx, residual, _ = self._approx(h)
        if self.bias is not None:
            approx = approx + self.bias
        h_part = 1.001 * self.weight_error + ROUNDING_SLACK * self.norm
        bound = h.norm(dim=1).mul_(h_part).add_(residual.norm(dim=1), alpha=1.001 * self.hat_norm)
        return approx, bound.add_(1e-6)

    def argmax(self, h: Tensor, approx: Tensor, bound: Tensor) -> tuple[Tensor, Tensor]:
        """The fp32 argmax (lowest id among equals) of each row and its fp32 logit.

        ``approx`` may carry -inf at suppressed tokens (they are never chosen). Rows the top
        ``candidates`` cannot settle try 32x as many, then the full fp32 product."""
        token, logit, certain = self._rescore(h, approx, bound, self.candidates)
        if not bool(certain.all()):  # near-ties at the bound's scale
            rows = (~certain).nonzero().squeeze(1)
            token[rows], logit[rows], certain[rows] = self._rescore(h[rows], approx[rows], bound[rows],
                                                                    32 * self.candidates)
        if not bool(certain.all()):
            rows = (~certain).nonzero().squeeze(1)
            full = F.linear(h[rows], self.weight, self.bias)
            full = full.masked_fill(approx[rows] == float("-inf"), float("-inf"))
            logit[rows], token[rows] = full.max(1)
        return token, logit

    def _rescore(self, h: Tensor, approx: Tensor, bound: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """fp32 logits of each row's top-k approximate tokens: the best (token, logit), and whether
        it provably beats every token outside the top k (approx <= k-th value, so exact <= it + bound)."""
        k = min(k, approx.shape[1])
        values, ids = approx.topk(k, 1, sorted=False)
        exact = torch.bmm(self.weight[ids], h[:, :, None]).squeeze(2)
        if self.bias is not None:
            exact = exact + self.bias[ids]
        exact = exact.masked_fill(values == float("-inf"), float("-inf"))
        logit = exact.amax(1)
        token = torch.where(exact == logit[:, None], ids, approx.shape[1]).amin(1)
        everything = k == approx.shape[1]
        return token, logit, (logit > values.amin(1) + bound) | everything
