"""Whisper in the zoo: a transformers WhisperForConditionalGeneration (tiny config, random weights) loaded
through the strict converter gives the same encoder output, the same logits and token-identical greedy
and beam-4 ``generate``; the log-mel frontend equals WhisperFeatureExtractor."""
from __future__ import annotations

import pytest
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from decoders.search import DecodingOptions
from encoders.whisper import LogMel, whisper_encoder
from recipes.asr_subtitle.convert_whisper import convert_hf_whisper, from_transformers_whisper, whisper
from zoo.hub import CheckpointError, import_object
from zoo.registry import get_pretrained_cfg, list_models

torch.set_num_threads(1)
EOS, START, MEL, FRAMES, NEW = 61, 60, 16, 40, 15


def tiny_whisper(seed: int = 0) -> WhisperForConditionalGeneration:
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=MEL, encoder_layers=2, decoder_layers=2, d_model=32,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48,
                        max_source_positions=FRAMES // 2, max_target_positions=40, pad_token_id=EOS, bos_token_id=62,
                        eos_token_id=EOS, decoder_start_token_id=START, begin_suppress_tokens=None)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # spread weights: varied tokens, EOS at different steps
        for name, p in model.named_parameters():
            if "encoder.embed_positions" in name:
                continue
            if p.dim() == 1:
                p.copy_((1.0 if "layer_norm.weight" in name else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)
        model.model.decoder.embed_tokens.weight[EOS] *= 2.5
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hf = tiny_whisper()
    path = tmp_path_factory.mktemp("whisper")
    hf.save_pretrained(path)
    return hf, from_transformers_whisper(path), path


def features(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, MEL, FRAMES, generator=torch.Generator().manual_seed(seed))


def test_encoder_and_logits_match_transformers(pair):
    hf, zoo, _ = pair
    x = features()
    tokens = torch.randint(0, 64, (6, 7), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = START
    with torch.no_grad():
        ref = hf(input_features=x, decoder_input_ids=tokens)
        enc = zoo.encoders["acoustic"](x)
        dec = zoo.decoders["text"]
        logits = dec.forward_tokens(tokens, dec.memory(enc))
    assert torch.allclose(enc.x, ref.encoder_last_hidden_state, atol=1e-4)
    assert torch.allclose(logits, ref.logits, atol=1e-4)


@pytest.mark.parametrize("beams,early,screen", [(1, True, False), (1, True, True), (4, True, False), (4, False, False)])
def test_generate_is_token_identical(pair, beams, early, screen):
    hf, zoo, _ = pair
    x = features()
    gc = GenerationConfig(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=EOS, max_new_tokens=NEW,
                          num_beams=beams, do_sample=False, length_penalty=1.0, early_stopping=early)
    with torch.no_grad():
        ref = hf.generate(x, generation_config=gc).tolist()
    opts = DecodingOptions(beam_size=beams, max_len=NEW, early_stopping=early, vocab_screen=screen)  # screen: int8
    ours = zoo.generate({"audio": x}, options=opts)
    for row, hyp in zip(ref, ours["text"]):
        while row and row[-1] == EOS:  # transformers pads finished rows with pad_token_id (= EOS here)
            row.pop()
        assert row == hyp.tokens
    assert len({len(h.tokens) for h in ours["text"]}) > 1  # rows ended at different steps


def test_log_mel_frontend_equals_feature_extractor():
    g = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(16000 * 2, generator=g), 0.3 * torch.randn(16000 * 5, generator=g)]
    ref = WhisperFeatureExtractor()([c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt")
    audio = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    ours, frames = LogMel()(audio, torch.tensor([len(c) for c in clips]))
    assert ours.shape == ref.input_features.shape == (2, 80, 3000)
    assert torch.allclose(ours, ref.input_features, atol=1e-4)
    assert frames.tolist() == [200, 500]
    enc = whisper_encoder(dim=32, heads=2, layers=1).eval()
    with torch.no_grad():
        assert torch.allclose(enc(audio).x, enc(ours).x, atol=1e-5)  # raw audio goes through the same frontend


def test_conversion_is_strict(pair):
    hf, zoo, _ = pair
    state = hf.state_dict()
    converted = convert_hf_whisper(state, zoo)
    assert set(converted) == set(zoo.state_dict())
    with pytest.raises(CheckpointError, match="unconverted"):
        convert_hf_whisper({**state, "model.encoder.extra.weight": torch.zeros(1)}, zoo)
    with pytest.raises(CheckpointError, match="lacks"):
        convert_hf_whisper({k: v for k, v in state.items() if "fc2" not in k}, zoo)
    untied = dict(state, **{"proj_out.weight": torch.randn_like(state["proj_out.weight"])})
    with pytest.raises(CheckpointError, match="ties"):
        convert_hf_whisper(untied, zoo)


def test_registered_preset_and_pretrained_cfg(pair):
    path = pair[2]
    assert "whisper" in list_models(task="asr", modality="audio")
    cfg = get_pretrained_cfg("whisper.tiny")
    assert cfg.hf_hub_id == "openai/whisper-tiny" and import_object(cfg.converter) is convert_hf_whisper
    tiny = whisper(n_mels=8, n_audio_ctx=10, n_audio_state=16, n_audio_head=2, n_audio_layer=1, n_vocab=30,
                   n_text_ctx=12, n_text_state=16, n_text_head=2, n_text_layer=1, bos_id=28, eos_id=29, pad_id=29)
    assert set(tiny.spec_encoders) == {"acoustic"} and tiny.spec_decoders["text"]["positions"] == "learned"
    with pytest.raises(CheckpointError, match="config.json"):
        from_transformers_whisper(path / "missing")
