"""torchaudio ``ConvTasNet`` -> our Conv-TasNet (free filterbank + TCN masker + transposed conv).

``convert_torchaudio_convtasnet(state_dict, model)`` is a :class:`zoo.registry.PretrainedCfg` converter
(``"recipes.separation.convert:convert_torchaudio_convtasnet"``); ``from_torchaudio(ta_model)`` builds
our model with the matching hyper-parameters and loads the converted weights strictly.

torchaudio ties the skip width to the bottleneck (Sc = B), applies no nonlinearity after the encoder
(so the converted model uses ``encoder_activation="none"``) and keeps separate residual/skip 1x1
convs, which we fuse into one ``res_skip`` weight (residual rows first).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from zoo.graph import ZooModel
from zoo.hub import CheckpointError, load_weights

__all__ = ["convert_torchaudio_convtasnet", "from_torchaudio", "torchaudio_hparams"]

# our block submodule <- torchaudio ConvBlock.conv_layers index
_BLOCK = {"in_conv": 0, "act1": 1, "norm1": 2, "dw_conv": 3, "act2": 4, "norm2": 5}


def _node(spec: dict, type_: str, kind: str) -> str:
    names = [n for n, cfg in spec.items() if cfg["type"] == type_]
    if len(names) != 1:
        raise ValueError(
            f"the model needs exactly one {kind} of type '{type_}' to receive Conv-TasNet weights; "
            f"found {names or 'none'}"
        )
    return names[0]


def convert_torchaudio_convtasnet(state_dict: dict[str, Tensor], model: ZooModel) -> dict[str, Tensor]:
    """Rename (and fuse) torchaudio ConvTasNet keys into ``model``'s; unknown keys raise CheckpointError."""
    enc = _node(model.spec_encoders, "free_filterbank", "encoder")
    dec = _node(model.spec_decoders, "mask_decoder", "decoder")
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(
                f"torchaudio ConvTasNet state dict lacks '{key}'; is it a ConvTasNet checkpoint?"
            )
        used.add(key)
        return sd[key]

    m, g = f"decoders.{dec}.masker.", "mask_generator."
    out = {
        f"encoders.{enc}.conv.weight": take("encoder.weight"),
        f"decoders.{dec}.decoder.weight": take("decoder.weight"),
    }
    for ours, theirs in [
        ("input_norm", "input_norm"),
        ("bottleneck", "input_conv"),
        ("output_conv", "output_conv"),
    ]:
        for p in ("weight", "bias"):
            out[f"{m}{ours}.{p}"] = take(f"{g}{theirs}.{p}")
    out[f"{m}output_act.weight"] = take(f"{g}output_prelu.weight")
    n_blocks = 1 + max(
        int(re.match(rf"{g}conv_layers\.(\d+)\.", k).group(1)) for k in sd if k.startswith(f"{g}conv_layers.")
    )
    for i in range(n_blocks):
        src, dst = f"{g}conv_layers.{i}.", f"{m}blocks.{i}."
        for ours, idx in _BLOCK.items():
            for p in ("weight", "bias"):
                if f"{src}conv_layers.{idx}.{p}" in sd:
                    out[f"{dst}{ours}.{p}"] = take(f"{src}conv_layers.{idx}.{p}")
        for p in ("weight", "bias"):
            parts = [take(f"{src}res_out.{p}")] if f"{src}res_out.{p}" in sd else []
            out[f"{dst}res_skip.{p}"] = torch.cat(parts + [take(f"{src}skip_out.{p}")])
    left = sorted(set(sd) - used)
    if left:
        raise CheckpointError(f"unconverted torchaudio ConvTasNet keys: {left[:8]}")
    return out


def torchaudio_hparams(ta_model) -> dict:
    """Our ``conv_tasnet`` keyword arguments equivalent to a ``torchaudio.models.ConvTasNet``."""
    mg = ta_model.mask_generator
    blocks = mg.conv_layers
    first = blocks[0].conv_layers
    X = int(math.log2(max(b.conv_layers[3].dilation[0] for b in blocks))) + 1
    act = type(mg.mask_activate).__name__.lower()
    return {
        "n_src": ta_model.num_sources,
        "N": ta_model.enc_num_feats,
        "L": ta_model.enc_kernel_size,
        "B": mg.input_conv.out_channels,
        "H": first[0].out_channels,
        "Sc": mg.input_conv.out_channels,
        "P": first[3].kernel_size[0],
        "X": X,
        "R": len(blocks) // X,
        "mask_act": act,
        "encoder_activation": "none",
    }


def from_torchaudio(ta_model, sample_rate: int = 8000) -> ZooModel:
    """Our Conv-TasNet with ``ta_model``'s hyper-parameters and (converted) weights, in eval mode."""
    from recipes.separation.presets import conv_tasnet

    model = conv_tasnet(**torchaudio_hparams(ta_model), sample_rate=sample_rate)
    state = convert_torchaudio_convtasnet(ta_model.state_dict(), model)
    load_weights(model, state, strict=True, source=f"torchaudio {type(ta_model).__name__}")
    return model.eval()
