"""Pictures a person would rather look at: spectrograms with alignments, separated sources, mask overlays.

matplotlib with the Agg backend (no display needed); every function writes a PNG and returns its path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def log_spectrogram(wav: torch.Tensor | np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    wav = torch.as_tensor(wav, dtype=torch.float32).flatten()
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return (20 * torch.log10(spec + 1e-6)).numpy()


def _show_spec(ax, wav, sample_rate, title, hop=128):
    spec = log_spectrogram(wav, sample_rate, hop=hop)
    duration = spec.shape[1] * hop / sample_rate
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, sample_rate / 2000),
              vmin=spec.max() - 80, vmax=spec.max())
    ax.set_ylabel("kHz")
    ax.set_title(title, fontsize=9)


def plot_alignment(path: str | Path, wav, sample_rate: int, spans: Sequence[tuple[str, float, float]],
                   title: str = "") -> Path:
    """Spectrogram with labelled spans (token or word, start s, end s) drawn under it."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    _show_spec(top, wav, sample_rate, title or "spectrogram and alignment")
    for i, (label, start, end) in enumerate(spans):
        bottom.axvspan(start, end, color=f"C{i % 10}", alpha=0.35)
        bottom.text((start + end) / 2, 0.5, label, ha="center", va="center", fontsize=7, rotation=90)
        top.axvline(start, color="white", lw=0.4, alpha=0.6)
    bottom.set_yticks([])
    bottom.set_xlabel("time (s)")
    return _save(fig, path)


def plot_sources(path: str | Path, mixture, sources: Sequence, sample_rate: int,
                 names: Sequence[str] | None = None) -> Path:
    """Spectrograms of a mixture and its separated (or reference) sources, stacked."""
    n = 1 + len(sources)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.2 * n), sharex=True)
    _show_spec(axes[0], mixture, sample_rate, "mixture")
    for i, (ax, src) in enumerate(zip(axes[1:], sources)):
        _show_spec(ax, src, sample_rate, names[i] if names else f"source {i + 1}")
    axes[-1].set_xlabel("time (s)")
    return _save(fig, path)


def plot_mask_overlay(path: str | Path, image: np.ndarray, mask: np.ndarray, title: str = "") -> Path:
    """An RGB image (H, W, 3) in [0, 1] or uint8 with a boolean / probability mask overlaid in red."""
    image = np.asarray(image, dtype=np.float32)
    image = image / 255.0 if image.max() > 1.5 else image
    mask = np.asarray(mask, dtype=np.float32)
    overlay = image.copy()
    overlay[..., 0] = np.clip(image[..., 0] * (1 - 0.6 * mask) + 0.6 * mask, 0, 1)
    overlay[..., 1:] = image[..., 1:] * (1 - 0.5 * mask[..., None])
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(overlay)
    axes[1].set_title(title or "mask", fontsize=9)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def plot_captioned_images(path: str | Path, images: Sequence[np.ndarray], captions: Sequence[str],
                          columns: int = 3) -> Path:
    """A grid of RGB images (H, W, 3), each with its caption (wrapped) underneath."""
    import textwrap

    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(np.asarray(image))
        ax.set_title(textwrap.fill(caption, 34), fontsize=7, y=-0.02, va="top")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
