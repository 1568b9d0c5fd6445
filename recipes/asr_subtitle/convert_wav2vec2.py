"""wav2vec 2.0 + CTC (Baevski et al., 2020, §4: a linear CTC layer fine-tuned on the Transformer output) as a
zoo graph {encoder "acoustic": hf_wav2vec2, decoder "ctc": ctc}, and the strict conversion of transformers'
``Wav2Vec2ForCTC`` weights onto it (``wav2vec2.*`` -> the encoder's model, ``lm_head`` -> the CTC projection).

    model = from_transformers_wav2vec2_ctc("path/to/wav2vec2-base-960h")   # a local save_pretrained directory
    hyps = model.generate({"audio": audio, "audio_lengths": lengths})["ctc"]
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.hub import CheckpointError, load_state_dict, load_weights, resolve_weights_file
from zoo.registry import register_model

# weight-norm names of the positional convolution: older checkpoints vs torch parametrizations
_WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0",
                ".weight_v": ".parametrizations.weight.original1"}


def wav2vec2_ctc_spec(config: dict[str, Any], vocab_size: int, blank: int, normalize: bool = True,
                      sample_rate: int = 16000) -> ModelSpec:
    """The graph: raw audio -> hf_wav2vec2 ("acoustic") -> ctc head ("ctc") with the encoder's frame shift."""
    hidden = config["hidden_size"]
    if config.get("add_adapter"):
        hidden = config.get("output_hidden_size") or hidden
    stride = math.prod(config["conv_stride"])
    if config.get("add_adapter"):
        stride *= config["adapter_stride"] ** config["num_adapter_layers"]
    return ModelSpec(
        encoders={"acoustic": Node("hf_wav2vec2", input="audio", config=config, normalize=normalize,
                                   sample_rate=sample_rate)},
        decoders={"ctc": Node("ctc", source="acoustic", in_dim=hidden, vocab_size=vocab_size, blank=blank,
                              frame_shift_s=stride / sample_rate)},
        task="asr", name="wav2vec2_ctc",
    )


@register_model(task="asr", modality="audio")
def wav2vec2_ctc(config: dict | None = None, vocab_size: int | None = None, blank: int | None = None,
                 normalize: bool = True) -> ZooModel:
    """wav2vec 2.0 encoder + CTC head (Baevski et al. 2020). ``config``: a transformers Wav2Vec2Config dict
    (default: the base architecture); ``vocab_size`` defaults to the config's (32) and ``blank`` to its
    ``pad_token_id`` (0), as Wav2Vec2ForCTC uses them."""
    from transformers import Wav2Vec2Config

    full = Wav2Vec2Config(**(config or {})).to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures"):
        full.pop(key, None)
    vocab = full["vocab_size"] if vocab_size is None else vocab_size
    blank = full.get("pad_token_id") if blank is None else blank
    return wav2vec2_ctc_spec(full, vocab, 0 if blank is None else blank, normalize).build()


def _node(model: ZooModel, kind: str, type_name: str) -> str:
    spec = model.spec_encoders if kind == "encoder" else model.spec_decoders
    names = [n for n, c in spec.items() if c["type"] == type_name]
    if len(names) != 1:
        raise CheckpointError(f"convert_wav2vec2_ctc needs exactly one {type_name} {kind} in the model, "
                              f"found {names}")
    return names[0]


def convert_wav2vec2_ctc(state_dict: dict[str, torch.Tensor], model: ZooModel) -> dict[str, torch.Tensor]:
    """Rename a transformers Wav2Vec2ForCTC state dict into ``model``'s keys; every key must map."""
    enc = f"encoders.{_node(model, 'encoder', 'hf_wav2vec2')}.model."
    dec = f"decoders.{_node(model, 'decoder', 'ctc')}.proj."
    own = model.state_dict()
    out, unmapped = {}, []
    for key, value in state_dict.items():
        if key.startswith("wav2vec2."):
            new = enc + key.removeprefix("wav2vec2.")
        elif key.startswith("lm_head."):
            new = dec + key.removeprefix("lm_head.")
        else:
            unmapped.append(key)
            continue
        if new not in own:
            for old, param in _WEIGHT_NORM.items():
                if new.endswith(old) and new.removesuffix(old) + param in own:
                    new = new.removesuffix(old) + param
                elif new.endswith(param) and new.removesuffix(param) + old in own:
                    new = new.removesuffix(param) + old
        if new not in own:
            unmapped.append(key)
            continue
        out[new] = value
    if unmapped:
        raise CheckpointError(f"{len(unmapped)} Wav2Vec2ForCTC keys have no place in the zoo model: "
                              f"{unmapped[:8]}. Is this a Wav2Vec2ForCTC checkpoint, and was the model built "
                              "from its config?")
    return out


def from_transformers_wav2vec2_ctc(path_or_model: Any, normalize: bool | None = None) -> ZooModel:
    """Build ``wav2vec2_ctc`` from a local Wav2Vec2ForCTC directory (config.json + weights, read with the
    zoo's safe loader) or from a Wav2Vec2ForCTC instance, converting every weight strictly. ``normalize``
    defaults to the directory's preprocessor_config.json ``do_normalize`` (else True)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    if isinstance(path_or_model, Wav2Vec2ForCTC):
        config, state, source = path_or_model.config, path_or_model.state_dict(), type(path_or_model).__name__
    elif isinstance(path_or_model, (str, Path)) and Path(path_or_model).is_dir():
        path = Path(path_or_model)
        config = Wav2Vec2Config.from_pretrained(str(path), local_files_only=True)
        weights = resolve_weights_file(path, local_files_only=True)
        state, source = load_state_dict(weights), str(weights)
        prep = path / "preprocessor_config.json"
        if normalize is None and prep.is_file():
            normalize = bool(json.loads(prep.read_text()).get("do_normalize", True))
    else:
        raise ValueError("from_transformers_wav2vec2_ctc takes a Wav2Vec2ForCTC or a local directory saved "
                         f"with save_pretrained, got {path_or_model!r}; download hub models first "
                         "(huggingface_hub.snapshot_download)")
    model = wav2vec2_ctc(config=config.to_dict(), normalize=True if normalize is None else normalize)
    load_weights(model, convert_wav2vec2_ctc(state, model), strict=True, source=source)
    return model.eval()
