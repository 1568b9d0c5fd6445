"""Speech encoders: exact lengths, padding invariance, input errors, SpecAugment bounds, relative attention
against its formula, a Conformer + CTC that learns, and the transformers wrappers (offline, tiny configs)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from encoders.conformer import SelfAttention
from encoders.speech import SpecAugment, SpecAugmentConfig
from zoo.graph import ModelSpec, Node
from zoo.registry import create_encoder



TINY = dict(dim=32, layers=2, heads=4, ffn=64, n_mels=40, dropout=0.0)


def tiny(name: str, **kw):
    torch.manual_seed(0)
    extra = dict(kernel=7, subsampling_channels=8) if name == "conformer_speech" else {}
    return create_encoder(name, **{**TINY, **extra, **kw})


def subsampled(frames: int, factor: int) -> int:
    layers = {4: [(3, 2), (3, 2)], 6: [(3, 2), (5, 3)], 8: [(3, 2)] * 3}[factor]
    for k, s in layers:
        frames = (frames - k) // s + 1
    return frames


@pytest.mark.parametrize("name, kw", [
    ("conformer_speech", dict(subsampling=4)),
    ("conformer_speech", dict(subsampling=6, conv_norm="layer", pos="abs")),
    ("transformer_speech", dict(subsampling=8)),
    ("transformer_speech", dict(subsampling=4, pos="rel")),
])
def test_lengths_are_exact_and_padding_does_not_leak(name, kw):
    enc = tiny(name, **kw).eval()
    lengths = torch.tensor([16000, 11111, 5003])
    audio = torch.randn(3, 16000) * 0.1
    audio[1, 11111:] = 1.0  # junk in the padding must not matter
    with torch.no_grad():
        out = enc(audio, lengths)
        expect = [subsampled(n // 160 + 1, kw["subsampling"]) for n in lengths.tolist()]
        assert out.lengths.tolist() == expect == enc.output_lengths(lengths).tolist()
        assert out.x.shape[1] == max(expect)
        assert enc.frame_shift_s == pytest.approx(0.01 * kw["subsampling"])
        for i, n in enumerate(lengths.tolist()):
            alone = enc(audio[i : i + 1, :n])
            assert alone.x.shape[1] == expect[i]
            torch.testing.assert_close(alone.x[0], out.x[i, : expect[i]], atol=2e-5, rtol=1e-4)


def test_bad_audio_raises_clear_errors():
    enc = tiny("conformer_speech").eval()
    with pytest.raises(ValueError, match=r"too short.*row 1.*at least 960 samples"):
        enc(torch.randn(2, 4000), torch.tensor([4000, 959]))
    enc(torch.randn(1, 960))  # the shortest audio that gives one frame
    bad = torch.randn(2, 4000)
    bad[1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[1\] contain NaN"):
        enc(bad)
    with pytest.raises(ValueError, match=r"average the channels"):
        enc(torch.randn(2, 2, 4000))
    with pytest.raises(ValueError, match=r"audio\[None\]"):
        enc(torch.randn(4000))
    with pytest.raises(TypeError, match="32768"):
        enc(torch.zeros(1, 4000, dtype=torch.int16))


def test_spec_augment_masks_only_in_training_and_within_bounds():
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=5, time_masks=3, time_width=8, time_ratio=0.2)
    aug = SpecAugment(cfg)
    x = torch.ones(6, 50, 20)
    lengths = torch.tensor([50, 40, 30, 20, 10, 5])
    assert torch.equal(aug.eval()(x, lengths), x)
    aug.train()
    torch.manual_seed(0)
    masked_any = 0
    for _ in range(50):
        y = aug(x, lengths)
        for row, n in zip(y, lengths.tolist()):
            assert (row[n:] == 1).all()  # padded frames are never touched
            zero = row[:n] == 0
            bins, frames = zero.all(0), zero.all(1)  # fully masked frequency bins / frames
            # every masked cell lies in a masked band or span
            assert torch.equal(zero, bins[None, :] | frames[:, None])
            assert int(bins.sum()) <= cfg.freq_masks * cfg.freq_width or frames.all()
            if not bins.all():
                assert int(frames.sum()) <= cfg.time_masks * min(cfg.time_width, int(cfg.time_ratio * n))
            masked_any += int(zero.any())
    assert masked_any > 100  # it does mask


def test_spec_augment_warmup_passes_the_first_training_steps_and_resumes_its_count():
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=5, time_masks=0, warmup_steps=3)).train()
    x, lengths = torch.ones(4, 30, 20), torch.full((4,), 30)
    torch.manual_seed(0)
    assert all(torch.equal(aug(x, lengths), x) for _ in range(3))
    aug.eval()(x, lengths)  # evaluation does not count
    assert int(aug.seen) == 3
    assert not torch.equal(aug.train()(x, lengths), x)  # the 4th training forward masks
    resumed = SpecAugment(aug.cfg)
    resumed.load_state_dict(aug.state_dict())  # the count travels with the checkpoint
    assert int(resumed.seen) == 4 and not torch.equal(resumed.train()(x, lengths), x)
    assert "seen" not in SpecAugment(SpecAugmentConfig()).state_dict()  # no warmup: no new state


def test_time_warp_keeps_lengths_and_padding():
    aug = SpecAugment(SpecAugmentConfig(freq_masks=0, time_masks=0, time_warp=5)).train()
    torch.manual_seed(0)
    x = torch.randn(2, 40, 8)
    lengths = torch.tensor([40, 25])
    y = aug(x, lengths)
    assert y.shape == x.shape and torch.equal(y[1, 25:], x[1, 25:]) and not torch.equal(y, x)
    torch.testing.assert_close(y[:, 0], x[:, 0])  # the ends stay anchored
    torch.testing.assert_close(y[0, 39], x[0, 39])


def test_relative_attention_matches_transformer_xl_formula():
    torch.manual_seed(0)
    d, h, t = 16, 2, 7
    attn = SelfAttention(d, h, relative=True).eval()
    x = torch.randn(2, t, d)
    pad = torch.tensor([[False] * t, [False] * 5 + [True] * 2])
    from encoders.conformer import relative_sinusoids

    got = attn(x, pad, relative_sinusoids(t, d))
    q, k, v = attn.qkv(x).chunk(3, -1)
    split = lambda z: z.view(2, t, h, d // h)
    q, k, v = split(q), split(k), split(v)
    inv = torch.tensor([10000 ** (-2 * m / d) for m in range(d // 2)])

    def r(dist):  # sinusoid of relative position i - j, interleaved sin/cos
        return torch.stack([torch.sin(dist * inv), torch.cos(dist * inv)], -1).flatten()

    scores = torch.zeros(2, h, t, t)
    for i in range(t):
        for j in range(t):
            p = attn.pos_proj(r(float(i - j))).view(h, d // h)
            content = ((q[:, i] + attn.pos_bias_u) * k[:, j]).sum(-1)
            scores[:, :, i, j] = content + ((q[:, i] + attn.pos_bias_v) * p).sum(-1)
    scores = (scores / math.sqrt(d // h)).masked_fill(pad[:, None, None, :], float("-inf"))
    ref = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(2, t, d)
    torch.testing.assert_close(got, attn.out(ref), atol=1e-5, rtol=1e-5)


def test_intermediate_layers_and_cascade_stack():
    enc = tiny("conformer_speech", layers=3, intermediate_layers=[1, 3]).eval()
    audio, lengths = torch.randn(2, 8000), torch.tensor([8000, 6000])
    with torch.no_grad():
        out = enc(audio, lengths)
    assert len(out.intermediates) == 2 and torch.equal(out.intermediates[1], out.x)
    assert not torch.allclose(out.intermediates[0], out.x)
    with pytest.raises(ValueError, match="outside 1..3"):
        tiny("conformer_speech", layers=3, intermediate_layers=[4])
    stack = create_encoder("conformer_stack", in_dim=32, dim=24, layers=2, heads=2, ffn=48, kernel=5,
                           dropout=0.0).eval()
    with torch.no_grad():
        upper = stack(out.x, out.lengths)
        alone = stack(out.x[1:, : int(out.lengths[1])])
    assert upper.x.shape == (2, out.x.shape[1], 24) and torch.equal(upper.lengths, out.lengths)
    torch.testing.assert_close(alone.x[0], upper.x[1, : int(out.lengths[1])], atol=2e-5, rtol=1e-4)


def test_global_normalisation_uses_estimated_stats():
    enc = tiny("conformer_speech", norm="global")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 8000, generator=g) * 0.3, torch.tensor([8000, 5000])) for _ in range(3)]
    enc.frontend.estimate_global_stats(batches)
    feats = [enc.frontend(a, n) for a, n in batches]
    valid = torch.cat([x[i, : int(f[i])] for x, f in feats for i in range(2)])
    torch.testing.assert_close(valid.mean(0), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(40), atol=1e-3, rtol=0)
    assert "frontend.mean" in enc.state_dict()  # saved with the model


# --- a Conformer + CTC learns a trivially learnable task -----------------------------------------
FREQS = {1: 400.0, 2: 1100.0, 3: 2600.0}


def tone_batch(n: int, g: torch.Generator):
    """Each token is a 0.1 s tone of its own frequency, separated by 0.05 s of silence."""
    audio, tokens = [], []
    for _ in range(n):
        toks = torch.randint(1, 4, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        t = torch.arange(1600) / 16000
        parts = [torch.zeros(800)]
        for k in toks:
            parts += [0.5 * torch.sin(2 * math.pi * FREQS[k] * t), torch.zeros(800)]
        audio.append(torch.cat(parts))
        tokens.append(toks)
    lengths = torch.tensor([len(a) for a in audio])
    padded = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
    padded = padded + 0.01 * torch.randn(padded.shape, generator=g)
    target = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in tokens], batch_first=True)
    batch = dict(audio=padded, audio_lengths=lengths,
                 targets=dict(ctc=dict(tokens=target, lengths=torch.tensor([len(t) for t in tokens]))))
    return batch, tokens


def test_small_conformer_ctc_learns_tone_sequences():
    torch.manual_seed(0)
    model = ModelSpec(
        encoders={"acoustic": Node("conformer_speech", input="audio", dim=32, layers=2, heads=2, ffn=64,
                                   kernel=7, n_mels=32, subsampling_channels=8, dropout=0.0)},
        decoders={"ctc": Node("ctc", source="acoustic", in_dim=32, vocab_size=4, frame_shift_s=0.04)},
    ).build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(55):
        batch, _ = tone_batch(16, g)
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.15 * np.mean(losses[:3])
    model.eval()
    batch, tokens = tone_batch(24, torch.Generator().manual_seed(99))
    hyps = model.generate(batch)["ctc"]
    assert sum(h.tokens == t for h, t in zip(hyps, tokens)) >= 21
    # timestamps land inside the tones: token i's tone starts at 0.05 + 0.15 * i s
    good = [h for h, t in zip(hyps, tokens) if h.tokens == t]
    for h in good:
        for i, (start, end) in enumerate(h.timestamps):
            assert 0.05 + 0.15 * i - 0.12 <= start < end <= 0.05 + 0.15 * i + 0.1 + 0.12


# --- transformers wrappers ----------------------------------------------------------------------
W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
           conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
           num_conv_pos_embedding_groups=2,
           feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=12)
WHISPER = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
               decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=100,
               vocab_size=100, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)


@pytest.mark.parametrize("name, model_name", [("hf_wav2vec2", "Wav2Vec2Model"), ("hf_hubert", "HubertModel"),
                                              ("hf_wavlm", "WavLMModel")])
def test_hf_wav2vec2_family_builds_offline_and_matches_transformers(name, model_name):
    import transformers

    torch.manual_seed(0)
    enc = create_encoder(name, config=W2V, intermediate_layers=[1]).eval()
    assert isinstance(enc.model, getattr(transformers, model_name)) and enc.frame_shift_s == 0.005
    audio, lengths = torch.randn(2, 4000), torch.tensor([4000, 2500])
    with torch.no_grad():
        out = enc(audio, lengths)
        expect = enc.model._get_feat_extract_output_lengths(lengths)
        assert out.lengths.tolist() == expect.tolist() and out.dim == 32 and len(out.intermediates) == 1
        x = audio[1:, :2500]
        ref = enc.model((x - x.mean()) / (x.var(unbiased=False) + 1e-7).sqrt()).last_hidden_state
        torch.testing.assert_close(out.x[1:, : int(expect[1])], ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 85 samples"):
        enc(torch.randn(1, 84))


def test_hf_whisper_encoder_equals_transformers_on_its_features(tmp_path):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    enc = create_encoder("hf_whisper_encoder", config=WHISPER).eval()
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=2)  # 2 s = 2 * max_source_positions frames
    audio, lengths = torch.randn(2, 20000) * 0.1, torch.tensor([20000, 12345])
    rows = [audio[0].numpy(), audio[1, :12345].numpy()]
    feats = fe(rows, sampling_rate=16000, return_tensors="pt").input_features
    assert feats.shape == (2, 80, 200)
    with torch.no_grad():
        out = enc(audio, lengths)
        ref = enc.encoder(feats).last_hidden_state
    assert out.lengths.tolist() == [63, 39] and enc.frame_shift_s == 0.02  # ceil(n / 160) mel frames, halved
    torch.testing.assert_close(out.x, ref[:, :63], atol=1e-5, rtol=1e-5)
    # from a local pretrained directory (a full Whisper model: its encoder is used)
    full = WhisperModel(WhisperConfig(**WHISPER)).eval()
    full.save_pretrained(tmp_path)
    loaded = create_encoder("hf_whisper_encoder", pretrained=str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio, lengths).x, full.encoder(feats).last_hidden_state[:, :63],
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at most 32000 samples"):
        enc(torch.randn(1, 40000))
    with pytest.raises(ValueError, match="not a local directory"):
        create_encoder("hf_whisper_encoder", pretrained="openai/whisper-tiny")
