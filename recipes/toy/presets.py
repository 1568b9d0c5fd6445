"""Toy presets: frame tagging on a first encoder, sequence classification on a cascaded second one."""
from __future__ import annotations

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.registry import register_model

IN_DIM, NUM_CLASSES = 8, 4


def toy_spec(dim: int = 64, layers: int = 2, heads: int = 4) -> ModelSpec:
    return ModelSpec(
        encoders={
            "frames": Node("mlp_encoder", input="signal", in_dim=IN_DIM, dim=dim, layers=2),
            "context": Node("transformer_encoder", input="frames", in_dim=dim, dim=dim, layers=layers,
                            heads=heads, dropout=0.0),  # cascaded on "frames"
        },
        decoders={
            "tags": Node("frame_classifier", source="frames", in_dim=dim, num_classes=NUM_CLASSES),
            "majority": Node("sequence_classifier", source="context", in_dim=dim, num_classes=NUM_CLASSES),
        },
        loss_weights={"tags": 1.0, "majority": 1.0},
        task="toy", name="toy_cascade",
    )


@register_model(task="toy", modality="signal")
def toy_cascade(dim: int = 64, layers: int = 2, heads: int = 4) -> ZooModel:
    """Two encoders (an MLP, then a Transformer cascaded on it) and two heads (frame tags, majority class).

    Args:
        dim: width of both encoders.
        layers: Transformer layers of the cascaded encoder.
        heads: attention heads.
    """
    return toy_spec(dim, layers, heads).build()
