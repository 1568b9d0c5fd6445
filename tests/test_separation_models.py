"""Conv-TasNet / DPRNN separation: paper size, torchaudio equivalence, causality, padding, FiLM, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from decoders.masknet import create_masker, depthwise_conv1d, list_maskers
from decoders.separation import SeparationOptions
from encoders.filterbank import STFTSynthesis
from recipes.separation.convert import from_torchaudio, torchaudio_hparams
from recipes.separation.presets import tasnet_spec
from zoo.graph import ModelSpec, Node, ZooModel
from zoo.hub import CheckpointError, load_pretrained_cfg
from zoo.losses import si_snr
from zoo.registry import PretrainedCfg, create_model

TINY = {"N": 32, "B": 16, "H": 32, "Sc": 16, "X": 4, "R": 2}  # small enough for CPU tests
TA_TINY = {
    "enc_num_feats": 128,
    "msk_num_feats": 64,
    "msk_num_hidden_feats": 128,
    "msk_num_layers": 6,
    "msk_num_stacks": 2,
}


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin-wait badly
    yield
    torch.set_num_threads(before)


def _separate(model: ZooModel, audio: torch.Tensor, lengths=None) -> torch.Tensor:
    batch = {"audio": audio} if lengths is None else {"audio": audio, "audio_lengths": lengths}
    return model.generate(batch, options=SeparationOptions(num_samples=audio.shape[-1]))["separation"]


def test_paper_preset_has_about_5_1M_parameters():
    model = create_model("conv_tasnet")
    count = sum(p.numel() for p in model.parameters())
    print(f"conv_tasnet (N=512 L=16 B=128 H=512 Sc=128 P=3 X=8 R=3): {count:,} parameters")
    assert abs(count - 5.1e6) / 5.1e6 < 0.03
    assert count == sum(p.numel() for p in torchaudio.models.ConvTasNet().parameters())
    tiny = sum(p.numel() for p in create_model("conv_tasnet_tiny").parameters())
    assert abs(tiny - 0.33e6) / 0.33e6 < 0.03
    assert model.meta["sample_rate"] == 8000 and model.decoders["separation"].masker.receptive_field == 1531


@pytest.mark.parametrize("config", ["tiny", "paper"])
@pytest.mark.parametrize("mask_act", ["sigmoid", "relu"])
def test_torchaudio_conversion_matches(config, mask_act):
    torch.manual_seed(0)
    ta = torchaudio.models.ConvTasNet(**(TA_TINY if config == "tiny" else {}), msk_activate=mask_act).eval()
    ours = from_torchaudio(ta)
    assert torchaudio_hparams(ta)["mask_act"] == mask_act
    for samples in (2000, 2003) if config == "tiny" else (1003,):  # aligned and unaligned to the hop
        x = torch.randn(2, samples)
        with torch.inference_mode():
            expected = ta(x[:, None])
        got = _separate(ours, x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # float32 rounding only
    # in float64 the two agree to rounding of the same arithmetic, also on the autograd path
    ta, ours, x = ta.double(), ours.double(), x.double()
    with torch.inference_mode():
        expected = ta(x[:, None])
    torch.testing.assert_close(_separate(ours, x), expected, atol=1e-9, rtol=0)
    with torch.enable_grad():
        got = ours.decoders["separation"].separate(ours.encoders["filterbank"](x))[..., : x.shape[-1]]
    torch.testing.assert_close(got.detach(), expected, atol=1e-9, rtol=0)


def test_converter_as_pretrained_cfg(tmp_path):
    torch.manual_seed(1)
    ta = torchaudio.models.ConvTasNet(**TA_TINY).eval()
    torch.save(ta.state_dict(), tmp_path / "model.pt")
    model = create_model("conv_tasnet_tiny", Sc=64, encoder_activation="none").eval()
    cfg = PretrainedCfg(
        local_dir=str(tmp_path),
        filename="model.pt",
        converter="recipes.separation.convert:convert_torchaudio_convtasnet",
    )
    load_pretrained_cfg(model, cfg)
    x = torch.randn(1, 1600)
    with torch.inference_mode():
        torch.testing.assert_close(_separate(model, x), ta(x[:, None]), atol=1e-5, rtol=0)
    wrong = create_model("conv_tasnet_tiny", H=64, encoder_activation="none")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_pretrained_cfg(wrong, cfg)


def test_depthwise_shift_conv_equals_conv1d():
    g = torch.Generator().manual_seed(0)
    for P, d, causal in [
        (3, 1, False),
        (3, 8, False),
        (5, 2, False),
        (3, 4, True),
        (2, 3, True),
        (3, 64, False),
    ]:
        x, w, b = (
            torch.randn(2, 6, 40, generator=g),
            torch.randn(6, 1, P, generator=g),
            torch.randn(6, generator=g),
        )
        left = (P - 1) * d if causal else (P - 1) * d // 2
        expected = F.conv1d(F.pad(x, (left, (P - 1) * d - left)), w, b, dilation=d, groups=6)
        torch.testing.assert_close(depthwise_conv1d(x, w, b, d, left), expected, atol=1e-5, rtol=0)


def test_causal_output_ignores_the_future():
    torch.manual_seed(0)
    L, t0 = 16, 1200
    x = torch.randn(1, 2000)
    future = x.clone()
    future[:, t0:] = torch.randn(1, 2000 - t0)
    causal = create_model("conv_tasnet_causal", **TINY).eval()
    a, b = _separate(causal, x), _separate(causal, future)
    # a sample depends on the frames that overlap it: at most L - 1 samples of look-ahead
    torch.testing.assert_close(a[..., : t0 - L], b[..., : t0 - L], atol=1e-6, rtol=0)
    assert (a[..., t0:] - b[..., t0:]).abs().max() > 1e-3
    noncausal = create_model("conv_tasnet_tiny", **TINY).eval()  # the same check fails without causality
    a, b = _separate(noncausal, x), _separate(noncausal, future)
    assert (a[..., : t0 - L] - b[..., : t0 - L]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["conv_tasnet_tiny", "conv_tasnet_causal"])
def test_padded_batch_equals_single_rows(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY).eval()
    lengths = torch.tensor([1600, 1100])
    audio = torch.randn(2, 1600)
    audio[1, 1100:] = 0.0
    batched = _separate(model, audio, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = _separate(model, audio[i : i + 1, :n])
        torch.testing.assert_close(batched[i : i + 1, :, :n], alone, atol=1e-5, rtol=0)


def test_filterbank_input_errors():
    model = create_model("conv_tasnet_tiny", **TINY)
    with pytest.raises(ValueError, match="shorter than one analysis window of 16"):
        model.generate({"audio": torch.randn(1, 10)})
    with pytest.raises(ValueError, match="Down-mix"):
        model.generate({"audio": torch.randn(1, 2, 400)})
    with pytest.raises(TypeError, match="float audio"):
        model.generate({"audio": torch.zeros(1, 400, dtype=torch.long)})
    with pytest.raises(ValueError, match="build the model with n_src"):
        model({"audio": torch.randn(1, 400), "targets": {"separation": {"sources": torch.randn(1, 3, 400)}}})
    with pytest.raises(ValueError, match="causal TCN needs norm='cLN'"):
        create_masker("tcn", N=8, causal=True, norm="gLN")
    assert list_maskers() == ["dprnn", "tcn"]


def test_softmax_masks_sum_to_the_mixture_reconstruction():
    """With softmax masks over sources the estimates add up to decoder(encoder(mixture)) (linear decoder)."""
    torch.manual_seed(0)
    model = create_model("conv_tasnet_tiny", **TINY, mask_act="softmax").eval()
    x = torch.randn(2, 800)
    feats = model.encoders["filterbank"](x)
    dec = model.decoders["separation"]
    with torch.no_grad():
        recon = dec.decoder(feats.x.transpose(1, 2))[:, 0, :800]
        torch.testing.assert_close(_separate(model, x).sum(1), recon, atol=1e-5, rtol=0)


def test_stft_filterbank_and_istft_decoder():
    spec = ModelSpec(
        encoders={
            "stft": Node("stft_filterbank", input="audio", n_fft=128, hop_length=32, features="complex")
        },
        decoders={
            "separation": Node(
                "mask_decoder",
                source="stft",
                in_dim=130,
                synthesis="istft",
                n_fft=128,
                hop_length=32,
                masker="tcn",
                masker_kwargs={"B": 16, "H": 32, "Sc": 16, "X": 3, "R": 1},
            )
        },
    )
    model = spec.build()
    x = torch.randn(2, 1000)
    feats = model.encoders["stft"](x)
    assert feats.x.shape == (2, 1000 // 32 + 1, 130) and feats.spatial.shape == (2, 2, 65, 1000 // 32 + 1)
    # the synthesis inverts the analysis (perfect reconstruction of an unmasked spectrum)
    complex_spec = torch.view_as_complex(feats.spatial.permute(0, 2, 3, 1).contiguous())
    recon = STFTSynthesis(128, 32, 128)(complex_spec, torch.hann_window(128))
    torch.testing.assert_close(recon[:, :992], x[:, :992], atol=1e-5, rtol=0)
    out = model({"audio": x, "targets": {"separation": {"sources": torch.randn(2, 2, 1000)}}})
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.outputs["separation"].extras["estimates"].shape == (2, 2, 1000)


def test_film_condition_hook_and_query_encoder():
    torch.manual_seed(0)
    model = create_model("conv_tasnet_tiny", **TINY, condition_dim=6).eval()
    x, q = torch.randn(2, 800), torch.randn(2, 6)
    plain = _separate(model, x)
    dec = model.decoders["separation"]
    feats = model.encoders["filterbank"](x)
    torch.testing.assert_close(dec.decode(feats, SeparationOptions(800, q)), plain)  # identity at init
    torch.nn.init.normal_(dec.masker.film.proj.weight, std=0.5)
    conditioned = dec.decode(feats, SeparationOptions(800, q))
    assert (conditioned - plain).abs().max() > 1e-3
    other = dec.decode(feats, SeparationOptions(800, q.flip(0)))
    assert (other - conditioned).abs().max() > 1e-3
    # the same condition through a second (query) encoder, mean-pooled over its steps
    spec = tasnet_spec("tcn", {"B": 16, "H": 32, "Sc": 16, "X": 2, "R": 1}, N=32, condition_dim=6)
    spec.encoders["query_net"] = Node("mlp_encoder", input="query", in_dim=6, dim=6, layers=1)
    spec.decoders["separation"].source = ["filterbank", "query_net"]
    two = spec.build()
    loss = two(
        {
            "audio": x,
            "query": torch.randn(2, 3, 6),
            "targets": {"separation": {"sources": torch.randn(2, 2, 800)}},
        }
    ).loss
    loss.backward()
    assert two.encoders["query_net"].net[0].weight.grad is not None
    with pytest.raises(ValueError, match="built without condition_dim"):
        create_model("conv_tasnet_tiny", **TINY).decoders["separation"].decode(
            feats, SeparationOptions(800, q)
        )


def test_mixit_head_trains_on_mixtures_only():
    torch.manual_seed(0)
    model = create_model("conv_tasnet_tiny", **TINY, n_src=4)
    mixtures = torch.randn(2, 2, 800)
    out = model({"audio": mixtures.sum(1), "targets": {"separation": {"mixtures": mixtures}}})
    out.loss.backward()
    extras = out.outputs["separation"].extras
    assert extras["assignment"].shape == (2, 2, 4) and torch.all(extras["assignment"].sum(1) == 1)


def test_dprnn_masker_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("dprnn_tasnet", N=32, B=16, H=16, K=20, R=1)
    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 2, 800, generator=g)
    batch = {"audio": src.sum(1), "targets": {"separation": {"sources": src}}}
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
    assert _separate(model.eval(), src.sum(1)).shape == (2, 2, 800)


def test_save_and_reload_round_trip(tmp_path):
    model = create_model("conv_tasnet_causal", **TINY).eval()
    model.save_pretrained(tmp_path)
    again = ZooModel.from_pretrained(str(tmp_path))
    x = torch.randn(1, 700)
    torch.testing.assert_close(_separate(again, x), _separate(model, x))
    assert again.meta == {"sample_rate": 8000, "n_src": 2, "causal": True}


def _two_band_sines(n: int, samples: int, g: torch.Generator, rate: int = 8000):
    t = torch.arange(samples) / rate

    def band(lo, hi):
        f = lo + (hi - lo) * torch.rand(n, 1, generator=g)
        phase = 2 * math.pi * torch.rand(n, 1, generator=g)
        return (0.5 + torch.rand(n, 1, generator=g)) * torch.sin(2 * math.pi * f * t + phase)

    sources = torch.stack([band(100, 400), band(1500, 3000)], 1)
    return sources.sum(1), sources


def test_tiny_conv_tasnet_learns_to_separate_sines():
    torch.manual_seed(0)
    model = create_model("conv_tasnet_tiny", **TINY)
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    g = torch.Generator().manual_seed(1)
    mix_test, src_test = _two_band_sines(16, 2000, torch.Generator().manual_seed(99))

    def si_snri() -> float:  # estimates come back PIT-ordered to the references
        with torch.no_grad():
            out = model({"audio": mix_test, "targets": {"separation": {"sources": src_test}}})
        est = out.outputs["separation"].extras["estimates"]
        return (si_snr(est, src_test) - si_snr(mix_test[:, None].expand_as(src_test), src_test)).mean().item()

    before = si_snri()
    for _ in range(100):
        mix, src = _two_band_sines(4, 1024, g)
        loss = model({"audio": mix, "targets": {"separation": {"sources": src}}}).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    after = si_snri()
    print(f"held-out SI-SNRi: {before:.1f} dB before, {after:.1f} dB after 100 steps")
    assert after > 6.0 and after > before + 10.0
