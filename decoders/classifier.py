"""Classification heads: per-frame tagging and pooled sequence classification (e.g. audio tagging)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.contract import Decoder, DecoderOutput, Features
from zoo.registry import register_decoder


class FrameClassifier(Decoder):
    """Linear head on every frame; cross-entropy over valid frames. targets: ``labels`` (B, T)."""

    label_keys = ("labels",)

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, num_classes)

    def forward(self, memory: Features, targets: dict[str, Tensor]) -> DecoderOutput:
        logits = self.proj(memory.x)
        labels = targets["labels"].masked_fill(memory.padding_mask(), -100)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return DecoderOutput(loss, logits)

    @torch.no_grad()
    def decode(self, memory: Features, options=None) -> list[Tensor]:
        pred = self.proj(memory.x).argmax(-1)
        lengths = memory.lengths if memory.lengths is not None else torch.full((pred.shape[0],), pred.shape[1])
        return [p[: int(n)] for p, n in zip(pred, lengths)]


class SequenceClassifier(Decoder):
    """Masked mean pooling, then a linear layer; multi-class (softmax CE) or multi-label (BCE).

    targets: ``labels`` (B,) class ids, or (B, C) multi-hot when ``multi_label``.
    """

    label_keys = ("labels",)

    def __init__(self, in_dim: int, num_classes: int, multi_label: bool = False):
        super().__init__()
        self.proj, self.multi_label = nn.Linear(in_dim, num_classes), multi_label

    def pooled_logits(self, memory: Features) -> Tensor:
        keep = (~memory.padding_mask()).unsqueeze(-1).to(memory.x.dtype)
        pooled = (memory.x * keep).sum(1) / keep.sum(1).clamp_min(1)
        return self.proj(pooled)

    def forward(self, memory: Features, targets: dict[str, Tensor]) -> DecoderOutput:
        logits = self.pooled_logits(memory)
        labels = targets["labels"]
        if self.multi_label:
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        else:
            loss = F.cross_entropy(logits, labels)
        return DecoderOutput(loss, logits)

    @torch.no_grad()
    def decode(self, memory: Features, options=None) -> Tensor:
        """Class ids (B,), or probabilities (B, C) for a multi-label head."""
        logits = self.pooled_logits(memory)
        return logits.sigmoid() if self.multi_label else logits.argmax(-1)


@register_decoder(task="classification")
def frame_classifier(in_dim: int, num_classes: int) -> FrameClassifier:
    """Per-frame linear classifier with cross-entropy."""
    return FrameClassifier(in_dim, num_classes)


@register_decoder(task="classification")
def sequence_classifier(in_dim: int, num_classes: int, multi_label: bool = False) -> SequenceClassifier:
    """Mean-pooled sequence classifier (softmax or multi-label sigmoid)."""
    return SequenceClassifier(in_dim, num_classes, multi_label)
