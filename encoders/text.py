"""Text encoders through transformers for queries and phrases: BERT (Devlin et al., NAACL 2019, §3) or
the CLIP text tower (Radford et al., ICML 2021, §2.4), built from a config with random weights
(offline) or loaded with ``from_pretrained`` from a local directory / hub id (no remote code).

Input: token ids (B, T) padded on the right, ``lengths`` (B,) -> ``Features(last_hidden_state, lengths)``;
padding is excluded through the attention mask, so valid positions do not depend on it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo.contract import Encoder, Features, padding_mask
from zoo.registry import register_encoder

__all__ = ["HFTextEncoder", "hf_text"]

FAMILIES = ("bert", "clip")


class HFTextEncoder(Encoder):
    def __init__(self, family: str = "bert", config: dict[str, Any] | None = None, pretrained: str | None = None,
                 dim: int = 0):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        import transformers as tf

        model_cls, config_cls = ((tf.BertModel, tf.BertConfig) if family == "bert"
                                 else (tf.CLIPTextModel, tf.CLIPTextConfig))
        if pretrained:
            self.model = model_cls.from_pretrained(pretrained, trust_remote_code=False)
        else:
            kwargs = {"add_pooling_layer": False} if family == "bert" else {}
            self.model = model_cls(config_cls(**(config or {})), **kwargs)
        width = int(self.model.config.hidden_size)
        self.proj = nn.Linear(width, dim) if dim and dim != width else nn.Identity()
        self.family, self.out_dim = family, dim or width

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        if inputs.dtype not in (torch.long, torch.int32, torch.int64) or inputs.dim() != 2:
            raise ValueError(f"hf_text expects token ids (B, T) as integers, got {inputs.dtype} {tuple(inputs.shape)}")
        vocab = self.model.config.vocab_size
        if inputs.numel() and (inputs.min() < 0 or inputs.max() >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab}); tokenize with the model's own tokenizer")
        mask = None if lengths is None else (~padding_mask(lengths, inputs.shape[1])).long().to(inputs.device)
        out = self.model(input_ids=inputs.long(), attention_mask=mask).last_hidden_state
        return Features(self.proj(out), lengths)


@register_encoder(modality="text", task="captioning")
def hf_text(family: str = "bert", config: dict[str, Any] | None = None, pretrained: str | None = None,
            dim: int = 0) -> HFTextEncoder:
    """A transformers BERT or CLIP text tower (random init from ``config`` offline, or ``pretrained``)."""
    return HFTextEncoder(family, config, pretrained, dim)
