"""Long-form separation by chunked overlap-add with permutation alignment across chunks.

A separator trained on seconds-long mixtures runs on hours of audio window by window: each window of
``window`` samples (hop ``hop``) is separated on its own, its sources are reordered to match the
previous window's on their overlap (the permutation minimising the pairwise MSE, as asteroid's
``LambdaOverlapAdd(..., reorder_chunks=True)``, asteroid/dsp/overlap_add.py), weighted by a Hann
window and overlap-added; the output is normalised by the summed window, so any hop < window works.
The input is streamed block by block and finished output samples are emitted as soon as no later
window can touch them, so memory is bounded by the window, not by the file (a whole-file Conv-TasNet
pass on 2 minutes asks for ~15 GiB, asteroid#203).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import soundfile as sf
import torch
from torch import Tensor

from zoo.losses import pit_from_matrix, reorder

__all__ = ["OverlapAdd", "model_fn", "separate_file", "separate_tensor"]

SeparateFn = Callable[[Tensor], Tensor]  # (1, W) mixture window -> (1, n_src, W) sources


class OverlapAdd:
    """``OverlapAdd(fn, n_src, window, hop).stream(blocks)`` yields finished (n_src, n) output blocks."""

    def __init__(self, fn: SeparateFn, n_src: int, window: int, hop: int | None = None, reorder_chunks: bool = True):
        hop = hop or window // 2
        if not 0 < hop < window:
            raise ValueError(f"hop ({hop}) must be in 1..window-1 (window {window}); the default is window // 2")
        self.fn, self.n_src, self.window, self.hop, self.reorder_chunks = fn, n_src, window, hop, reorder_chunks
        self.overlap = window - hop
        self.taper = torch.hann_window(window, periodic=True, dtype=torch.float64)

    def _align(self, est: Tensor, previous: Tensor | None) -> Tensor:
        """Reorder ``est`` (n_src, W) so its first ``overlap`` samples match ``previous``'s last ones."""
        if previous is None or not self.reorder_chunks or self.n_src == 1:
            return est
        cur, prev = est[None, :, : self.overlap], previous[None, :, -self.overlap:]
        mse = (prev[:, :, None, :] - cur[:, None, :, :]).pow(2).mean(-1)  # (1, C_prev, C_cur)
        _, perm = pit_from_matrix(mse, maximize=False)
        return reorder(est[None], perm)[0]

    def _separate(self, chunk: Tensor) -> Tensor:
        with torch.no_grad():
            est = self.fn(chunk[None].float())
        if est.dim() != 3 or est.shape[:2] != (1, self.n_src) or est.shape[-1] < self.window:
            raise ValueError(f"the separator returned shape {tuple(est.shape)} for a (1, {self.window}) window; "
                             f"it must return (1, {self.n_src}, >= {self.window})")
        return est[0, :, : self.window].double()

    def stream(self, blocks: Iterable[Tensor]) -> Iterator[Tensor]:
        """``blocks``: 1-D mixture pieces of any sizes, in order; yields (n_src, n) float32 output pieces.

        The signal is padded with ``overlap`` zeros on both ends so every real sample is covered by
        windows whose weights sum to a positive value; the yielded samples match the input 1:1.
        """
        W, H, pad = self.window, self.hop, self.overlap
        pending = torch.zeros(pad, dtype=torch.float64)       # input not yet consumed by a full window
        acc = torch.zeros(self.n_src, W, dtype=torch.float64)  # output accumulator aligned with `pending`
        norm = torch.zeros(W, dtype=torch.float64)
        to_skip, emitted_total, total, previous = pad, 0, 0, None

        def emit(n: int) -> Tensor | None:
            nonlocal acc, norm, to_skip, emitted_total
            out = acc[:, :n] / norm[:n].clamp_min(1e-8)
            acc = torch.cat([acc[:, n:], torch.zeros(self.n_src, n, dtype=torch.float64)], 1)
            norm = torch.cat([norm[n:], torch.zeros(n, dtype=torch.float64)])
            drop = min(to_skip, n)
            to_skip -= drop
            out = out[:, drop:]
            keep = min(out.shape[1], total - emitted_total)
            emitted_total += max(keep, 0)
            return out[:, :keep].float() if keep > 0 else None

        def step(chunk: Tensor) -> Tensor | None:
            nonlocal previous
            est = self._align(self._separate(chunk), previous)
            previous = est
            acc.add_(est * self.taper)
            norm.add_(self.taper)
            return emit(H)

        for block in blocks:
            block = torch.as_tensor(block).reshape(-1).double()
            total += block.numel()
            pending = torch.cat([pending, block])
            while pending.numel() >= W:
                out = step(pending[:W])
                pending = pending[H:]
                if out is not None:
                    yield out
        if total == 0:
            raise ValueError("the input holds no samples; pass a non-empty recording")
        pending = torch.cat([pending, torch.zeros(pad, dtype=torch.float64)])
        while emitted_total < total:
            if pending.numel() < W:
                pending = torch.cat([pending, torch.zeros(W - pending.numel(), dtype=torch.float64)])
            out = step(pending[:W])
            pending = pending[H:]
            if out is not None:
                yield out


def model_fn(model, condition: Tensor | None = None) -> SeparateFn:
    """A ZooModel separation head as a window function."""
    from decoders.separation import SeparationOptions

    device = next(model.parameters()).device
    model.eval()

    def run(chunk: Tensor) -> Tensor:
        options = SeparationOptions(num_samples=chunk.shape[-1],
                                    condition=None if condition is None else condition.to(device))
        return model.generate({"audio": chunk.to(device)}, heads="separation", options=options)["separation"].cpu()

    return run


def separate_tensor(fn: SeparateFn, wav: Tensor, n_src: int, window: int, hop: int | None = None,
                    block: int = 65_536) -> Tensor:
    """Overlap-add separation of an in-memory (T,) waveform -> (n_src, T)."""
    pieces = (wav[i: i + block] for i in range(0, wav.numel(), block))
    return torch.cat(list(OverlapAdd(fn, n_src, window, hop).stream(pieces)), 1)


def separate_file(fn: SeparateFn, path: str | Path, out_paths: list[str | Path], sample_rate: int, window: int,
                  hop: int | None = None, block: int = 65_536) -> dict:
    """Stream ``path`` through the separator into one wav per source (float32); memory ~ the window.

    Several channels are averaged to mono block by block; a sample rate other than ``sample_rate`` is
    an error (resample the file first: streaming resampling is not done here).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot read audio ({err}); convert it to WAV or FLAC") from err
    if info.samplerate != sample_rate:
        raise ValueError(f"{path}: {info.samplerate} Hz but the model runs at {sample_rate} Hz; resample the file "
                         f"first (e.g. `ffmpeg -i {path.name} -ar {sample_rate} out.wav`) or use `zoo separate`, "
                         "which resamples in memory")
    writers = [sf.SoundFile(str(p), "w", sample_rate, 1, subtype="FLOAT") for p in out_paths]
    if len(writers) == 0:
        raise ValueError("give one output path per source")
    n = 0
    try:
        with sf.SoundFile(str(path)) as reader:
            blocks = (torch.from_numpy(b.mean(1) if b.ndim == 2 else b)
                      for b in reader.blocks(blocksize=block, dtype="float32", always_2d=True))
            for out in OverlapAdd(fn, len(writers), window, hop).stream(blocks):
                for w, src in zip(writers, out):
                    w.write(src.numpy())
                n += out.shape[1]
    finally:
        for w in writers:
            w.close()
    return {"samples": n, "seconds": n / sample_rate, "channels": info.channels, "outputs": [str(p) for p in out_paths]}
