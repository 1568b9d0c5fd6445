"""Separation data: mixtures are exact sums, reproducible, and oracle masks score as the literature says."""
import numpy as np
import pytest
import torch
from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio as si_snr

from recipes.separation.data import CLASS_NAMES, EventMixtures, MixtureConfig, SpeakerMixtures, synth_event
from recipes.separation.oracles import oracle_separate


def _fake_voices(n_voices=4, per_voice=3, seed=0):
    rng = np.random.default_rng(seed)
    waves, voices = [], []
    for v in range(n_voices):
        f = 150 + 90 * v  # each "voice" a harmonic source with its own pitch and formant-like envelope
        for _ in range(per_voice):
            t = np.arange(int(rng.uniform(1.5, 3.0) * 8000)) / 8000
            am = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
            wav = sum(np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6)) / k for k in range(1, 6)) * am
            waves.append(wav.astype(np.float32))
            voices.append(f"voice{v}")
    return waves, voices


def test_speaker_mixtures_are_sums_of_distinct_voices_and_reproducible():
    waves, voices = _fake_voices()
    ds = SpeakerMixtures(waves, voices, size=8, seed=3, config=MixtureConfig(n_src=3))
    a, b = ds[5], ds[5]
    assert torch.equal(a["audio"], b["audio"]) and a["sources"].shape == (3, 32000)
    assert torch.allclose(a["sources"].sum(0), a["audio"], atol=1e-6)
    assert not torch.equal(ds[4]["audio"], a["audio"])
    with pytest.raises(ValueError, match="need >= 3 voices"):
        SpeakerMixtures(waves[:3], voices[:3], 2, 0, MixtureConfig(n_src=3))


def test_relative_level_is_within_the_configured_range():
    waves, voices = _fake_voices()
    ds = SpeakerMixtures(waves, voices, size=20, seed=0, config=MixtureConfig(gain_db=5.0))
    for i in range(20):
        s = ds[i]["sources"]
        rms = s.pow(2).mean(1).sqrt()
        assert abs(20 * torch.log10(rms[0] / rms[1])) <= 5.0 + 1e-3


def test_event_classes_are_distinct_and_queries_consistent():
    rng = np.random.default_rng(0)
    clips = {c: synth_event(c, 1.0, 8000, rng) for c in CLASS_NAMES}
    spectra = {c: np.abs(np.fft.rfft(x)) for c, x in clips.items()}
    for a in CLASS_NAMES:  # no two classes have near-identical spectra
        for b in CLASS_NAMES:
            if a < b:
                corr = np.corrcoef(spectra[a], spectra[b])[0, 1]
                assert corr < 0.9, (a, b, corr)
    ds = EventMixtures(6, seed=1)
    item = ds[2]
    assert item["labels"].sum() == 2 and item["labels"][item["query_class"]] == 1
    assert torch.allclose(item["sources"].sum(0), item["audio"], atol=1e-6)
    with pytest.raises(ValueError, match="unknown event class"):
        synth_event("trumpet", 1.0, 8000, rng)


@pytest.mark.parametrize("kind, floor", [("ibm", 10.0), ("irm", 10.0), ("wiener", 10.0)])
def test_oracle_masks_separate_well(kind, floor):
    waves, voices = _fake_voices()
    ds = SpeakerMixtures(waves, voices, size=6, seed=0)
    mix = torch.stack([ds[i]["audio"] for i in range(6)])
    src = torch.stack([ds[i]["sources"] for i in range(6)])
    est = oracle_separate(mix, src, kind)
    improvement = si_snr(est, src).mean() - si_snr(mix[:, None].expand_as(src), src).mean()
    assert improvement > floor
    with pytest.raises(ValueError, match="unknown oracle"):
        oracle_separate(mix, src, "magic")
