"""Whisper (Radford et al., 2022, §2.2) as a zoo graph {encoder "acoustic": whisper_encoder, decoder "text":
transformer_decoder in Whisper's configuration (learned positions, tied output projection, pre-LN,
GELU, biases but no key bias)}, and the strict conversion of transformers'
``WhisperForConditionalGeneration`` weights onto it (every key mapped, none left over).

    model = from_transformers_whisper("path/to/whisper-tiny")    # a save_pretrained directory (or hub id)
    opts = DecodingOptions(beam_size=4, max_len=64, prefix=(lang_id, transcribe_id, notimestamps_id))
    hyps = model.generate({"audio": mel_or_16khz_audio}, options=opts)["text"]

``bos_id`` is Whisper's ``<|startoftranscript|>`` (transformers' ``decoder_start_token_id``); the
language / task / timestamp tokens go in ``DecodingOptions.prefix``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.hub import CheckpointError, load_state_dict, load_weights, resolve_weights_file
from zoo.registry import PretrainedCfg, register_model

__all__ = ["convert_hf_whisper", "from_transformers_whisper", "whisper", "whisper_dims_from_config", "whisper_spec"]

CONVERTER = "recipes.asr_subtitle.convert_whisper:convert_hf_whisper"


def whisper_spec(n_mels: int = 80, n_audio_ctx: int = 1500, n_audio_state: int = 384, n_audio_head: int = 6,
                 n_audio_layer: int = 4, n_audio_ffn: int = 0, n_vocab: int = 51865, n_text_ctx: int = 448,
                 n_text_state: int = 384, n_text_head: int = 6, n_text_layer: int = 4, n_text_ffn: int = 0,
                 bos_id: int = 50258, eos_id: int = 50257, pad_id: int = 50257) -> ModelSpec:
    """openai/whisper ``ModelDimensions`` (defaults: tiny, multilingual) as a graph; ffn 0 = 4 x width."""
    return ModelSpec(
        encoders={"acoustic": Node("whisper_encoder", input="audio", n_mels=n_mels, n_ctx=n_audio_ctx,
                                dim=n_audio_state, heads=n_audio_head, layers=n_audio_layer, ffn=n_audio_ffn)},
        decoders={"text": Node("transformer_decoder", source="acoustic", vocab_size=n_vocab, dim=n_text_state,
                               heads=n_text_head, layers=n_text_layer, ffn=n_text_ffn, max_len=n_text_ctx,
                               bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, memory_dim=n_audio_state,
                               positions="learned", tie_embeddings=True, bias=True, embed_scale=False)},
        task="asr", name="whisper",
    )


@register_model(task="asr", modality="audio", pretrained_cfgs={
    "tiny": PretrainedCfg(hf_hub_id="openai/whisper-tiny", revision="169d4a4341b33bc18d8881c4b69c2e104e1cc0af",
                          converter=CONVERTER,
                          description="OpenAI Whisper tiny (multilingual), converted from transformers"),
})
def whisper(n_mels: int = 80, n_audio_ctx: int = 1500, n_audio_state: int = 384, n_audio_head: int = 6,
            n_audio_layer: int = 4, n_audio_ffn: int = 0, n_vocab: int = 51865, n_text_ctx: int = 448,
            n_text_state: int = 384, n_text_head: int = 6, n_text_layer: int = 4, n_text_ffn: int = 0,
            bos_id: int = 50258, eos_id: int = 50257, pad_id: int = 50257) -> ZooModel:
    """Whisper encoder-decoder (Radford et al. 2022) in zoo form; defaults are whisper-tiny's dimensions.

    Load real weights with ``create_model("whisper.tiny", pretrained=True)`` (needs the hub or its cache)
    or ``from_transformers_whisper(path)``.
    """
    return whisper_spec(n_mels, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_audio_ffn, n_vocab,
                        n_text_ctx, n_text_state, n_text_head, n_text_layer, n_text_ffn, bos_id, eos_id,
                        pad_id).build()


def whisper_dims_from_config(config: dict[str, Any]) -> dict[str, int]:
    """transformers ``WhisperConfig`` (as a dict) -> keyword arguments of :func:`whisper`."""
    if config.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"only GELU Whisper checkpoints convert; this one uses {config['activation_function']!r}")
    if config.get("scale_embedding", False):
        raise ValueError("scale_embedding=True Whisper variants are not supported (Whisper itself uses False)")
    eos = config.get("eos_token_id", 50257)
    return dict(
        n_mels=config["num_mel_bins"], n_audio_ctx=config["max_source_positions"], n_audio_state=config["d_model"],
        n_audio_head=config["encoder_attention_heads"], n_audio_layer=config["encoder_layers"],
        n_audio_ffn=config["encoder_ffn_dim"], n_vocab=config["vocab_size"],
        n_text_ctx=config["max_target_positions"], n_text_state=config["d_model"],
        n_text_head=config["decoder_attention_heads"], n_text_layer=config["decoder_layers"],
        n_text_ffn=config["decoder_ffn_dim"], bos_id=config["decoder_start_token_id"],
        eos_id=eos[0] if isinstance(eos, list) else eos, pad_id=config.get("pad_token_id", eos),
    )


def _node(model: ZooModel, spec: dict[str, dict], type_name: str) -> str:
    names = [n for n, c in spec.items() if c["type"] == type_name]
    if len(names) != 1:
        raise CheckpointError(f"a Whisper conversion needs exactly one '{type_name}' node; this model has {names}")
    return names[0]


def convert_hf_whisper(state_dict: dict[str, Tensor], model: ZooModel) -> dict[str, Tensor]:
    """Map a transformers Whisper state dict (``WhisperForConditionalGeneration`` or ``WhisperModel``) onto
    ``model``'s keys. Every source key must be used; the tied ``proj_out`` must equal the embedding."""
    src = {k.removeprefix("model."): v for k, v in state_dict.items()}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in src:
            raise CheckpointError(f"Whisper checkpoint lacks '{key}'; is it a transformers Whisper state dict?")
        used.add(key)
        return src[key]

    def qkv(prefix: str, with_query: bool = True) -> tuple[Tensor, Tensor]:
        """Fuse q/k/v (or k/v) projections; Whisper's k_proj has no bias, so that slice is zero."""
        parts = (["q"] if with_query else []) + ["k", "v"]
        weight = torch.cat([take(f"{prefix}.{p}_proj.weight") for p in parts])
        biases = [torch.zeros_like(take(f"{prefix}.v_proj.bias")) if p == "k" else take(f"{prefix}.{p}_proj.bias")
                  for p in parts]
        return weight, torch.cat(biases)

    enc = "encoders." + _node(model, model.spec_encoders, "whisper_encoder")
    dec = "decoders." + _node(model, model.spec_decoders, "transformer_decoder")
    out: dict[str, Tensor] = {}

    def linear(dst: str, source: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = take(f"{source}.weight"), take(f"{source}.bias")

    for name in ("conv1", "conv2"):
        linear(f"{enc}.{name}", f"encoder.{name}")
    out[f"{enc}.positions"] = take("encoder.embed_positions.weight")
    for i in range(len(model.encoders[enc.split(".")[1]].blocks)):
        s, d = f"encoder.layers.{i}", f"{enc}.blocks.{i}"
        linear(f"{d}.attn_ln", f"{s}.self_attn_layer_norm")
        out[f"{d}.qkv.weight"], out[f"{d}.qkv.bias"] = qkv(f"{s}.self_attn")
        linear(f"{d}.out", f"{s}.self_attn.out_proj")
        linear(f"{d}.mlp_ln", f"{s}.final_layer_norm")
        linear(f"{d}.fc1", f"{s}.fc1")
        linear(f"{d}.fc2", f"{s}.fc2")
    linear(f"{enc}.ln_post", "encoder.layer_norm")

    out[f"{dec}.embed.weight"] = take("decoder.embed_tokens.weight")
    out[f"{dec}.pos"] = take("decoder.embed_positions.weight")
    for i in range(len(model.decoders[dec.split(".")[1]].blocks)):
        s, d = f"decoder.layers.{i}", f"{dec}.blocks.{i}"
        linear(f"{d}.attn_ln", f"{s}.self_attn_layer_norm")
        out[f"{d}.attn.qkv.weight"], out[f"{d}.attn.qkv.bias"] = qkv(f"{s}.self_attn")
        linear(f"{d}.attn.out", f"{s}.self_attn.out_proj")
        linear(f"{d}.cross_ln", f"{s}.encoder_attn_layer_norm")
        linear(f"{d}.cross.q", f"{s}.encoder_attn.q_proj")
        out[f"{d}.cross.kv.weight"], out[f"{d}.cross.kv.bias"] = qkv(f"{s}.encoder_attn", with_query=False)
        linear(f"{d}.cross.out", f"{s}.encoder_attn.out_proj")
        linear(f"{d}.mlp_ln", f"{s}.final_layer_norm")
        linear(f"{d}.fc1", f"{s}.fc1")
        linear(f"{d}.fc2", f"{s}.fc2")
    linear(f"{dec}.ln", "decoder.layer_norm")

    if "proj_out.weight" in src:  # saved untied by some exports; the zoo decoder ties it
        used.add("proj_out.weight")
        if not torch.equal(src["proj_out.weight"], src["decoder.embed_tokens.weight"]):
            raise CheckpointError("proj_out.weight differs from decoder.embed_tokens.weight; the zoo Whisper "
                                  "decoder ties them (tie_embeddings=True), so this checkpoint cannot convert")
    left = sorted(set(src) - used)
    if left:
        raise CheckpointError(f"unconverted Whisper keys {left[:8]}{' ...' if len(left) > 8 else ''}; "
                              "this looks like a variant the converter does not know")
    return out


def from_transformers_whisper(path: str | Path, revision: str | None = None) -> ZooModel:
    """Build the zoo Whisper matching a transformers checkpoint's config.json and load it strictly."""
    path = Path(path)
    local = path.exists() or path.is_absolute() or str(path).startswith(".")
    if local:
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{path} has no config.json; pass a WhisperForConditionalGeneration "
                                  "save_pretrained directory (or a hub id such as openai/whisper-tiny)")
    else:
        from huggingface_hub import hf_hub_download

        config_file = Path(hf_hub_download(str(path), "config.json", revision=revision))
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "whisper":
        raise CheckpointError(f"{config_file} describes a '{config.get('model_type')}' model, not whisper")
    model = whisper(**whisper_dims_from_config(config))
    weights = resolve_weights_file(str(path), revision=revision)
    load_weights(model, convert_hf_whisper(load_state_dict(weights), model), strict=True, source=str(weights))
    return model.eval()
