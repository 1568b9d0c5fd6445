"""Crash-safe training checkpoints: atomic writes, keep-last-k, newest-complete lookup, safe loads.

A checkpoint is written to a hidden temporary file in the target directory, flushed and fsynced,
then renamed over its final name (``os.replace`` is atomic on POSIX) and the directory is fsynced,
so a reader sees either the whole ``step-00000123.pt`` or none of it. Loading goes through
``torch.load(weights_only=True)`` only: payloads are tensors and plain containers of primitives.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.hub import CheckpointError

__all__ = [
    "capture_rng",
    "checkpoint_name",
    "is_complete",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

_PATTERN = re.compile(r"^step-(\d{8,})\.pt$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(payload: dict[str, Any], directory: str | Path, step: int, keep_last: int | None = 3) -> Path:
    """Atomically write ``payload`` as ``directory/step-XXXXXXXX.pt``; keep only the ``keep_last`` newest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{final.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(directory)[:-keep_last]:
            old.unlink(missing_ok=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files (``step-*.pt``, never temporary files) in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def is_complete(path: str | Path) -> bool:
    """A cheap completeness check: torch.save writes a zip whose central directory sits at the very end,
    so a torn or truncated file fails it."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (torn files are skipped with a warning), or None."""
    for path in reversed(list_checkpoints(directory)):
        if is_complete(path):
            return path
        warnings.warn(f"skipping incomplete checkpoint {path} (torn write?); using an older one", stacklevel=2)
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; refuses pickles that would run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot load checkpoint {path} safely (weights_only=True): {error}. Checkpoints must hold only "
            "tensors and plain containers; a torn file means the run was killed mid-write, use an older one"
        ) from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    return payload


def capture_rng() -> dict[str, Any]:
    """Every RNG stream (torch CPU and CUDA, python ``random``, numpy) as tensors and primitives,
    so it survives ``torch.load(weights_only=True)``."""
    version, state, gauss = random.getstate()
    key, mt, pos, has_gauss, cached = np.random.get_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        python=dict(version=version, state=torch.tensor(state, dtype=torch.int64), gauss=gauss),
        numpy=dict(key=key, state=torch.from_numpy(mt.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached=float(cached)),
    )


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["key"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
