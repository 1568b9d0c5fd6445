"""The state of incremental decoding with :class:`decoders.transformer_decoder.TransformerDecoder`: the
encoder memory's cross-attention keys and values (computed once per utterance), the attention over them
on few query rows (:func:`cross_attend`), the static self-attention KV cache, and :class:`DecoderState`,
which the searches of ``decoders.search`` step, reorder and shrink.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from decoders.transformer_decoder import TransformerDecoder

__all__ = ["DecoderState", "KVCache", "Memory", "cross_attend"]


@dataclass
class Memory:
    """Per-utterance cross-attention keys and values of every layer, (B, heads, T, head_dim) each, or
    (B, heads, head_dim, T) when ``keys_last`` (the layout of CPU decoding: see :func:`cross_attend`)."""

    k: list[Tensor]
    v: list[Tensor]
    mask: Tensor | None  # (B, 1, 1, T) bool, True where a frame may be attended; None = all frames
    keys_last: bool = False

    def select(self, utts: Tensor) -> Memory:
        pick = lambda t: t.index_select(0, utts)
        return Memory([pick(k) for k in self.k], [pick(v) for v in self.v],
                      None if self.mask is None else pick(self.mask), self.keys_last)


@dataclass(frozen=True)
class MemoryExtent:
    """Where each utterance's attended frames lie in a padded memory: ``ends[r]`` is one past its last one,
    ``valid[r]`` how many there are. Frames from ``ends[r]`` on are padding; frames before it are all attended
    when ``valid[r] == ends[r]``, but not always: a decoder reading several sources concatenates them, each
    padded, so its valid frames are not one prefix."""

    ends: list[int]
    valid: list[int]

    @classmethod
    def of(cls, mask: Tensor | None) -> MemoryExtent | None:
        if mask is None:
            return None
        keep = mask.flatten(1)
        ends = (keep * torch.arange(1, keep.shape[1] + 1, device=keep.device)).amax(1)
        return cls(ends.tolist(), keep.sum(1).tolist())


def active_memory(mem: Memory, rows: list[int], extent: MemoryExtent | None) -> Memory:
    """The memory of utterances ``rows``, cut after the last frame any of them attends; the mask is dropped
    when none of them is padded any more."""
    every = rows == list(range(mem.k[0].shape[0]))
    idx = torch.tensor(rows, device=mem.k[0].device)
    if extent is None:
        return mem if every else mem.select(idx)
    longest, axis = max(extent.ends[r] for r in rows), 3 if mem.keys_last else 2
    dense = all(extent.valid[r] == longest for r in rows)  # every row attends every frame before the cut
    if every and longest == mem.mask.shape[-1]:
        return Memory(mem.k, mem.v, None if dense else mem.mask, mem.keys_last)
    cut = Memory([t.narrow(axis, 0, longest) for t in mem.k], [t.narrow(axis, 0, longest) for t in mem.v],
                 mem.mask.narrow(3, 0, longest), mem.keys_last).select(idx)
    if dense:
        cut.mask = None
    return cut


def cross_attend(q: Tensor, mem: Memory, layer: int, dropout: float = 0.0) -> Tensor:
    """Attention of queries q (B, heads, m, head_dim) over layer ``layer`` of the memory.

    The standard layout takes ``F.scaled_dot_product_attention``. The ``keys_last`` layout is for the
    few queries of a CPU decoding step over a long memory (``KEYS_LAST_MIN_FRAMES``+ frames), which must
    read every key and value of the memory once per step (Whisper-tiny at batch 8: 147 MB a step). There ``q @ K^T`` and ``V^T @ p^T`` with ``K^T`` and
    ``V^T`` stored contiguously are plain row-vector and matrix-vector products that MKL streams near
    memory speed: 1.6x faster than SDPA's CPU kernel for one query, as fast at 9, slower from ~16.
    Same maths; only the summation order differs."""
    k, v = mem.k[layer], mem.v[layer]
    if not mem.keys_last:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mem.mask, dropout_p=dropout)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k)
    if mem.mask is not None:
        scores = scores.masked_fill(~mem.mask, float("-inf"))
    weights = scores.softmax(-1)
    if dropout:
        weights = F.dropout(weights, dropout)
    return torch.matmul(v, weights.transpose(-1, -2)).transpose(-1, -2)


class KVCache:
    """Static self-attention cache, per layer (rows, heads, max_len, head_dim), written by index."""

    def __init__(self, layers: int, rows: int, heads: int, length: int, head_dim: int, like: Tensor,
                 static: bool = False):
        shape = (rows, heads, length, head_dim)
        self.k = [like.new_zeros(shape) for _ in range(layers)]
        self.v = [like.new_zeros(shape) for _ in range(layers)]
        if static:  # the compiled step writes these in place: fixed addresses let CUDA graphs capture it
            for t in (*self.k, *self.v):  # (as transformers' StaticCache does)
                torch._dynamo.mark_static_address(t)
        self.filled = 0  # positions written so far (every row is at the same step)

    def write(self, layer: int, k: Tensor, v: Tensor, start: int) -> tuple[Tensor, Tensor]:
        end = start + k.shape[2]
        if end > self.k[layer].shape[2]:
            raise ValueError(f"KV cache holds {self.k[layer].shape[2]} positions; step needs {end}")
        self.k[layer].narrow(2, start, k.shape[2]).copy_(k)
        self.v[layer].narrow(2, start, v.shape[2]).copy_(v)
        return self.k[layer].narrow(2, 0, end), self.v[layer].narrow(2, 0, end)

    def select(self, rows: Tensor) -> None:
        """Reorder (beam search) or shrink (finished rows) the batch; copies only the filled part."""
        n = self.filled
        for buf in (self.k, self.v):
            for i, t in enumerate(buf):
                if rows.numel() == t.shape[0]:
                    t.narrow(2, 0, n).copy_(t.narrow(2, 0, n).index_select(0, rows))
                else:
                    new = t.new_zeros(rows.numel(), *t.shape[1:])
                    new.narrow(2, 0, n).copy_(t.narrow(2, 0, n).index_select(0, rows))
                    buf[i] = new


class DecoderState:
    """One batch being decoded: rows are utterance-major (row = utterance * R + r) with the same
    number R of rows (beams) per utterance. ``step`` feeds new tokens, returns last-position logits;
    ``select`` reorders rows (beams) and/or keeps a subset of utterances."""

    def __init__(self, decoder: TransformerDecoder, mem: Memory, max_tokens: int, use_cache: bool, compile: bool):
        if max_tokens > decoder.dims.max_len:
            raise ValueError(f"decoding {max_tokens} tokens exceeds the decoder's max_len={decoder.dims.max_len}; "
                             "lower DecodingOptions.max_len")
        self.decoder, self.mem, self.max_tokens = decoder, mem, max_tokens
        self.use_cache, self.static = use_cache, compile and use_cache
        self.cache: KVCache | None = None
        self.history: Tensor | None = None  # every fed token, when decoding without a cache
        self.length = 0

    @property
    def can_shrink(self) -> bool:
        """Whether finished utterances may leave the batch (not under compile's fixed shapes)."""
        return not self.static

    @property
    def utterances(self) -> int:
        return self.mem.k[0].shape[0]

    def vocab_screen(self):
        """The decoder's int8 vocabulary screen (exact greedy argmax), or None (fixed shapes, GPU, no fbgemm)."""
        return None if self.static else self.decoder.vocab_screen()

    def step(self, tokens: Tensor, normed: bool = False) -> Tensor:
        """Last-position logits (N, V), or with ``normed`` the final LayerNorm's output (N, dim)."""
        d = self.decoder
        if not self.use_cache:
            self.history = tokens if self.history is None else torch.cat([self.history, tokens], 1)
            self.length = self.history.shape[1]
            return d.forward_tokens(self.history, self.mem, last_only=True, normed=normed)[:, -1]
        if self.cache is None:
            dims = d.dims
            self.cache = KVCache(dims.layers, tokens.shape[0], dims.heads, self.max_tokens,
                                 dims.dim // dims.heads, d.embed.weight, static=self.static)
        if self.static and tokens.shape[1] == 1:
            start = torch.tensor(self.length, device=tokens.device)
            out = d.compiled_step()(tokens, self.mem, self.cache, start, True)[:, -1]
        else:
            out = d.forward_tokens(tokens, self.mem, self.cache, self.length, last_only=True, normed=normed)[:, -1]
        self.length += tokens.shape[1]
        self.cache.filled = self.length
        return out

    def select(self, rows: Tensor, utts: Tensor | None = None) -> None:
        """Keep ``rows`` (indices of current rows, utterance-major) and, when given, ``utts``."""
        if utts is not None:
            self.mem = self.mem.select(utts)
        if self.cache is not None:
            self.cache.select(rows)
        if self.history is not None:
            self.history = self.history.index_select(0, rows)
