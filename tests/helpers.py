"""Helpers shared by the decoder tests (not collected: no test_ prefix)."""
from __future__ import annotations

import torch


def spread(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Well-spread random weights (no near-ties in the logits, non-degenerate token streams); eval mode.
    Vectors: LayerNorm gains near 1, biases near 0; matrices: N(0, 1.5^2 / fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("ln.weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)
    return module.eval()
