"""Readers for real recordings.

NSD-style fMRI betas (Allen et al., Nat. Neurosci. 2022): a trials x voxels matrix, or trials x
volume with a voxel mask (e.g. ``nsdgeneral``), in an HDF5 file (h5py; NSD's ``betas_sessionXX.hdf5``
hold int16 betas x 300 under ``betas``) or a ``.npy``; plus a stimulus index file with one image id
per trial (``.npy``, or text/CSV/TSV with one id per line or an ``image``/``73k_id`` column).
Voxels are z-scored with *training* statistics (:func:`zscore`); NaN voxels are an error, dropped or
zeroed on request.

M/EEG through MNE-Python (optional; ``pip install mne``): ``Epochs``/``Raw`` objects or ``.fif``
files -> (epochs, channels, time) data, the sampling rate and each channel's 2-D layout position in
[0, 1] (``mne.channels.find_layout``, as Défossez et al. 2023 do).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAN_POLICIES = ("error", "drop", "zero")


@dataclass
class Betas:
    betas: np.ndarray            # (trials, voxels) float32
    images: np.ndarray | None    # (trials,) stimulus ids
    voxel_index: np.ndarray      # (voxels,) index of each kept voxel in the original (masked) order


def _read_array(path: Path, key: str | None) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            names = list(f.keys())
            name = key or ("betas" if "betas" in f else names[0] if len(names) == 1 else None)
            if name is None or name not in f:
                raise ValueError(f"{path} holds datasets {names}; name the betas with key=...")
            data = f[name][()]
            scale = f[name].attrs.get("scale")
        data = data.astype(np.float32)
        return data / float(scale) if scale else data
    raise ValueError(f"unsupported betas file {path.name}: use .npy or .h5/.hdf5")


def read_stimulus_index(path: str | Path) -> np.ndarray:
    """One stimulus id per trial from ``.npy`` or a text/CSV/TSV file (a bare column or an id column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stimulus index {path} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(np.int64).reshape(-1)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in ("image", "73k_id", "stimulus", "image_id") if c in header), None)
    if column is None and not rows[0][0].strip().lstrip("-").isdigit():
        raise ValueError(f"{path}: no 'image'/'73k_id'/'stimulus' column in header {rows[0]}")
    body = rows[1:] if column is not None else rows
    return np.asarray([int(r[column or 0]) for r in body], dtype=np.int64)


def load_betas(path: str | Path, index: str | Path | None = None, mask: str | Path | np.ndarray | None = None,
               key: str | None = None, nan: str = "error") -> Betas:
    """Read NSD-style betas; a ``mask`` (boolean volume or voxel indices) selects voxels of 4-D data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"betas file {path} does not exist")
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
    data = _read_array(path, key)
    if data.ndim > 2:
        if mask is None:
            raise ValueError(f"{path.name} holds volumes {data.shape}; pass mask= (e.g. nsdgeneral, a boolean volume "
                             f"of shape {data.shape[1:]}) to select voxels")
        m = np.load(mask) if isinstance(mask, (str, Path)) else np.asarray(mask)
        if m.dtype == bool:
            if m.shape != data.shape[1:]:
                raise ValueError(f"mask shape {m.shape} does not match the volume shape {data.shape[1:]}")
            data = data[:, m]
        else:
            data = data.reshape(len(data), -1)[:, m.astype(np.int64)]
    elif data.ndim == 1:
        data = data[None]
    data = data.astype(np.float32)
    keep = np.arange(data.shape[1])
    bad = ~np.isfinite(data).all(0)
    if bad.any():
        if nan == "error":
            raise ValueError(f"{path.name}: {int(bad.sum())} voxels hold NaN/inf (first {np.flatnonzero(bad)[:5].tolist()}); "
                             "pass nan='drop' to remove them or nan='zero' to zero them (after z-scoring)")
        if nan == "drop":
            data, keep = data[:, ~bad], keep[~bad]
        else:
            data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    images = read_stimulus_index(index) if index is not None else None
    if images is not None and len(images) != len(data):
        raise ValueError(f"the stimulus index has {len(images)} entries but the betas have {len(data)} trials")
    return Betas(data, images, keep)


def zscore(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score every voxel with the *training* mean/std (never the test set's), as NSD decoders do."""
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return [((x - mu) / sd).astype(np.float32) for x in (train, *others)]


def average_repeats(betas: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average the trials of each stimulus (NSD test protocol); returns (betas, unique ids)."""
    ids, inverse = np.unique(images, return_inverse=True)
    out = np.zeros((len(ids), betas.shape[1]), dtype=np.float64)
    np.add.at(out, inverse, betas)
    return (out / np.bincount(inverse)[:, None]).astype(np.float32), ids


# --- M/EEG through MNE ------------------------------------------------------------------------
def _mne():
    try:
        import mne
    except ImportError as error:
        raise ImportError("reading M/EEG needs MNE-Python: pip install mne (or pip install 'encdec-zoo[brain]')") from error
    return mne


@dataclass
class Recording:
    data: np.ndarray             # (epochs, channels, time) float32 (epochs = 1 for Raw)
    sfreq: float
    positions: np.ndarray        # (channels, 2) in [0, 1]
    channels: list[str]


def sensor_positions(info: Any, ch_type: str | None = None) -> tuple[np.ndarray, list[str]]:
    """2-D layout positions (channels, 2) in [0, 1] of the picked channels, from ``mne.channels.find_layout``."""
    mne = _mne()
    try:
        layout = mne.channels.find_layout(info, ch_type=ch_type)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"no 2-D sensor layout for these channels ({error}); set a montage first "
                         "(e.g. raw.set_montage('biosemi64') for EEG) so positions are known") from error
    names = [n for n in info["ch_names"] if n in layout.names]
    if not names:
        raise ValueError("none of the recording's channels is in its sensor layout; set a montage with positions")
    pos = np.asarray([layout.pos[layout.names.index(n), :2] + layout.pos[layout.names.index(n), 2:4] / 2 for n in names])
    lo, hi = pos.min(0), pos.max(0)
    return ((pos - lo) / np.where(hi > lo, hi - lo, 1)).astype(np.float32), names


def load_mne(source: Any, picks: str = "data", ch_type: str | None = None) -> Recording:
    """An ``mne.Epochs``/``mne.io.Raw`` object or a ``.fif`` path -> data, rate and sensor positions."""
    mne = _mne()
    obj = source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        name = path.name
        obj = (mne.read_epochs(path, preload=True, verbose="error") if name.endswith(("-epo.fif", "_epo.fif"))
               else mne.io.read_raw_fif(path, preload=True, verbose="error"))
    inst = obj.copy().pick(picks)
    positions, names = sensor_positions(inst.info, ch_type)
    inst.pick(names)
    data = inst.get_data()
    data = data[None] if data.ndim == 2 else data
    return Recording(data.astype(np.float32), float(inst.info["sfreq"]), positions, names)
