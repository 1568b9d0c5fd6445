"""Mask-Predict: a non-autoregressive conditional masked language model decoder (Ghazvininejad et al.,
2019, "Mask-Predict: Parallel Decoding of Conditional Masked Language Models"; fairseq
``cmlm_transformer``).

- Decoder (§2): bidirectional self-attention over the target (no causal mask) + cross-attention to the
  encoder memory, pre-LN blocks; masked positions read a ``[MASK]`` embedding (id = ``vocab_size``).
- Training (§3.3): per row, a uniform number 1..N of target tokens is masked at random and the loss is
  the cross-entropy on the masked tokens, plus the target-length loss.
- Length (§3.1): CMLM predicts the length from a LENGTH token in the encoder; our encoders are
  shared between heads, so this head owns it: a classifier over 0..max_len on the masked mean of the
  memory and a sinusoidal code of its frame count (speech length tracks text length).
- Decoding (§3.2): for each of the ``length_beam`` most likely lengths, iteration 0 predicts every
  token; iteration t re-masks the n = N (T - t) / T least confident tokens and predicts them again,
  updating their tokens and probabilities; the candidate with the best mean token log-probability
  plus its length's log-probability wins (the paper ranks by the mean alone, which lets a wrong
  length win whenever the decoder is sure of a shorter or longer guess).
  T forward passes in all (the length candidates are batched), whatever the length.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.generic import sinusoids
from zoo.contract import Decoder, DecoderOutput, Features, Hypothesis, padding_mask
from zoo.registry import register_decoder

COUNT_DIM = 32  # sinusoidal code of the memory's frame count, read by the length classifier

__all__ = ["MaskPredictDecoder", "MaskPredictDims", "MaskPredictOptions", "mask_predict_decoder"]


@dataclass(frozen=True)
class MaskPredictDims:
    vocab_size: int
    dim: int = 256
    heads: int = 4
    layers: int = 4
    ffn: int = 0                 # 0 = 4 * dim
    max_len: int = 128           # longest target; the length classifier covers 0..max_len
    bos_id: int = 2              # never generated
    eos_id: int = 3              # never generated (the length predictor ends a hypothesis)
    pad_id: int = 0              # fills targets beyond their length; never generated
    memory_dim: int = 0          # 0 = dim
    sources: int = 1
    dropout: float = 0.1
    length_weight: float = 0.1   # weight of the length loss
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; pick heads dividing dim")
        for name in ("bos_id", "eos_id", "pad_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} is outside the vocabulary [0, {self.vocab_size})")


@dataclass(frozen=True)
class MaskPredictOptions:
    iterations: int = 4          # T: forward passes (refinement iterations)
    length_beam: int = 3         # length candidates per row (§3.2 "length beam")

    def __post_init__(self):
        if self.iterations < 1 or self.length_beam < 1:
            raise ValueError(f"iterations and length_beam must be >= 1, got {self.iterations}, {self.length_beam}")


class MaskPredictDecoder(Decoder):
    """targets: ``tokens`` (B, L) padded with ``pad_id`` and ``lengths`` (B,), as the AR decoder takes them."""

    label_keys = ("tokens", "lengths")

    def __init__(self, dims: MaskPredictDims):
        super().__init__()
        self.dims = d = dims
        self.mask_id = d.vocab_size
        self.embed = nn.Embedding(d.vocab_size + 1, d.dim)
        self.register_buffer("pos", sinusoids(d.max_len, d.dim), persistent=False)
        mem_dim = d.memory_dim or d.dim
        self.proj = nn.Linear(mem_dim, d.dim) if mem_dim != d.dim else nn.Identity()
        self.source_embed = nn.Parameter(torch.zeros(d.sources, d.dim)) if d.sources > 1 else None
        layer = nn.TransformerDecoderLayer(d.dim, d.heads, d.ffn or 4 * d.dim, d.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(layer, d.layers, norm=nn.LayerNorm(d.dim))
        self.out = nn.Linear(d.dim, d.vocab_size)
        self.length = nn.Sequential(nn.Linear(d.dim + COUNT_DIM, d.dim), nn.GELU(), nn.Linear(d.dim, d.max_len + 1))
        self.passes = 0  # forward passes of the last decode

    # --- the network --------------------------------------------------------------------------
    def memory(self, memory: Features | Sequence[Features]) -> tuple[Tensor, Tensor]:
        """(B, T, dim) projected memory and (B, T) padding mask (True = padded)."""
        feats = list(memory) if isinstance(memory, (list, tuple)) else [memory]
        if len(feats) != self.dims.sources:
            raise ValueError(f"decoder built for sources={self.dims.sources} encoder(s) got {len(feats)}; "
                             f"set sources={len(feats)} in the decoder node")
        want = self.dims.memory_dim or self.dims.dim
        xs, pads = [], []
        for i, f in enumerate(feats):
            if not isinstance(f, Features):
                raise TypeError(f"memory must be zoo.contract.Features, got {type(f).__name__}")
            if f.x.dim() != 3 or f.x.shape[-1] != want:
                raise ValueError(f"memory of shape {tuple(f.x.shape)} does not match memory_dim={want}; "
                                 "set memory_dim to the encoder's out_dim")
            x = self.proj(f.x)
            xs.append(x if self.source_embed is None else x + self.source_embed[i])
            pads.append(padding_mask(f.lengths, f.x.shape[1], f.x.device, f.x.shape[0]).to(f.x.device))
        return torch.cat(xs, 1), torch.cat(pads, 1)

    def length_logits(self, mem: Tensor, pad: Tensor) -> Tensor:
        keep = (~pad).to(mem.dtype)[..., None]
        frames = keep.sum(1)
        pooled = (mem * keep).sum(1) / frames.clamp(min=1)
        rates = torch.exp(-math.log(10000.0) * torch.arange(COUNT_DIM // 2, device=mem.device) / (COUNT_DIM // 2 - 1))
        count = torch.cat([(frames * rates).sin(), (frames * rates).cos()], -1)  # the frame count, as a position
        return self.length(torch.cat([pooled, count], -1))

    def token_logits(self, tokens: Tensor, lengths: Tensor, mem: Tensor, pad: Tensor) -> Tensor:
        if tokens.shape[1] > self.dims.max_len:
            raise ValueError(f"targets of {tokens.shape[1]} tokens exceed max_len={self.dims.max_len}; "
                             "build the decoder with a larger max_len")
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        tgt_pad = padding_mask(lengths, tokens.shape[1], tokens.device)
        x = self.blocks(x, mem, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=pad)
        return self.out(x)

    def forward(self, memory: Features | Sequence[Features], targets: dict[str, Tensor]) -> DecoderOutput:
        if "tokens" not in targets or "lengths" not in targets:
            raise KeyError(f"targets need 'tokens' (B, L) and 'lengths' (B,); got keys {sorted(targets)}")
        tokens, lengths = targets["tokens"].long(), targets["lengths"].long().to(targets["tokens"].device)
        d = self.dims
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= d.vocab_size):
            raise ValueError(f"target token ids must lie in [0, {d.vocab_size}); got [{int(tokens.min())}, "
                             f"{int(tokens.max())}] (use pad_id={d.pad_id} for padding)")
        mem, pad = self.memory(memory)
        valid = ~padding_mask(lengths, tokens.shape[1], tokens.device)
        # §3.3: mask a uniform 1..N tokens per row, at random positions
        n_mask = (torch.rand(lengths.shape, device=tokens.device) * lengths).long() + 1
        noise = torch.rand(tokens.shape, device=tokens.device).masked_fill(~valid, 2.0)
        ranks = noise.argsort(1).argsort(1)
        masked = (ranks < n_mask[:, None]) & valid
        logits = self.token_logits(tokens.masked_fill(masked, self.mask_id), lengths, mem, pad)
        labels = tokens.masked_fill(~masked, -100)
        token_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                     label_smoothing=d.label_smoothing)
        length_loss = F.cross_entropy(self.length_logits(mem, pad).float(), lengths.clamp(max=d.max_len))
        return DecoderOutput(token_loss + d.length_weight * length_loss, logits,
                             {"token_loss": token_loss.detach(), "length_loss": length_loss.detach()})

    # --- decoding -----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, memory: Features | Sequence[Features], options: MaskPredictOptions | None = None) -> list[Hypothesis]:
        options = MaskPredictOptions() if options is None else options
        if not isinstance(options, MaskPredictOptions):
            raise TypeError(f"options must be decoders.parallel.MaskPredictOptions, got {type(options).__name__}")
        d, T, beam = self.dims, options.iterations, options.length_beam
        mem, pad = self.memory(memory)
        batch = mem.shape[0]
        beam = min(beam, d.max_len)
        len_logits = self.length_logits(mem, pad).float()
        len_logits[:, 0] = float("-inf")  # at least one token
        len_lp, lengths = len_logits.log_softmax(-1).topk(beam, -1)
        len_lp, lengths = len_lp.reshape(-1), lengths.reshape(-1)          # (B * beam,)
        mem, pad = mem.repeat_interleave(beam, 0), pad.repeat_interleave(beam, 0)
        width = int(lengths.max())
        valid = ~padding_mask(lengths, width, mem.device)
        tokens = torch.full((batch * beam, width), self.mask_id, dtype=torch.long, device=mem.device)
        probs = torch.zeros(batch * beam, width, device=mem.device)
        banned = torch.tensor(sorted({d.pad_id, d.bos_id, d.eos_id}), device=mem.device)
        masked = valid.clone()
        for t in range(T):
            logp = self.token_logits(tokens, lengths, mem, pad).float().log_softmax(-1)
            logp[..., banned] = float("-inf")
            best_lp, best = logp.max(-1)
            tokens = torch.where(masked, best, tokens)
            probs = torch.where(masked, best_lp, probs)
            if t == T - 1:
                break
            n = (lengths * (T - 1 - t) // T)                              # §3.2: n = N (T - t) / T
            order = probs.masked_fill(~valid, float("inf")).argsort(1).argsort(1)
            masked = (order < n[:, None]) & valid
            tokens = tokens.masked_fill(masked, self.mask_id)
        self.passes = T
        score = probs.masked_fill(~valid, 0.0).sum(1) / lengths + len_lp
        pick = score.view(batch, beam).argmax(1)
        rows = torch.arange(batch, device=mem.device) * beam + pick
        out = []
        for r in rows.tolist():
            out.append(Hypothesis(tokens[r, : int(lengths[r])].tolist(), score=float(score[r])))
        return out


@register_decoder(task="text", modality="text")
def mask_predict_decoder(vocab_size: int, dim: int = 256, heads: int = 4, layers: int = 4, ffn: int = 0,
                         max_len: int = 128, bos_id: int = 2, eos_id: int = 3, pad_id: int = 0, memory_dim: int = 0,
                         sources: int = 1, dropout: float = 0.1, length_weight: float = 0.1,
                         label_smoothing: float = 0.0) -> MaskPredictDecoder:
    """Non-autoregressive Mask-Predict (CMLM) decoder: length prediction + T refinement passes."""
    return MaskPredictDecoder(MaskPredictDims(vocab_size, dim, heads, layers, ffn, max_len, bos_id, eos_id, pad_id,
                                              memory_dim, sources, dropout, length_weight, label_smoothing))
