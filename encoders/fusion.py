"""VALOR-style audio-visual fusion (Chen et al., "VALOR: Vision-Audio-Language Omni-Perception
Pretraining Model and Dataset", 2023, §3.2-3.3), as graph parts.

Design (the graph's encoder node takes one input, so fusion lives where several encoders meet):

- **Fusion = a multi-source decoder read.** The caption decoder reads ``source=["vision_g", "audio_g"]``
  with ``sources=2``: ``TransformerDecoder`` concatenates the token sequences and adds a learned
  per-source (modality) embedding -- VALOR's "concatenate the modality tokens" input to its
  cross-attention.
- **Modality groups (MGC).** ``modality_gate`` is a cascaded encoder (input: a modality encoder,
  condition: ``batch["modalities"]`` (B, M) bool). Column ``slot`` says whether the row keeps this
  modality; a dropped modality gets length 0, so the decoder attends only the row's group (v, a or
  va, sampled per row by the data loader). At least one modality must be kept per row.
- **Group alignment (MGA).** ``group_alignment`` is a head reading the ungated encoders: for each
  group (v, a, va) a pooled, projected media embedding is contrasted with the caption's text
  embedding (a small text Transformer of its own) by a symmetric InfoNCE loss with a learned
  temperature (init 0.07, CLIP/VALOR); the head's loss is the mean over the three groups. VALOR's
  "fine" token-wise matching and all-gather across GPUs are left out (coarse pooled matching).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.generic import sinusoids
from zoo.contract import Decoder, DecoderOutput, Encoder, Features
from zoo.registry import register_decoder, register_encoder

__all__ = ["GROUP_NAMES", "GroupAlignment", "ModalityGate", "group_alignment", "modality_gate"]

GROUP_NAMES = ("v", "a", "va")


class ModalityGate(Encoder):
    """Pass-through of a modality's tokens whose rows drop out (length 0) where ``modalities[:, slot]`` is False."""

    def __init__(self, dim: int, slot: int):
        super().__init__()
        self.slot, self.out_dim = slot, dim

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, modalities: Tensor | None = None,
                **conditions) -> Features:
        if modalities is None:
            raise KeyError("modality_gate needs batch['modalities'] (B, M) bool: which modalities each row keeps; "
                           "set conditions=['modalities'] on the node and put the column in the batch")
        if modalities.dim() != 2 or modalities.shape[0] != inputs.shape[0] or modalities.shape[1] <= self.slot:
            raise ValueError(f"modalities must be (B={inputs.shape[0]}, M>{self.slot}) bool, got {tuple(modalities.shape)}")
        keep = modalities[:, self.slot].to(inputs.device).bool()
        full = torch.full((inputs.shape[0],), inputs.shape[1], device=inputs.device, dtype=torch.long)
        lengths = full if lengths is None else lengths.to(inputs.device).long()
        return Features(inputs * keep[:, None, None].to(inputs.dtype), torch.where(keep, lengths, 0))


def _masked_mean(f: Features) -> tuple[Tensor, Tensor]:
    """Sum and count of the valid tokens of ``f`` over T."""
    valid = (~f.padding_mask().to(f.x.device)).to(f.x.dtype) if f.lengths is not None else \
        torch.ones(f.x.shape[:2], device=f.x.device, dtype=f.x.dtype)
    return (f.x * valid[..., None]).sum(1), valid.sum(1, keepdim=True)


class GroupAlignment(Decoder):
    """MGA: contrast (v, a, va) media embeddings with caption embeddings. targets: ``tokens``, ``lengths``."""

    label_keys = ("tokens", "lengths")

    def __init__(self, vocab_size: int, memory_dim: int, dim: int = 128, text_layers: int = 1, heads: int = 4,
                 sources: int = 2, max_len: int = 128, temperature: float = 0.07):
        super().__init__()
        if sources != 2:
            raise ValueError(f"group_alignment aligns exactly two modalities (vision, audio), got sources={sources}")
        self.source_embed = nn.Parameter(torch.zeros(sources, memory_dim))
        self.media_proj = nn.Linear(memory_dim, dim)
        self.embed = nn.Embedding(vocab_size, dim)
        self.register_buffer("pos", sinusoids(max_len, dim), persistent=False)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, 0.0, activation="gelu", batch_first=True, norm_first=True)
        self.text = nn.TransformerEncoder(layer, text_layers, enable_nested_tensor=False)
        self.text_ln, self.text_proj = nn.LayerNorm(dim), nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def media(self, memory: Sequence[Features]) -> dict[str, Tensor]:
        """L2-normalised (B, dim) embeddings of the groups v, a and va (modality embedding added, then masked mean)."""
        sums, counts = zip(*(_masked_mean(Features(f.x + self.source_embed[i], f.lengths))
                             for i, f in enumerate(memory)))
        pooled = {"v": sums[0] / counts[0].clamp(min=1), "a": sums[1] / counts[1].clamp(min=1),
                  "va": (sums[0] + sums[1]) / (counts[0] + counts[1]).clamp(min=1)}
        return {g: F.normalize(self.media_proj(p), dim=-1) for g, p in pooled.items()}

    def text_embed(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """L2-normalised (B, dim) caption embeddings (masked mean of a text Transformer)."""
        x = self.embed(tokens.long()) + self.pos[: tokens.shape[1]]
        feats = Features(x, lengths.to(tokens.device))
        x = self.text_ln(self.text(x, src_key_padding_mask=feats.padding_mask()))
        s, c = _masked_mean(Features(x, feats.lengths))
        return F.normalize(self.text_proj(s / c.clamp(min=1)), dim=-1)

    def forward(self, memory: Sequence[Features], targets: dict[str, Tensor]) -> DecoderOutput:
        if "tokens" not in targets or "lengths" not in targets:
            raise KeyError(f"group_alignment targets need 'tokens' and 'lengths'; got {sorted(targets)}")
        text = self.text_embed(targets["tokens"], targets["lengths"])
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        labels = torch.arange(text.shape[0], device=text.device)
        losses = {}
        for g, m in self.media(memory).items():
            logits = scale * m @ text.T
            losses[g] = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        loss = torch.stack(list(losses.values())).mean()
        return DecoderOutput(loss, None, {f"loss_{g}": v.detach() for g, v in losses.items()})

    @torch.no_grad()
    def decode(self, memory: Sequence[Features], options=None) -> dict[str, Tensor]:
        """The group embeddings {"v", "a", "va"} (B, dim), for retrieval against ``text_embed``."""
        return self.media(memory)


@register_encoder(modality="any", task="captioning")
def modality_gate(dim: int, slot: int) -> ModalityGate:
    """Keep or drop a modality per row (``batch['modalities'][:, slot]``): VALOR's modality groups."""
    return ModalityGate(dim, slot)


@register_decoder(modality="any", task="captioning")
def group_alignment(vocab_size: int, memory_dim: int, dim: int = 128, text_layers: int = 1, heads: int = 4,
                    sources: int = 2, max_len: int = 128, temperature: float = 0.07) -> GroupAlignment:
    """VALOR MGA: symmetric InfoNCE between (v, a, va) media embeddings and caption embeddings."""
    return GroupAlignment(vocab_size, memory_dim, dim, text_layers, heads, sources, max_len, temperature)
