"""Separation recipe: training lowers the PIT loss, metrics equal torchmetrics', long-form overlap-add
reassembles and aligns permutations, query nets condition the separator, and the CLI's input policy."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import Subset
from torchmetrics.functional.audio import (
    permutation_invariant_training,
    scale_invariant_signal_noise_ratio,
    signal_distortion_ratio,
)

from recipes.separation.cli import separate_file
from recipes.separation.data import EventMixtures, MixtureConfig, SpeakerMixtures
from recipes.separation.evaluate import improvements, score_model, score_oracle
from recipes.separation.longform import OverlapAdd, separate_tensor
from recipes.separation.longform import separate_file as separate_long_file
from recipes.separation.query import QueryNets, QuerySeparator
from recipes.separation.train import fit
from zoo.registry import create_model
from zoo.train import TrainConfig

TINY = dict(N=32, B=16, H=32, Sc=16, X=3, R=1)


def _voices(n_voices=4, per_voice=3, seed=0):
    rng = np.random.default_rng(seed)
    waves, voices = [], []
    for v in range(n_voices):
        for _ in range(per_voice):
            t = np.arange(int(rng.uniform(0.6, 1.2) * 8000)) / 8000
            am = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
            wav = sum(np.sin(2 * np.pi * (150 + 110 * v) * k * t + rng.uniform(0, 6)) / k for k in range(1, 5)) * am
            waves.append(wav.astype(np.float32))
            voices.append(f"v{v}")
    return waves, voices


def _mixtures(size, seed):
    return SpeakerMixtures(*_voices(), size=size, seed=seed, config=MixtureConfig(seconds=0.5))


def test_trainer_lowers_the_pit_loss(tmp_path):
    torch.manual_seed(0)
    model = create_model("conv_tasnet_tiny", **TINY)
    cfg = TrainConfig(steps=30, batch_size=4, lr=3e-3, weight_decay=0.0, clip_norm=5.0, schedule="constant",
                      out_dir=str(tmp_path / "run"), progress=False, tensorboard=False)
    history = fit(model, _mixtures(8, 0), Subset(_mixtures(4, 99), range(4)), cfg)
    losses = [r["loss"] for r in history["train"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses
    assert "si_snri" in history["eval"][-1] and (tmp_path / "run" / "model" / "config.json").is_file()


def test_improvements_match_torchmetrics():
    torch.manual_seed(0)
    sources = torch.randn(3, 2, 4000)
    mix = sources.sum(1)
    est = sources.flip(1) + 0.3 * torch.randn(3, 2, 4000)        # swapped order, noisy
    ours = improvements(est, sources, mix)
    best, _ = permutation_invariant_training(est, sources, scale_invariant_signal_noise_ratio, eval_func="max")
    base = scale_invariant_signal_noise_ratio(mix[:, None].expand_as(sources), sources).mean(1)
    torch.testing.assert_close(ours["si_snri"], best - base, atol=1e-4, rtol=0)
    aligned = est.flip(1)
    sdri = (signal_distortion_ratio(aligned.double(), sources.double())
            - signal_distortion_ratio(mix[:, None].expand_as(sources).double(), sources.double())).mean(1)
    torch.testing.assert_close(ours["sdri"], sdri.float(), atol=1e-3, rtol=0)


def test_model_scoring_and_oracles_on_the_same_mixtures():
    data = Subset(_mixtures(4, 5), range(4))
    ibm = score_oracle("ibm", data, sdr=False)["si_snri"]
    assert ibm > 8.0  # an ideal mask on distinct-pitch harmonic voices
    model = create_model("conv_tasnet_tiny", **TINY)
    assert np.isfinite(score_model(model, data, batch_size=2)["sdri"])


def _swapper(n_src=2):
    """A 'separator' that returns (x, 2x) for even windows and (2x, x) for odd ones."""
    calls = {"n": 0}

    def fn(chunk):
        pair = [chunk, 2 * chunk] if calls["n"] % 2 == 0 else [2 * chunk, chunk]
        calls["n"] += 1
        return torch.stack(pair, 1)

    return fn


@pytest.mark.parametrize("hop", [None, 300])
def test_overlap_add_reassembles_and_aligns_permutations(hop):
    x = torch.randn(5003).double()
    out = separate_tensor(_swapper(), x.float(), 2, window=800, hop=hop, block=777)
    assert out.shape == (2, 5003)
    torch.testing.assert_close(out[0], x.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], 2 * x.float(), atol=1e-5, rtol=0)
    plain = torch.cat(list(OverlapAdd(_swapper(), 2, 800, hop, reorder_chunks=False).stream([x])), 1)
    assert (plain[0] - x.float()).abs().max() > 0.1  # without reordering the sources would be scrambled


def test_streaming_file_separation_matches_in_memory(tmp_path):
    x = (0.1 * torch.randn(12_345)).float()
    sf.write(tmp_path / "long.wav", np.stack([x.numpy(), x.numpy()], 1), 8000, subtype="FLOAT")  # stereo
    info = separate_long_file(_swapper(), tmp_path / "long.wav", [tmp_path / "a.wav", tmp_path / "b.wav"], 8000,
                              window=1000, block=1024)
    assert info["samples"] == 12_345 and info["channels"] == 2
    a, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_allclose(a, x.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="resample"):
        separate_long_file(_swapper(), tmp_path / "long.wav", [tmp_path / "c.wav"], 16000, window=1000)


@pytest.fixture(scope="module")
def query_system():
    torch.manual_seed(0)
    nets = QueryNets().eval()
    nets.set_class_embeddings(clips_per_class=2, seconds=0.5)
    separator = create_model("query_tasnet_tiny", condition_dim=nets.dim, **TINY)
    with torch.no_grad():  # FiLM starts at the identity; give it weights so queries matter
        for m in separator.modules():
            if type(m).__name__ == "FiLM":
                m.proj.weight.normal_(0, 0.5)
    return QuerySeparator(nets, separator.eval())


def test_query_kinds_share_a_space_and_condition_the_separator(query_system):
    item = EventMixtures(1, seed=0, seconds=0.5)[0]
    embs = {k: query_system.nets.embed(**{k: v}) for k, v in
            (("text", "a rising chirp"), ("label", "tone"), ("audio", item["query_audio"]))}
    assert {tuple(e.shape) for e in embs.values()} == {(1, query_system.nets.dim)}
    outs = [query_system.separate(item["audio"], **q) for q in ({"label": "tone"}, {"label": "bell"},
                                                               {"text": "a rising chirp"})]
    assert outs[0].shape == (1, 1, item["audio"].numel())
    assert (outs[0] - outs[1]).abs().max() > 1e-4 and (outs[0] - outs[2]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="known labels: tone, chirp"):
        query_system.nets.embed(label="trumpet")


def test_cli_writes_sources_and_plot_and_rejects_bad_input(tmp_path, query_system):
    model = create_model("conv_tasnet_tiny", **TINY)
    model.save_pretrained(tmp_path / "sep")
    mix = _mixtures(1, 3)[0]["audio"].numpy()
    sf.write(tmp_path / "mix.wav", np.stack([mix, mix], 1), 16000)           # stereo at 16 kHz
    result = separate_file(str(tmp_path / "sep"), tmp_path / "mix.wav", tmp_path / "out")
    assert len(result["sources"]) == 2 and all(sf.info(p).samplerate == 8000 for p in result["sources"])
    assert (tmp_path / "out" / "mix_sources.png").stat().st_size > 0
    assert any("averaged to mono" in n for n in result["notes"]) and any("resampled" in n for n in result["notes"])
    sf.write(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(ValueError, match="silent"):
        separate_file(model, tmp_path / "silent.wav", tmp_path / "out")
    sf.write(tmp_path / "short.wav", 0.1 * np.ones(10, np.float32), 8000)
    with pytest.raises(ValueError, match="shorter than one filter"):
        separate_file(model, tmp_path / "short.wav", tmp_path / "out")
    sf.write(tmp_path / "loud.wav", np.clip(5 * mix, -1, 1), 8000)
    with pytest.warns(UserWarning, match="clipped"):
        separate_file(model, tmp_path / "loud.wav", tmp_path / "out", plot=False)
    with pytest.raises(ValueError, match="needs a query model"):
        separate_file(model, tmp_path / "loud.wav", tmp_path / "out", query="a bell")
    query_system.save(tmp_path / "qmodel")
    loaded = QuerySeparator.load(tmp_path / "qmodel")
    out = separate_file(loaded, tmp_path / "mix.wav", tmp_path / "qout", query_label="bell", plot=False)
    assert [p.endswith("mix_target.wav") for p in out["sources"]] == [True]
    with pytest.raises(ValueError, match="known labels"):
        separate_file(loaded, tmp_path / "mix.wav", tmp_path / "qout", query_label="trumpet")
