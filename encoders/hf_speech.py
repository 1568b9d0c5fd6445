"""Pretrained speech encoders from transformers, wrapped to take raw 16 kHz audio and return Features.

Whisper's encoder (Radford et al., 2022, §2.2) reads a log-mel of exactly ``2 * max_source_positions``
frames (3000 = 30 s): the wrapper computes Whisper's log-mel in torch (equal to transformers'
``WhisperFeatureExtractor``), pads to 30 s and trims the output to each row's length. wav2vec 2.0 (Baevski
et al., 2020, §2), HuBERT (Hsu et al., 2021) and WavLM (Chen et al., 2022) read the waveform (optionally
zero-mean unit-variance normalised per utterance, like ``Wav2Vec2FeatureExtractor``). Lengths come from
the model's ``_get_feat_extract_output_lengths``.

Built from a config dict (random weights; offline) or from a *local* ``save_pretrained`` directory.
Remote code is never run.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from encoders.speech import check_audio
from zoo.contract import Encoder, Features, padding_mask
from zoo.registry import register_encoder


def _build_model(model_cls, config_cls, config: dict | None, pretrained: str | None):
    if config is not None and pretrained is not None:
        raise ValueError("pass either config (a dict, random weights) or pretrained (a local directory), "
                         "not both")
    if pretrained is None:
        return model_cls(config_cls(**(config or {})))
    path = Path(pretrained)
    if not path.is_dir():
        raise ValueError(f"pretrained='{pretrained}' is not a local directory; download it first, e.g. "
                         "huggingface_hub.snapshot_download(repo_id), and pass that path")
    return model_cls.from_pretrained(str(path), local_files_only=True)


def _config_dict(config) -> dict[str, Any]:
    out = config.to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures"):
        out.pop(key, None)
    return out


def _hidden(output, layers: list[int]) -> list[Tensor] | None:
    if not layers:
        return None
    states = output.hidden_states
    bad = [i for i in layers if not 1 <= i < len(states)]
    if bad:
        raise ValueError(f"intermediate_layers {bad} are outside 1..{len(states) - 1} "
                         "(1-based layer numbers)")
    return [states[i] for i in layers]


class HFWav2Vec2Encoder(Encoder):
    """Wav2Vec2Model / HubertModel / WavLMModel over raw audio (B, samples) at ``sample_rate``."""

    def __init__(self, model, normalize: bool = True, attention_mask: bool | None = None,
                 intermediate_layers: list[int] | None = None, freeze_feature_encoder: bool = False,
                 sample_rate: int = 16000, name: str = "hf_wav2vec2"):
        super().__init__()
        self.model, self.normalize, self.name, self.sample_rate = model, normalize, name, sample_rate
        cfg = model.config
        # models with a group-norm feature encoder (e.g. wav2vec2-base) were trained without a mask
        self.use_mask = cfg.feat_extract_norm == "layer" if attention_mask is None else attention_mask
        self.intermediate_layers = sorted(set(intermediate_layers or []))
        self.out_dim = cfg.output_hidden_size if getattr(cfg, "add_adapter", False) else cfg.hidden_size
        stride = math.prod(cfg.conv_stride)
        if getattr(cfg, "add_adapter", False):
            stride *= cfg.adapter_stride ** cfg.num_adapter_layers
        self.frame_shift_s = stride / sample_rate
        need = 1
        for k, s in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride))):
            need = (need - 1) * s + k
        self.min_samples = need
        if freeze_feature_encoder:
            model.freeze_feature_encoder()

    def output_lengths(self, samples: Tensor) -> Tensor:
        return self.model._get_feat_extract_output_lengths(samples).long()

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        lengths = check_audio(inputs, lengths, self.min_samples, self.name, self.sample_rate)
        pad = padding_mask(lengths, inputs.shape[1])
        x = inputs.masked_fill(pad, 0.0)
        if self.normalize:  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm over each row's valid samples
            n = lengths.clamp_min(1)[:, None].to(x.dtype)
            mean = x.sum(1, keepdim=True) / n
            var = ((x - mean).masked_fill(pad, 0.0) ** 2).sum(1, keepdim=True) / n
            x = ((x - mean) / (var + 1e-7).sqrt()).masked_fill(pad, 0.0)
        mask = (~pad).long() if self.use_mask else None
        out = self.model(x, attention_mask=mask, output_hidden_states=bool(self.intermediate_layers))
        frames = self.output_lengths(lengths)
        return Features(out.last_hidden_state, frames, intermediates=_hidden(out, self.intermediate_layers))

    def config_dict(self) -> dict[str, Any]:
        """The transformers config as a JSON dict (to rebuild this encoder with random weights)."""
        return _config_dict(self.model.config)


class HFWhisperEncoder(Encoder):
    """transformers' WhisperEncoder over raw 16 kHz audio of at most ``2 * max_source_positions * hop``
    samples (30 s for the released models); the output is trimmed to the valid frames of each row."""

    def __init__(self, encoder, intermediate_layers: list[int] | None = None, hop: int = 160,
                 n_fft: int = 400, sample_rate: int = 16000):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        cfg = encoder.config
        self.encoder, self.hop, self.n_fft, self.sample_rate = encoder, hop, n_fft, sample_rate
        self.n_frames = 2 * cfg.max_source_positions
        self.n_samples = self.n_frames * hop
        self.intermediate_layers = sorted(set(intermediate_layers or []))
        fe = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, sampling_rate=sample_rate, hop_length=hop,
                                     n_fft=n_fft)
        filters = torch.from_numpy(fe.mel_filters).float().T.contiguous()  # (n_mels, n_fft // 2 + 1)
        self.register_buffer("mel_filters", filters, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.out_dim, self.frame_shift_s = cfg.d_model, 2 * hop / sample_rate

    def log_mel(self, audio: Tensor) -> Tensor:
        """(B, n_samples) -> (B, n_mels, n_frames), as WhisperFeatureExtractor (per-row 8-decade floor)."""
        with torch.autocast(audio.device.type, enabled=False):
            stft = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, return_complex=True)
            power = stft[..., :-1].abs() ** 2
            log_spec = (self.mel_filters @ power).clamp_min(1e-10).log10()
            floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
            return (torch.maximum(log_spec, floor) + 4.0) / 4.0

    def output_lengths(self, samples: Tensor) -> Tensor:
        # mel frames whose centre lies inside the audio: ceil(samples / hop)
        mel_frames = torch.div(samples + self.hop - 1, self.hop, rounding_mode="floor")
        return self.encoder._get_feat_extract_output_lengths(mel_frames).long()

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        lengths = check_audio(inputs, lengths, 1, "hf_whisper_encoder", self.sample_rate)
        if inputs.shape[1] > self.n_samples:
            longest = int(lengths.max())
            if longest > self.n_samples:
                raise ValueError(f"hf_whisper_encoder takes at most {self.n_samples} samples "
                                 f"({self.n_samples / self.sample_rate:.1f} s) per clip, got {longest}; "
                                 "split long audio into chunks of at most that length")
            inputs = inputs[:, : self.n_samples]
        audio = inputs.masked_fill(padding_mask(lengths, inputs.shape[1]), 0.0)
        audio = torch.nn.functional.pad(audio, (0, self.n_samples - audio.shape[1]))
        out = self.encoder(self.log_mel(audio).to(next(self.encoder.parameters()).dtype),
                           output_hidden_states=bool(self.intermediate_layers))
        frames = self.output_lengths(lengths)
        keep = int(frames.max())
        inter = _hidden(out, self.intermediate_layers)
        return Features(out.last_hidden_state[:, :keep], frames,
                        intermediates=[h[:, :keep] for h in inter] if inter else None)

    def config_dict(self) -> dict[str, Any]:
        return _config_dict(self.encoder.config)


@register_encoder(modality="audio")
def hf_whisper_encoder(config: dict | None = None, pretrained: str | None = None,
                       intermediate_layers: list[int] | None = None) -> HFWhisperEncoder:
    """transformers WhisperEncoder on raw audio; ``config``: a WhisperConfig dict, or ``pretrained``: a local
    Whisper directory (its encoder is kept)."""
    from transformers import WhisperConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if pretrained is not None:
        return HFWhisperEncoder(_build_model(WhisperModel, WhisperConfig, config, pretrained).encoder,
                                intermediate_layers)
    return HFWhisperEncoder(_build_model(WhisperEncoder, WhisperConfig, config, None), intermediate_layers)


def _wav2vec2_family(model_name: str, config_name: str, name: str):
    def build(config: dict | None = None, pretrained: str | None = None, normalize: bool = True,
              attention_mask: bool | None = None, intermediate_layers: list[int] | None = None,
              freeze_feature_encoder: bool = False, sample_rate: int = 16000) -> HFWav2Vec2Encoder:
        import transformers

        classes = getattr(transformers, model_name), getattr(transformers, config_name)
        model = _build_model(*classes, config, pretrained)
        return HFWav2Vec2Encoder(model, normalize, attention_mask, intermediate_layers,
                                 freeze_feature_encoder, sample_rate, name)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"transformers {model_name} on raw audio; ``config``: a {config_name} dict (random "
                     "weights) or ``pretrained``: a local directory. ``normalize``: per-utterance zero mean, "
                     "unit variance; ``attention_mask``: None = as the feature extractor would (only for "
                     "layer-norm models).")
    return register_encoder(build, modality="audio")


hf_wav2vec2 = _wav2vec2_family("Wav2Vec2Model", "Wav2Vec2Config", "hf_wav2vec2")
hf_hubert = _wav2vec2_family("HubertModel", "HubertConfig", "hf_hubert")
hf_wavlm = _wav2vec2_family("WavLMModel", "WavLMConfig", "hf_wavlm")
