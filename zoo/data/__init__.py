"""Data basics shared by every recipe.

- :mod:`zoo.data.audio`: ``load_audio`` / ``save_audio`` (soundfile I/O, explicit resampling, a stated
  channel policy) and ``check_waveform`` for in-memory audio.
- :mod:`zoo.data.manifest`: JSONL manifests validated against a small schema on load.
- :mod:`zoo.data.collate`: padding collates (audio + lengths, token targets + lengths, dicts of tensors).
- :mod:`zoo.data.espeak`: speech synthesis through the eSpeak NG shared library (ctypes).
- :mod:`zoo.data.bucketing`: duration-bucketed, resumable, rank-aware batch sampler (lhotse).
- :mod:`zoo.data.sampler`: the plain resumable batch sampler and its protocol.

Submodules are imported on use, so ``import zoo.data`` stays cheap (lhotse is only needed for bucketing).
"""
from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """Where recipes cache their generated data: ``$ZOO_DATA_DIR`` (``$ZOO_CACHE`` is read as an older alias),
    else ``~/.cache/encdec-zoo``."""
    base = os.environ.get("ZOO_DATA_DIR") or os.environ.get("ZOO_CACHE") or "~/.cache/encdec-zoo"
    return Path(base).expanduser()
