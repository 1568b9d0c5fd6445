"""encdec-zoo: interchangeable encoders and decoders assembled into named model graphs."""
from zoo.contract import Decoder, DecoderOutput, Encoder, Features, Hypothesis
from zoo.graph import ModelOutput, ModelSpec, Node, ZooModel
from zoo.registry import (
    PretrainedCfg, UnknownNameError, create_decoder, create_encoder, create_model, list_decoders,
    list_encoders, list_models, register_decoder, register_encoder, register_model,
)

__version__ = "0.1.0"
__all__ = [
    "Decoder", "DecoderOutput", "Encoder", "Features", "Hypothesis", "ModelOutput", "ModelSpec", "Node",
    "ZooModel", "PretrainedCfg", "UnknownNameError", "create_decoder", "create_encoder", "create_model",
    "list_decoders", "list_encoders", "list_models", "register_decoder", "register_encoder", "register_model",
]
