"""Devices for training and benchmarks: pick one, decide on bf16 autocast, move nested batches onto it."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

__all__ = ["autocasts_bf16", "cpu_has_native_bf16", "move_to_device", "pick_device"]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda:LOCAL_RANK when CUDA is available, else cpu. A named device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device here; use cpu (or auto)")
    return device


def autocasts_bf16(precision: str, device: torch.device) -> bool:
    """``bf16`` autocasts on any device; ``auto`` only on CUDA (fp32 on CPU); ``fp32`` never."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (torch's check: AVX512 core, or AMX; AVX512-BF16 makes them
    fast); elsewhere CPU bf16 autocast falls back to slow reference code."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def move_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device, non_blocking) for v in obj)
    return obj
