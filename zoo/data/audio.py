"""Audio I/O with soundfile, explicit resampling and a stated channel policy.

torchaudio >= 2.9 moved ``load``/``save`` onto TorchCodec (not a dependency here), so files are read
and written with soundfile; resampling is always explicit, with ``torchaudio.functional.resample``
(band-limited sinc interpolation), and is logged at INFO with both rates.

Channel policy: ``channels="mean"`` (the default) averages all channels to mono, ``"first"`` keeps
channel 0, ``"all"`` keeps every channel as ``(C, T)``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["load_audio", "save_audio", "check_waveform", "resample", "CHANNEL_POLICIES"]

log = logging.getLogger(__name__)
CHANNEL_POLICIES = ("mean", "first", "all")


def resample(wav: Tensor, orig_sr: int, new_sr: int, what: str = "audio") -> Tensor:
    """``torchaudio.functional.resample`` along the last axis, logged at INFO; a no-op at equal rates."""
    if orig_sr == new_sr:
        return wav
    log.info("resampling %s from %d Hz to %d Hz", what, orig_sr, new_sr)
    return AF.resample(wav, int(orig_sr), int(new_sr))


def load_audio(path: str | Path, sample_rate: int,
               channels: Literal["mean", "first", "all"] = "mean") -> Tensor:
    """Read ``path`` as float32 in [-1, 1] at ``sample_rate`` Hz.

    Returns ``(T,)`` for ``channels="mean"`` (average of all channels, the default) or ``"first"``,
    and ``(C, T)`` for ``"all"``. Raises ``FileNotFoundError`` for a missing file and ``ValueError``
    naming the file and the fix for unreadable, empty or non-finite audio.
    """
    if channels not in CHANNEL_POLICIES:
        raise ValueError(f"channels={channels!r} is not a channel policy; use one of {CHANNEL_POLICIES}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file; check the path (relative to {Path.cwd()})")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(
            f"{path}: cannot read audio ({err}); convert it to WAV or FLAC, "
            f"e.g. `ffmpeg -i {path.name} out.wav`"
        ) from err
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"{path}: the file holds no samples; re-export it or drop it from the manifest")
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise ValueError(f"{path}: {bad} NaN/inf samples; the file is corrupt, re-export it or drop it")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, T)
    if channels == "mean":
        wav = wav.mean(0)
    elif channels == "first":
        wav = wav[0]
    return resample(wav, sr, sample_rate, what=str(path)).contiguous()


def save_audio(path: str | Path, wav: Tensor | np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write ``(T,)`` or ``(C, T)`` float audio to ``path`` (format from the suffix; parents created)."""
    x = wav.detach().cpu().float().numpy() if isinstance(wav, Tensor) else np.asarray(wav, dtype=np.float32)
    if x.ndim not in (1, 2) or x.size == 0:
        raise ValueError(f"save_audio({path}): expected a non-empty (T,) or (C, T) waveform, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"save_audio({path}): the waveform has NaN/inf samples; fix the signal first")
    if subtype.startswith("PCM") and np.abs(x).max() > 1.0:
        raise ValueError(
            f"save_audio({path}): peak {np.abs(x).max():.3f} exceeds 1.0 and would clip in {subtype}; "
            "scale it (wav / wav.abs().max()) or save with subtype='FLOAT'"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.T if x.ndim == 2 else x, int(sample_rate), subtype=subtype)
    return path


def check_waveform(wav: Tensor | np.ndarray, sample_rate: int, expected_sr: int, min_samples: int = 1,
                   name: str = "waveform") -> Tensor:
    """Validate in-memory audio for a model; returns a mono float32 ``(T,)`` tensor.

    Accepts ``(T,)`` or ``(1, T)``. Wrong rate, several channels, integer samples, emptiness, NaN/inf
    and clips shorter than ``min_samples`` raise ``ValueError`` naming the problem and the fix.
    """
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(wav)
    if not isinstance(wav, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(wav).__name__}")
    if not wav.is_floating_point():
        raise ValueError(
            f"{name}: {wav.dtype} samples; convert to float in [-1, 1] first (int16: wav / 32768)"
        )
    if sample_rate != expected_sr:
        raise ValueError(
            f"{name}: sampled at {sample_rate} Hz but the model expects {expected_sr} Hz; resample with "
            f"torchaudio.functional.resample(wav, {sample_rate}, {expected_sr}) or read the file with "
            f"zoo.data.audio.load_audio(path, {expected_sr})"
        )
    if wav.dim() == 2 and 1 in wav.shape:
        wav = wav.reshape(-1)
    if wav.dim() == 2:
        axis = 0 if wav.shape[0] < wav.shape[1] else 1
        raise ValueError(
            f"{name}: {wav.shape[axis]} channels (shape {tuple(wav.shape)}); the model takes mono audio, "
            f"mix it down with wav.mean({axis}) or read the file with load_audio(path, sr, channels='mean')"
        )
    if wav.dim() != 1:
        raise ValueError(f"{name}: expected a (T,) waveform, got shape {tuple(wav.shape)}; "
                         "pass one clip at a time")
    if wav.numel() == 0:
        raise ValueError(f"{name}: empty audio (0 samples); pass a clip with speech in it")
    if not torch.isfinite(wav).all():
        bad = int((~torch.isfinite(wav)).sum())
        raise ValueError(f"{name}: {bad} NaN/inf samples; clean the signal first")
    if wav.numel() < min_samples:
        raise ValueError(
            f"{name}: {wav.numel()} samples ({wav.numel() / expected_sr:.3f} s) is shorter than the "
            f"{min_samples} samples ({min_samples / expected_sr:.3f} s) the model needs; pad it with zeros "
            "(torch.nn.functional.pad) or pass a longer clip"
        )
    return wav.float().contiguous()
