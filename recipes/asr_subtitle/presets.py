"""ASR + subtitling presets: one audio, a verbatim transcript and a subtitle.

The graph shapes follow "Leveraging Broadcast Media Subtitle Transcripts for ASR and Subtitling"
(Poncelet & Van hamme, 2025) and its ESPnet model: single-task verbatim, single-task subtitle, a
shared encoder with separate decoders, and — the paper's best — cascaded encoders with separate
decoders, where a subtitle encoder is stacked on the acoustic encoder and the subtitle decoder also
attends the acoustic encoder. ``asr_hybrid_*`` is verbatim-only with a hybrid CTC/attention head
(ESPnet's default ASR model). ``asr_ctc_*`` is encoder-only (OWSM-CTC style, Peng et al. 2024):
hierarchical CTC heads, the subtitle head on a stage cascaded over the verbatim one.

Sizes: ``tiny`` is the 3.2M-parameter Conformer of shared/research/calibration.md (d=144, 6 layers,
4x subsampling) plus small subtitle parts; ``small`` doubles the width.
"""
from __future__ import annotations

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.registry import register_model

from recipes.asr_subtitle import convert_wav2vec2, convert_whisper  # noqa: F401  (register wav2vec2_ctc, whisper)

SIZES = {
    "tiny": dict(dim=144, layers=6, heads=4, ffn=576, written_layers=2, dec_layers=2),
    "small": dict(dim=256, layers=8, heads=4, ffn=1024, written_layers=3, dec_layers=3),
}
FRAME_SHIFT_S = 0.04  # 10 ms hop x 4x subsampling
SPEC_AUGMENT = dict(freq_masks=2, freq_width=27, time_masks=2, time_width=40, time_ratio=0.05)
# char tokenizers of the corpus: <blank>=0, <unk>=1, <s>=2, </s>=3, then ~30 (verbatim) / ~70 (subtitle) symbols
VERBATIM_VOCAB, SUBTITLE_VOCAB = 40, 90


def acoustic(size: str, spec_augment: bool = True, spec_augment_warmup: int = 0, intermediate: bool = False) -> Node:
    s = SIZES[size]
    aug = dict(SPEC_AUGMENT, warmup_steps=spec_augment_warmup) if spec_augment_warmup else SPEC_AUGMENT
    inter = {"intermediate_layers": [s["layers"] // 2]} if intermediate else {}  # InterCTC at the middle layer
    return Node("conformer_speech", input="audio", dim=s["dim"], layers=s["layers"], heads=s["heads"],
                ffn=s["ffn"], spec_augment=aug if spec_augment else None, **inter)


def written(size: str, source: str = "acoustic") -> Node:
    s = SIZES[size]
    return Node("conformer_stack", input=source, in_dim=s["dim"], dim=s["dim"], layers=s["written_layers"],
                heads=s["heads"], ffn=s["ffn"], frame_shift_s=FRAME_SHIFT_S)


def ctc_head(size: str, source: str, vocab: int, inter_weight: float = 0.0) -> Node:
    inter = {"inter_weight": inter_weight} if inter_weight else {}
    return Node("ctc", source=source, in_dim=SIZES[size]["dim"], vocab_size=vocab, frame_shift_s=FRAME_SHIFT_S,
                **inter)


def ar_head(size: str, source: str | list[str], vocab: int) -> Node:
    s = SIZES[size]
    sources = len(source) if isinstance(source, list) else 1
    return Node("transformer_decoder", source=source, vocab_size=vocab, dim=s["dim"], heads=s["heads"],
                layers=s["dec_layers"], ffn=s["ffn"], bos_id=2, eos_id=3, pad_id=0, sources=sources,
                dropout=0.1, label_smoothing=0.1)


def asr_spec(kind: str, size: str, verbatim_vocab: int = VERBATIM_VOCAB, subtitle_vocab: int = SUBTITLE_VOCAB,
             spec_augment: bool = True, spec_augment_warmup: int = 0, inter_ctc: float = 0.0) -> ModelSpec:
    """``kind``: verbatim | subtitle | shared | cascaded | ctc | hybrid | maskctc. ``inter_ctc``: Intermediate CTC weight
    of the verbatim CTC head on the acoustic encoder's middle layer (0: off)."""
    if inter_ctc and kind in ("subtitle", "hybrid", "maskctc"):
        raise ValueError(f"inter_ctc applies to the verbatim CTC head, which asr_{kind}_* does not have")
    encoders = {"acoustic": acoustic(size, spec_augment, spec_augment_warmup, inter_ctc > 0)}
    verbatim_ctc = ctc_head(size, "acoustic", verbatim_vocab, inter_ctc)
    if kind == "verbatim":
        decoders = {"verbatim": verbatim_ctc}
    elif kind == "subtitle":
        decoders = {"subtitle": ar_head(size, "acoustic", subtitle_vocab)}
    elif kind == "shared":
        decoders = {"verbatim": verbatim_ctc, "subtitle": ar_head(size, "acoustic", subtitle_vocab)}
    elif kind == "cascaded":
        encoders["written"] = written(size)
        decoders = {"verbatim": verbatim_ctc, "subtitle": ar_head(size, ["written", "acoustic"], subtitle_vocab)}
    elif kind in ("hybrid", "maskctc"):
        s = SIZES[size]
        mlm = {"mlm_weight": 0.3} if kind == "maskctc" else {}
        decoders = {"verbatim": Node("ctc_attention", source="acoustic", vocab_size=verbatim_vocab, dim=s["dim"],
                                     heads=s["heads"], layers=s["dec_layers"], ffn=s["ffn"], bos_id=2, eos_id=3,
                                     pad_id=0, blank=0, ctc_weight=0.3, dropout=0.1, label_smoothing=0.1, **mlm)}
    elif kind == "ctc":
        encoders["written"] = written(size)
        decoders = {"verbatim": verbatim_ctc, "subtitle": ctc_head(size, "written", subtitle_vocab)}
    else:
        raise ValueError(f"unknown ASR preset kind {kind!r}; choose verbatim, subtitle, shared, cascaded, ctc, hybrid "
                         "or maskctc")
    return ModelSpec(encoders, decoders, {h: 1.0 for h in decoders}, task="asr", name=f"asr_{kind}_{size}")


def _build(kind: str, size: str, verbatim_vocab: int, subtitle_vocab: int, tokenizers: dict | None,
           **options) -> ZooModel:
    spec = asr_spec(kind, size, verbatim_vocab, subtitle_vocab, **options)
    return ZooModel(**spec.to_config(), meta={"sample_rate": 16000, "frame_shift_s": FRAME_SHIFT_S,
                                                 "tokenizers": tokenizers or {}})


def _register(kind: str, size: str, doc: str) -> None:
    def preset(verbatim_vocab: int = VERBATIM_VOCAB, subtitle_vocab: int = SUBTITLE_VOCAB,
               tokenizers: dict | None = None, spec_augment: bool = True, spec_augment_warmup: int = 0,
               inter_ctc: float = 0.0) -> ZooModel:
        return _build(kind, size, verbatim_vocab, subtitle_vocab, tokenizers, spec_augment=spec_augment,
                      spec_augment_warmup=spec_augment_warmup, inter_ctc=inter_ctc)

    preset.__name__ = preset.__qualname__ = f"asr_{kind}_{size}"
    preset.__doc__ = f"{doc} ({size}: {SIZES[size]}).\n\n    Args:\n        verbatim_vocab, subtitle_vocab: " \
                     "vocabulary sizes of the two heads.\n        tokenizers: {head: tokenizer.to_dict()} stored in config.json." \
                     "\n        spec_augment: SpecAugment (Park et al. 2019) on the log-mels while training." \
                     "\n        spec_augment_warmup: training steps before SpecAugment starts (SpecAugmentConfig)." \
                     "\n        inter_ctc: Intermediate CTC weight on the acoustic encoder's middle layer (0: off)."
    register_model(preset, task="asr", modality="audio")


_DOCS = {
    "verbatim": "Single-task verbatim ASR: Conformer + CTC",
    "subtitle": "Single-task subtitling: Conformer + attention decoder",
    "shared": "Shared Conformer encoder, separate verbatim (CTC) and subtitle (attention) decoders",
    "cascaded": "Cascaded encoders + separate decoders (the paper's best): a subtitle encoder stacked on the "
                "acoustic encoder; the subtitle decoder attends both",
    "ctc": "Encoder-only (OWSM-CTC style): verbatim CTC on the acoustic encoder, subtitle CTC on a cascaded stage",
    "hybrid": "Single-task verbatim ASR with ESPnet's hybrid CTC/attention head (Watanabe et al. 2017; ctc_weight 0.3): "
              "CTC and AR decoding of one model, compared in benchmarks/ctc_vs_ar.py",
    "maskctc": "The hybrid head plus Mask-CTC's masked LM (Higuchi et al. 2020; weight 0.3): CTC, Mask-CTC "
               "(non-autoregressive) and AR decoding of one model, compared in benchmarks/ctc_vs_ar.py",
}
for _kind, _doc in _DOCS.items():
    for _size in SIZES:
        _register(_kind, _size, _doc)
