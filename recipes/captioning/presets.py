"""Audio-visual captioning presets (VALOR-style grouping, §3 of Chen et al. 2023, at toy scale).

Graph: ``vision`` (timm, reads ``batch["image"]``) and ``sound`` (AST, reads ``batch["audio"]``)
encoders; ``vision_g`` / ``audio_g`` gate each modality
per row from ``batch["modalities"]`` (the sampled group v / a / va); the ``caption`` head is an
autoregressive Transformer decoder reading both gated encoders at once (tokens concatenated, plus a
learned modality embedding), the ``align`` head the MGA contrastive loss on the ungated encoders.
Swapping the image backbone is one argument: ``backbone="vit"`` or ``"resnet"``.
"""
from __future__ import annotations

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.registry import register_model

BACKBONES = {  # timm names + kwargs; both give a spatial map for pixel decoders
    "vit": dict(model_name="vit_tiny_patch16_224",
                model_kwargs=dict(img_size=64, patch_size=8, embed_dim=128, depth=3, num_heads=4)),
    # 16 x 16 patches of 4 px: the finer map the X-Decoder's masks are read from (2.6x the cost of "vit")
    "vit_fine": dict(model_name="vit_tiny_patch16_224",
                     model_kwargs=dict(img_size=64, patch_size=4, embed_dim=128, depth=3, num_heads=4)),
    "resnet": dict(model_name="resnet10t", image_size=128),
}
SIZES = {"tiny": dict(dim=128, heads=4, audio_layers=2, dec_layers=2, n_mels=64)}
VOCAB = 48  # sentencepiece word model over the caption grammar (pad 0, unk 1, bos 2, eos 3)


def caption_spec(size: str = "tiny", backbone: str = "vit", vocab_size: int = VOCAB, align_weight: float = 0.1,
                 max_len: int = 40, parallel_head: bool = False) -> ModelSpec:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {list(BACKBONES)}")
    s = SIZES[size]
    dim = s["dim"]
    encoders = {
        "vision": Node("timm_vision", input="image", dim=dim, **BACKBONES[backbone]),
        "sound": Node("ast_audio", input="audio", n_mels=s["n_mels"], fstride=16, tstride=16, dim=dim,
                      layers=s["audio_layers"], heads=s["heads"], max_frames=256),
        "vision_g": Node("modality_gate", input="vision", conditions=["modalities"], dim=dim, slot=0),
        "audio_g": Node("modality_gate", input="sound", conditions=["modalities"], dim=dim, slot=1),
    }
    decoders = {
        "caption": Node("transformer_decoder", source=["vision_g", "audio_g"], sources=2, vocab_size=vocab_size,
                        dim=dim, heads=s["heads"], layers=s["dec_layers"], max_len=max_len, bos_id=2, eos_id=3,
                        pad_id=0, dropout=0.1, label_smoothing=0.1),
        "align": Node("group_alignment", source=["vision", "sound"], vocab_size=vocab_size, memory_dim=dim, dim=dim,
                      heads=s["heads"]),
    }
    weights = {"caption": 1.0, "align": align_weight}
    if parallel_head:  # Mask-Predict on the same gated encoders: one decoding pass per refinement
        decoders["caption_nar"] = Node("mask_predict_decoder", source=["vision_g", "audio_g"], sources=2,
                                       vocab_size=vocab_size, dim=dim, heads=s["heads"], layers=s["dec_layers"],
                                       max_len=max_len, bos_id=2, eos_id=3, pad_id=0, dropout=0.1)
        weights["caption_nar"] = 1.0
    return ModelSpec(encoders, decoders, weights, task="captioning",
                     name=f"caption_av_{size}" + ("" if backbone == "vit" else f"_{backbone}"))


def _build(backbone: str, vocab_size: int, tokenizers: dict | None, align_weight: float,
           parallel_head: bool = False) -> ZooModel:
    spec = caption_spec("tiny", backbone, vocab_size, align_weight, parallel_head=parallel_head)
    return ZooModel(**spec.to_config(), meta={"sample_rate": 16000, "tokenizers": tokenizers or {}})


@register_model(task="captioning", modality="image+audio")
def caption_av_tiny(vocab_size: int = VOCAB, tokenizers: dict | None = None, align_weight: float = 0.1,
                    parallel_head: bool = False) -> ZooModel:
    """Audio-visual captioner: tiny ViT (64 px, patch 8) + tiny AST + 2-layer decoder, VALOR-style groups.

    Args:
        vocab_size: caption vocabulary (the tokenizer's).
        tokenizers: {"caption": tokenizer.to_dict()} stored in config.json.
        align_weight: weight of the MGA contrastive head.
        parallel_head: add ``caption_nar``, a Mask-Predict (parallel) caption head on the same encoders.
    """
    return _build("vit", vocab_size, tokenizers, align_weight, parallel_head)


@register_model(task="captioning", modality="image+audio")
def caption_av_tiny_resnet(vocab_size: int = VOCAB, tokenizers: dict | None = None,
                           align_weight: float = 0.1) -> ZooModel:
    """``caption_av_tiny`` with a timm ResNet-10t (128 px) instead of the ViT: the one-line backbone swap."""
    return _build("resnet", vocab_size, tokenizers, align_weight)


@register_model(task="captioning", modality="image")
def xdecoder_scenes_tiny(vocab_size: int = VOCAB, tokenizers: dict | None = None, queries: int = 16,
                         ground_weight: float = 1.0, mask_upsample: int = 2) -> ZooModel:
    """X-Decoder on the tiny ViT (4 px patches): captions, referring segmentation (``zoo segment``) from one decoder.

    Args:
        vocab_size: the tokenizer's vocabulary (captions and referring expressions).
        tokenizers: {"xdec": tokenizer.to_dict()} stored in config.json.
        queries: latent (object) queries.
        ground_weight: weight of the grounding loss; 0 trains the caption-only baseline.
        mask_upsample: masks on a 2x finer grid than the ViT's 16 x 16 map (learned upsampling).
    """
    dim = SIZES["tiny"]["dim"]
    spec = ModelSpec({"vision": Node("timm_vision", input="image", dim=dim, **BACKBONES["vit_fine"])},
                     {"xdec": Node("xdecoder", source="vision", vocab_size=vocab_size, dim=dim, heads=4, layers=3,
                                   queries=queries, memory_dim=dim, max_len=24, ground_weight=ground_weight,
                                   mask_upsample=mask_upsample)},
                     task="captioning", name="xdecoder_scenes_tiny")
    return ZooModel(**spec.to_config(), meta={"tokenizers": tokenizers or {}})
