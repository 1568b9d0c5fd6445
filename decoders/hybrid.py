"""Hybrid CTC/attention decoder (Watanabe et al., 2017, "Hybrid CTC/Attention Architecture for End-to-End
Speech Recognition", §3; ESPnet's ``ESPnetASRModel``): a CTC head and an autoregressive Transformer
decoder on the same encoder memory, sharing one vocabulary.

- Training (§3.1, eq. 28): ``loss = ctc_weight * L_ctc + (1 - ctc_weight) * L_att``.
- Decoding (§3.2): beam search on ``(1 - lambda) log p_att + lambda log p_ctc`` where the CTC term is
  the prefix score of ``decoders.ctc_prefix_score`` (lambda = ``DecodingOptions.ctc_weight``); with
  lambda = 0 it is plain attention decoding.
- ``mlm_weight > 0`` adds a Mask-Predict decoder on the same memory (``+ mlm_weight * L_mlm``), and
  ``decode(memory, MaskCTCOptions())`` decodes non-autoregressively by Mask-CTC (``decoders.mask_ctc``;
  Higuchi et al. 2020): one model then decodes by CTC, Mask-CTC or attention.

The CTC blank (default 0, usually the pad id) and the decoder's bos/eos ids must not occur in targets.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from decoders.ctc import CTCHead
from decoders.ctc_prefix_score import CTCPrefixScorer
from decoders.mask_ctc import MaskCTCOptions, mask_ctc_decode
from decoders.parallel import MaskPredictDecoder, MaskPredictDims
from decoders.search import DecodingOptions, decode
from decoders.transformer_decoder import DecoderDims, TransformerDecoder
from zoo.contract import Decoder, DecoderOutput, Features
from zoo.registry import register_decoder

__all__ = ["CTCAttentionDecoder", "ctc_attention"]


class CTCAttentionDecoder(Decoder):
    """``ctc`` (CTCHead) + ``attention`` (TransformerDecoder) on one source; targets as for either part."""

    label_keys = ("tokens", "lengths")

    def __init__(self, dims: DecoderDims, ctc_weight: float = 0.3, blank: int = 0, mlm_weight: float = 0.0):
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must lie in [0, 1] (0 = attention only, 1 = CTC only), got {ctc_weight}")
        if dims.sources != 1:
            raise ValueError("ctc_attention reads one encoder (CTC needs a single frame sequence); set sources=1")
        if blank in (dims.bos_id, dims.eos_id):
            raise ValueError(f"blank={blank} collides with bos_id/eos_id ({dims.bos_id}/{dims.eos_id}); "
                             "use distinct ids (ESPnet: blank 0, sos/eos the last id)")
        self.attention = TransformerDecoder(dims)
        self.ctc = CTCHead(dims.memory_dim or dims.dim, dims.vocab_size, blank)
        self.ctc_weight, self.blank, self.mlm_weight = ctc_weight, blank, mlm_weight
        self.mlm = None
        if mlm_weight > 0:  # Mask-CTC's conditional masked LM; its length head is not used (CTC sets the length)
            self.mlm = MaskPredictDecoder(MaskPredictDims(
                dims.vocab_size, dims.dim, dims.heads, dims.layers, dims.ffn, dims.max_len, dims.bos_id, dims.eos_id,
                dims.pad_id, dims.memory_dim, dropout=dims.dropout, length_weight=0.0,
                label_smoothing=dims.label_smoothing))

    def forward(self, memory: Features | Sequence[Features], targets: dict[str, Tensor]) -> DecoderOutput:
        memory = _single(memory)
        w = self.ctc_weight
        ctc = self.ctc(memory, targets) if w > 0 else None
        att = self.attention(memory, targets) if w < 1 else None
        if ctc is None:
            loss = att.loss
        elif att is None:
            loss = ctc.loss
        else:
            loss = w * ctc.loss + (1.0 - w) * att.loss
        extras = {"ctc_loss": None if ctc is None else ctc.loss.detach(),
                  "att_loss": None if att is None else att.loss.detach()}
        if self.mlm is not None:
            mlm = self.mlm(memory, targets)
            loss = loss + self.mlm_weight * mlm.loss  # token loss (+ 0 x the unused length loss: DDP sees every parameter)
            extras["mlm_loss"] = mlm.extras["token_loss"].detach()
        return DecoderOutput(loss, None if att is None else att.logits, extras)

    @torch.no_grad()
    def decode(self, memory: Features | Sequence[Features], options: Any = None):
        """Joint CTC/attention search; ``options.ctc_weight`` (default: the training weight) sets lambda.
        ``MaskCTCOptions`` decodes by Mask-CTC instead (needs ``mlm_weight > 0``). ``DecodingOptions(draft="ctc")``
        is the attention decoder's greedy search, speculative with drafts copied from the CTC hypothesis."""
        memory = _single(memory)
        if isinstance(options, MaskCTCOptions):
            if self.mlm is None:
                raise ValueError("Mask-CTC decoding needs the masked-LM decoder: build ctc_attention with "
                                 "mlm_weight > 0 (preset asr_maskctc_*)")
            return mask_ctc_decode(self.ctc, self.mlm, memory, options)
        options = DecodingOptions(ctc_weight=self.ctc_weight) if options is None else options
        if not isinstance(options, DecodingOptions):
            raise TypeError(f"options must be decoders.search.DecodingOptions, got {type(options).__name__}")
        if options.draft == "ctc":  # lossless speculative greedy, drafts copied from the CTC branch's hypothesis
            from decoders.drafters import TokenCopyDrafter

            options = replace(options, draft=TokenCopyDrafter.from_hypotheses(self.ctc.decode(memory)))
        if options.ctc_weight == 0.0:
            return decode(self.attention, memory, options)
        scorer = CTCPrefixScorer(self.ctc.log_probs(memory), memory.lengths, self.blank, self.attention.dims.eos_id,
                                 options.ctc_weight)
        return decode(self.attention, memory, options, scorer=scorer)


def _single(memory) -> Features:
    if isinstance(memory, (list, tuple)):
        if len(memory) != 1:
            raise ValueError(f"ctc_attention reads one encoder, got {len(memory)}; give the node a single source")
        memory = memory[0]
    return memory


@register_decoder(task="asr", modality="text")
def ctc_attention(vocab_size: int, dim: int = 256, heads: int = 4, layers: int = 4, ffn: int = 0,
                  max_len: int = 448, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0, memory_dim: int = 0,
                  positions: str = "sinusoidal", tie_embeddings: bool = True, dropout: float = 0.0,
                  label_smoothing: float = 0.0, ctc_weight: float = 0.3, blank: int = 0,
                  mlm_weight: float = 0.0) -> CTCAttentionDecoder:
    """Hybrid CTC/attention (Watanabe et al. 2017): weighted CTC + attention loss, joint beam search;
    ``mlm_weight > 0`` adds Mask-CTC's masked LM (Higuchi et al. 2020)."""
    dims = DecoderDims(vocab_size, dim, heads, layers, ffn, max_len, bos_id, eos_id, pad_id, memory_dim,
                       positions=positions, tie_embeddings=tie_embeddings, dropout=dropout,
                       label_smoothing=label_smoothing)
    return CTCAttentionDecoder(dims, ctc_weight, blank, mlm_weight)
