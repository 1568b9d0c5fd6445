"""Autoregressive Transformer decoder (Vaswani et al., 2017, §3.1-3.2) in the pre-LN form of
Whisper's text decoder (Radford et al., 2022, §2.2 and openai/whisper ``model.py``): token +
position embeddings, blocks of causal self-attention, cross-attention to the encoder memory and a
GELU MLP, a final LayerNorm and an output projection tied to the token embedding.

Built for fast incremental decoding:

- fused QKV projection and ``F.scaled_dot_product_attention``;
- a static, preallocated KV cache, per layer ``(rows, heads, max_len, head_dim)``, written by index;
- cross-attention keys/values computed once per utterance, never per beam: the beams of an
  utterance are folded into the query axis of one cross-attention call (nothing is expanded);
- beam reordering by ``index_select`` over the filled part of the cache, and rows that finish are
  dropped from the active batch, so the work shrinks as the batch finishes;
- decoding steps on CPU multiply their few rows in the fastest operand layout
  (``zoo.layers.few_row_linear``: exact fp32, ~2x faster for the vocabulary projection and the
  wide layers), and read the cross-attention keys/values of a long memory (Whisper's 1,500 frames)
  stored as ``(head_dim, T)`` by two plain products (:func:`cross_attend`);
- ``DecodingOptions(vocab_screen=True)`` (greedy, CPU) takes the argmax through an int8 screen of the
  vocabulary with a proven error bound and rescores only the candidates in fp32
  (``decoders.vocab_screen``: same tokens, a quarter of the vocabulary bytes per step);
- ``DecodingOptions(compile=True)`` switches to fixed shapes (full-length masked self-attention,
  no row dropping) and ``torch.compile``s the one-token step (CUDA graphs on GPU).

A fused QKV carries a key bias where Whisper has none: it shifts every score of a query by the same
amount, so the softmax ignores it (and its gradient is zero); conversions write zeros there.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from decoders.decoder_state import DecoderState, KVCache, Memory, cross_attend
from encoders.generic import sinusoids
from zoo.contract import Decoder, DecoderOutput, Features, padding_mask
from zoo.layers import DecodingLinear, FastDropout, few_row_linear
from zoo.registry import register_decoder

# CPU decoding stores the cross-attention keys/values of a memory this long as (head_dim, T) (keys_last, see
# cross_attend): faster than SDPA's layout for Whisper's 1,500 frames (3.0 vs 3.8 ms a layer at batch 8, one
# query, 2 threads), slower for short memories (d=144 ASR model, 115-800 frames: 1.2-2x slower at 1 and 9 queries)
KEYS_LAST_MIN_FRAMES = 1024

__all__ = ["KEYS_LAST_MIN_FRAMES", "DecoderDims", "DecoderState", "KVCache", "Memory", "TransformerDecoder", "cross_attend", "transformer_decoder"]


@dataclass(frozen=True)
class DecoderDims:
    vocab_size: int
    dim: int = 256
    heads: int = 4
    layers: int = 4
    ffn: int = 0                   # MLP width; 0 = 4 * dim
    max_len: int = 448             # longest token sequence (bos + prefix + generated): the position table
    bos_id: int = 1                # prepended in teacher forcing and decoding (Whisper: <|startoftranscript|>)
    eos_id: int = 2                # appended to every target; ends a hypothesis
    pad_id: int = 0                # fills ``targets['tokens']`` beyond ``lengths``
    memory_dim: int = 0            # width of the encoder memory; 0 = dim
    sources: int = 1               # encoders read at once: frames concatenated, each with a source embedding
    positions: str = "sinusoidal"  # or "learned" (Whisper)
    tie_embeddings: bool = True    # logits = x @ token_embedding.T (Whisper)
    bias: bool = True              # biases in the projections (Whisper: yes, except the unused key bias)
    embed_scale: bool = False      # token embeddings times sqrt(dim) (Vaswani §3.4); Whisper: no
    dropout: float = 0.0
    label_smoothing: float = 0.0
    eps: float = 1e-5              # LayerNorm epsilon

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; pick heads dividing dim")
        if self.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {self.positions!r}")
        for name in ("bos_id", "eos_id", "pad_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} is outside the vocabulary [0, {self.vocab_size})")


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = DecodingLinear(dim, 3 * dim, bias=bias)
        self.out = DecodingLinear(dim, dim, bias=bias)

    def forward(self, x: Tensor, cache: KVCache | None, layer: int, start: int | Tensor) -> Tensor:
        rows, n, dim = x.shape  # plain view/transpose: this runs ~20 times per generated token
        q, k, v = self.qkv(x).view(rows, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask, causal = None, n > 1
        if isinstance(start, Tensor):  # static shapes: write at ``start``, attend over the whole buffer
            cache.k[layer].index_copy_(2, start.view(1), k)
            cache.v[layer].index_copy_(2, start.view(1), v)
            k, v = cache.k[layer], cache.v[layer]
            mask = (torch.arange(k.shape[2], device=x.device) <= start)[None, None, None, :]
        elif cache is not None:
            k, v = cache.write(layer, k, v, start)
            if causal and start > 0:  # a chunk after cached tokens: causal within the chunk
                mask = torch.ones(n, start + n, dtype=torch.bool, device=x.device).tril(start)
                causal = False
        p = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out(o.transpose(1, 2).reshape(rows, n, dim))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, memory_dim: int, heads: int, bias: bool, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = DecodingLinear(dim, dim, bias=bias)
        self.kv = nn.Linear(memory_dim, 2 * dim, bias=bias)
        self.out = DecodingLinear(dim, dim, bias=bias)

    def project(self, memory: Tensor, keys_last: bool = False) -> tuple[Tensor, Tensor]:
        """Memory (B, T, memory_dim) -> keys, values (B, heads, T, head_dim), or (B, heads, head_dim, T)
        when ``keys_last``; once per utterance."""
        if keys_last:  # one product per utterance writes K^T and V^T in place: no transposing copy
            out = memory.new_empty(2, memory.shape[0], self.kv.out_features // 2, memory.shape[1])
            weights = self.kv.weight.chunk(2)
            biases = (None, None) if self.kv.bias is None else self.kv.bias.chunk(2)
            for kv, w, b in zip(out, weights, biases):
                b = None if b is None or not bool(b.any()) else b  # Whisper's zero key bias: skip its broadcast copy
                for i, m in enumerate(memory):
                    if b is None:
                        torch.mm(w, m.T, out=kv[i])
                    else:
                        torch.addmm(b[:, None], w, m.T, out=kv[i])
            k, v = rearrange(out, "two b (h d) t -> two b h d t", h=self.heads)
            return k, v
        k, v = rearrange(self.kv(memory), "b t (two h d) -> two b h t d", two=2, h=self.heads)
        return k.contiguous(), v.contiguous()  # read at every step: keep them dense

    def forward(self, x: Tensor, mem: Memory, layer: int) -> Tensor:
        """x (B*R, n, dim): the R rows (beams) of each utterance become R*n queries of one call."""
        utts, (rows, n, dim) = mem.k[layer].shape[0], x.shape
        q = self.q(x).view(utts, rows // utts * n, self.heads, dim // self.heads).transpose(1, 2)
        o = cross_attend(q, mem, layer, self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(rows, n, dim))


class Block(nn.Module):
    """Pre-LN: x += SelfAttn(LN x); x += CrossAttn(LN x, memory); x += MLP(LN x)."""

    def __init__(self, d: DecoderDims):
        super().__init__()
        ffn = d.ffn or 4 * d.dim
        self.attn_ln = nn.LayerNorm(d.dim, eps=d.eps)
        self.attn = SelfAttention(d.dim, d.heads, d.bias, d.dropout)
        self.cross_ln = nn.LayerNorm(d.dim, eps=d.eps)
        self.cross = CrossAttention(d.dim, d.memory_dim or d.dim, d.heads, d.bias, d.dropout)
        self.mlp_ln = nn.LayerNorm(d.dim, eps=d.eps)
        self.fc1, self.fc2 = DecodingLinear(d.dim, ffn, bias=d.bias), DecodingLinear(ffn, d.dim, bias=d.bias)
        self.drop = FastDropout(d.dropout)

    def forward(self, x, mem, cache, layer, start):
        drop = self.drop if self.training and self.drop.p > 0 else (lambda t: t)  # no module call at inference
        x = x + drop(self.attn(self.attn_ln(x), cache, layer, start))
        x = x + drop(self.cross(self.cross_ln(x), mem, layer))
        return x + drop(self.fc2(F.gelu(self.fc1(self.mlp_ln(x)))))


class TransformerDecoder(Decoder):
    """Teacher-forced training (bos prefix, eos suffix, label smoothing) and cached decoding.

    targets: ``tokens`` (B, L) long padded with ``pad_id`` and ``lengths`` (B,), without bos/eos.
    """

    label_keys = ("tokens", "lengths")

    def __init__(self, dims: DecoderDims):
        super().__init__()
        self.dims = d = dims
        self.embed = nn.Embedding(d.vocab_size, d.dim)
        nn.init.normal_(self.embed.weight, std=d.dim ** -0.5)  # unit-scale logits through the tied projection
        if d.positions == "learned":
            self.pos = nn.Parameter(torch.randn(d.max_len, d.dim) * 0.01)
        else:
            self.register_buffer("pos", sinusoids(d.max_len, d.dim), persistent=False)
        mem_dim = d.memory_dim or d.dim
        self.source_embed = nn.Parameter(torch.zeros(d.sources, mem_dim)) if d.sources > 1 else None
        self.blocks = nn.ModuleList(Block(d) for _ in range(d.layers))
        self.ln = nn.LayerNorm(d.dim, eps=d.eps)
        self.head = None if d.tie_embeddings else nn.Linear(d.dim, d.vocab_size, bias=False)
        self.drop = FastDropout(d.dropout)
        self.scale = math.sqrt(d.dim) if d.embed_scale else 1.0
        self._compiled = None

    # --- the network --------------------------------------------------------------------------
    def memory(self, memory: Features | Sequence[Features], keys_last: bool | None = False) -> Memory:
        """Project the encoder memory (one Features, or ``sources`` of them) to per-layer keys/values;
        ``keys_last`` stores them in the layout of CPU decoding steps (:func:`cross_attend`); None picks
        it for CPU inference on a memory of ``KEYS_LAST_MIN_FRAMES``+ frames."""
        x, mask = self._concat_sources(memory)
        if keys_last is None:
            keys_last = (not torch.is_grad_enabled() and x.device.type == "cpu"
                         and not torch.is_autocast_enabled("cpu") and x.shape[1] >= KEYS_LAST_MIN_FRAMES)
        kv = [block.cross.project(x, keys_last) for block in self.blocks]
        return Memory([k for k, _ in kv], [v for _, v in kv], mask, keys_last)

    def _concat_sources(self, memory) -> tuple[Tensor, Tensor | None]:
        d = self.dims
        feats = list(memory) if isinstance(memory, (list, tuple)) else [memory]
        if len(feats) != d.sources:
            raise ValueError(f"decoder built for sources={d.sources} encoder(s) got {len(feats)}; "
                             f"set sources={len(feats)} in the decoder node")
        want = d.memory_dim or d.dim
        for f in feats:
            if not isinstance(f, Features):
                raise TypeError(f"memory must be zoo.contract.Features, got {type(f).__name__}")
            if f.x.dim() != 3 or f.x.shape[-1] != want:
                raise ValueError(f"memory of shape {tuple(f.x.shape)} does not match memory_dim={want}; "
                                 "set memory_dim to the encoder's out_dim")
        xs = [f.x if self.source_embed is None else f.x + self.source_embed[i] for i, f in enumerate(feats)]
        if all(f.lengths is None for f in feats):
            return torch.cat(xs, 1), None
        keep = torch.cat([~padding_mask(f.lengths, f.x.shape[1], f.x.device, f.x.shape[0]).to(f.x.device)
                          for f in feats], 1)
        return torch.cat(xs, 1), keep[:, None, None, :]

    @property
    def output_weight(self) -> Tensor:
        """The (V, dim) output projection: the tied embedding or the separate head."""
        return self.embed.weight if self.head is None else self.head.weight

    def logits(self, x: Tensor) -> Tensor:
        return few_row_linear(self, self.ln(x), self.output_weight)

    def forward_tokens(self, tokens: Tensor, mem: Memory, cache: KVCache | None = None, start: int | Tensor = 0,
                       last_only: bool = False, normed: bool = False) -> Tensor:
        """Logits (N, n, V) of ``tokens`` (N, n) at positions ``start..start+n``; N = utterances x rows.
        ``normed`` returns the final LayerNorm's output (N, n, dim) instead of the logits."""
        n = tokens.shape[1]
        if isinstance(start, Tensor):
            pos = self.pos.index_select(0, start.view(1))
        else:
            if start + n > self.dims.max_len:
                raise ValueError(f"sequence of {start + n} tokens exceeds max_len={self.dims.max_len}; "
                                 "shorten it or build the decoder with a larger max_len")
            pos = self.pos[start:start + n]
        x = self.drop(self.embed(tokens) * self.scale + pos.to(self.embed.weight.dtype))
        for i, block in enumerate(self.blocks):
            x = block(x, mem, cache, i, start)
        x = x[:, -1:] if last_only else x
        return self.ln(x) if normed else self.logits(x)

    def forward(self, memory: Features | Sequence[Features], targets: dict[str, Tensor]) -> DecoderOutput:
        inputs, labels = self.teacher_forcing(targets)
        logits = self.forward_tokens(inputs, self.memory(memory))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                               label_smoothing=self.dims.label_smoothing)
        return DecoderOutput(loss, logits, {"tokens": (labels != -100).sum()})

    def teacher_forcing(self, targets: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``[bos] + tokens`` as inputs and ``tokens + [eos]`` (-100 beyond) as labels, both (B, L+1)."""
        if "tokens" not in targets or "lengths" not in targets:
            raise KeyError(f"targets need 'tokens' (B, L) and 'lengths' (B,); got keys {sorted(targets)}")
        tokens, lengths = targets["tokens"].long(), targets["lengths"].long().to(targets["tokens"].device)
        d = self.dims
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= d.vocab_size):
            raise ValueError(f"target token ids must lie in [0, {d.vocab_size}); got [{int(tokens.min())}, "
                             f"{int(tokens.max())}] (use pad_id={d.pad_id}, not -100, for padding)")
        if tokens.shape[1] + 1 > d.max_len:
            raise ValueError(f"targets of {tokens.shape[1]} tokens + bos exceed max_len={d.max_len}")
        bos = tokens.new_full((tokens.shape[0], 1), d.bos_id)
        inputs = torch.cat([bos, tokens], 1)
        steps = torch.arange(tokens.shape[1] + 1, device=tokens.device)[None]
        labels = torch.cat([tokens, tokens.new_full((tokens.shape[0], 1), d.pad_id)], 1)
        labels = labels.masked_fill(steps == lengths[:, None], d.eos_id).masked_fill(steps > lengths[:, None], -100)
        return inputs, labels

    # --- decoding -----------------------------------------------------------------------------
    def state(self, memory: Features | Sequence[Features], max_tokens: int, use_cache: bool = True,
              compile: bool = False) -> DecoderState:
        """Decoding state; on CPU a memory of ``KEYS_LAST_MIN_FRAMES``+ frames is stored ``keys_last``."""
        return DecoderState(self, self.memory(memory, keys_last=None), max_tokens, use_cache, compile)

    @torch.no_grad()
    def decode(self, memory: Features | Sequence[Features], options: Any = None):
        """Greedy (``beam_size=1``), sampling (``temperature>0``) or beam search; see ``decoders.search``."""
        from decoders.search import decode

        return decode(self, memory, options)

    def vocab_screen(self):
        """The int8 vocabulary screen of exact greedy argmax (``decoders.vocab_screen``), built once per
        output weight; None off CPU or where fbgemm is missing."""
        from decoders.vocab_screen import VocabScreen

        w = self.output_weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if getattr(self, "_screen", (None,))[0] != key:
            self._screen = (key, VocabScreen.build(w))
        return self._screen[1]

    def compiled_step(self):
        if self._compiled is None:
            cuda = self.embed.weight.is_cuda
            self._compiled = torch.compile(self.forward_tokens, dynamic=False,
                                           mode="reduce-overhead" if cuda else None)
        return self._compiled

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.dims).items())


@register_decoder(task="text", modality="text")
def transformer_decoder(vocab_size: int, dim: int = 256, heads: int = 4, layers: int = 4, ffn: int = 0,
                        max_len: int = 448, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0, memory_dim: int = 0,
                        sources: int = 1, positions: str = "sinusoidal", tie_embeddings: bool = True,
                        bias: bool = True, embed_scale: bool = False, dropout: float = 0.0,
                        label_smoothing: float = 0.0, eps: float = 1e-5) -> TransformerDecoder:
    """Pre-LN autoregressive Transformer decoder with cross-attention, static KV cache and beam search."""
    return TransformerDecoder(DecoderDims(vocab_size, dim, heads, layers, ffn, max_len, bos_id, eos_id, pad_id,
                                          memory_dim, sources, positions, tie_embeddings, bias, embed_scale,
                                          dropout, label_smoothing, eps))
