"""Audio of any length for long-form transcription (``recipes.asr_subtitle.transcribe``): random access to a
file streamed at the model's rate (or loaded whole and resampled), and handing freed heap pages back to the OS
between batches."""
from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from zoo.data.audio import check_waveform, load_audio

__all__ = ["AudioSource", "release_freed_memory"]

log = logging.getLogger(__name__)


class AudioSource:
    """Random access to a mono signal at ``sample_rate``: streamed from a file at that rate, otherwise
    loaded whole (and resampled, logged) — only files at a foreign rate are held in memory."""

    def __init__(self, audio: str | Path | np.ndarray | torch.Tensor, sample_rate: int,
                 audio_sample_rate: int | None = None):
        self.sample_rate, self.file, self.wav = sample_rate, None, None
        if isinstance(audio, (str, Path)):
            info = _info(audio)
            if info.samplerate == sample_rate:
                self.file, self.length, self.channels = str(audio), info.frames, info.channels
                if info.channels > 1:
                    log.info("%s: %d channels, averaged to mono", audio, info.channels)
                if info.frames == 0:
                    raise ValueError(f"{audio}: the file holds no samples; pass a recording with speech")
            else:
                self.wav = load_audio(audio, sample_rate)
        else:
            if audio_sample_rate is None:
                raise ValueError("in-memory audio needs audio_sample_rate=...; pass the rate it was recorded at")
            self.wav = check_waveform(torch.as_tensor(audio), audio_sample_rate, sample_rate)
        if self.wav is not None:
            self.length = len(self.wav)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples [start, stop), zero outside the signal."""
        lo, hi = max(start, 0), min(stop, self.length)
        if self.wav is not None:
            piece = self.wav[lo:hi]
        else:
            with sf.SoundFile(self.file) as f:
                f.seek(lo)
                data = f.read(hi - lo, dtype="float32", always_2d=True)
            if not np.isfinite(data).all():
                raise ValueError(f"{self.file}: NaN/inf samples near {lo / self.sample_rate:.2f} s; the file is corrupt")
            piece = torch.from_numpy(data.mean(1))
        return torch.nn.functional.pad(piece, (lo - start, stop - hi))


def _info(path: str | Path):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot read audio ({err}); convert it to WAV or FLAC") from err


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS after a batch (glibc's ``malloc_trim``; a no-op elsewhere).
    glibc raises its mmap threshold as large blocks are freed, so later activations come from the heap,
    and with batches of varied sizes the heap's peak crept up with the file length: two-pass peak RSS at
    30 min was 1.51x that at 3 min, 1.24x with the trim, ~1.07x with segment widths padded to
    ``width_step_s`` as well (BENCHMARKS.md)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
