"""transformers Wav2Vec2ForCTC -> zoo wav2vec2_ctc: equal logits and greedy tokens, strict key mapping, and a
save/load round trip (tiny configs, random weights, offline)."""
from __future__ import annotations

import pytest
import torch

from recipes.asr_subtitle import convert_wav2vec2 as cw
from zoo.graph import ZooModel
from zoo.hub import CheckpointError
from zoo.registry import create_model, list_models

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, vocab_size=12)



def hf_ctc(**overrides):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    return Wav2Vec2ForCTC(Wav2Vec2Config(**{**TINY, **overrides})).eval()


def zoo_logits(model: ZooModel, audio, lengths=None):
    batch = {"audio": audio} if lengths is None else {"audio": audio, "audio_lengths": lengths}
    feats = model.encode(batch)["acoustic"]
    return model.decoders["ctc"].logits(feats), feats.lengths


def collapse(ids: list[int], blank: int = 0) -> list[int]:
    return [t for i, t in enumerate(ids) if t != blank and (i == 0 or ids[i - 1] != t)]


@torch.no_grad()
def test_converted_logits_equal_transformers(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    hf = hf_ctc()
    hf.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path)  # raw waveform in, on both sides
    model = cw.from_transformers_wav2vec2_ctc(tmp_path)
    assert model.encoders["acoustic"].normalize is False
    audio = torch.randn(2, 6000) * 0.2
    ref = hf(audio).logits
    ours, lengths = zoo_logits(model, audio)
    assert ours.shape == ref.shape and lengths.tolist() == [ref.shape[1]] * 2
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    hyps = model.generate({"audio": audio})["ctc"]
    assert [h.tokens for h in hyps] == [collapse(r.argmax(-1).tolist()) for r in ref]
    assert hyps[0].timestamps is not None and model.decoders["ctc"].frame_shift_s == pytest.approx(80 / 16000)


@torch.no_grad()
def test_layer_norm_model_with_padding_matches_feature_extractor_pipeline(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    hf = hf_ctc(feat_extract_norm="layer", do_stable_layer_norm=True, pad_token_id=3)
    hf.save_pretrained(tmp_path)
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    fe.save_pretrained(tmp_path)
    model = cw.from_transformers_wav2vec2_ctc(tmp_path)
    assert model.decoders["ctc"].blank == 3  # Wav2Vec2ForCTC's blank is its pad token
    audio, lengths = torch.randn(2, 6000) * 0.2, torch.tensor([6000, 4100])
    rows = [audio[0].numpy(), audio[1, :4100].numpy()]
    inputs = fe(rows, sampling_rate=16000, padding=True, return_tensors="pt")
    ref = hf(inputs.input_values, attention_mask=inputs.attention_mask).logits
    ours, frames = zoo_logits(model, audio, lengths)
    assert frames.tolist() == hf.wav2vec2._get_feat_extract_output_lengths(lengths).tolist()
    for b, n in enumerate(frames.tolist()):
        torch.testing.assert_close(ours[b, :n], ref[b, :n], atol=1e-5, rtol=0)


@torch.no_grad()
def test_conversion_is_strict_and_accepts_legacy_weight_norm_names():
    hf = hf_ctc()
    model = create_model("wav2vec2_ctc", config=TINY, normalize=False)
    assert "wav2vec2_ctc" in list_models(task="asr", modality="audio")
    state = hf.state_dict()
    old = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    legacy = {}
    for k, v in state.items():
        for new_name, old_name in old.items():
            k = k.replace(new_name, old_name)
        legacy[k] = v
    assert legacy.keys() != state.keys()
    from zoo.hub import load_weights

    load_weights(model, cw.convert_wav2vec2_ctc(legacy, model), strict=True)
    audio = torch.randn(1, 5000)
    torch.testing.assert_close(zoo_logits(model.eval(), audio)[0], hf(audio).logits, atol=1e-5, rtol=0)
    with pytest.raises(CheckpointError, match="quantizer.codevectors"):
        cw.convert_wav2vec2_ctc({**state, "quantizer.codevectors": torch.zeros(1)}, model)
    incomplete = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    with pytest.raises(CheckpointError, match="missing keys.*decoders.ctc.proj"):
        load_weights(model, cw.convert_wav2vec2_ctc(incomplete, model), strict=True)
    wrong_vocab = create_model("wav2vec2_ctc", config=TINY, vocab_size=20)
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(wrong_vocab, cw.convert_wav2vec2_ctc(state, wrong_vocab), strict=True)


@torch.no_grad()
def test_save_and_reload_the_zoo_model(tmp_path):
    hf = hf_ctc()
    model = cw.from_transformers_wav2vec2_ctc(hf, normalize=False)
    model.save_pretrained(tmp_path / "zoo")
    again = ZooModel.from_pretrained(str(tmp_path / "zoo"))
    audio = torch.randn(1, 5000)
    torch.testing.assert_close(zoo_logits(again, audio)[0], hf(audio).logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="local directory"):
        cw.from_transformers_wav2vec2_ctc("facebook/wav2vec2-base-960h")
