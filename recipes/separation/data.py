"""Embedded separation data: speaker mixtures of the eSpeak corpus and a synthetic sound-event corpus.

Mixtures are *recipes* (which utterances, offsets and gains), rendered on the fly from clean 8 kHz
utterances held in memory, so 3,000 mixtures cost the memory of their sources once, and every
mixture is reproducible from (seed, index). Recipe from calibration.md §B: each source is 1–2
utterances of one voice joined by 0–0.3 s gaps and cropped to ``seconds``; the voices differ; the
sources are set to equal RMS, then one source gets a uniform −5..+5 dB gain; optional noise.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch.utils.data import Dataset

EPS = 1e-8


def load_clean_utterances(rows: Sequence[dict], sample_rate: int = 8000) -> tuple[list[np.ndarray], list[str]]:
    """Clean waveforms of corpus rows, resampled to ``sample_rate``, with their voice names."""
    waves, voices = [], []
    for row in rows:
        wav, sr = sf.read(row.get("clean_filepath") or row["audio_filepath"], dtype="float32", always_2d=False)
        if wav.ndim > 1:
            wav = wav.mean(1)
        if sr != sample_rate:
            wav = AF.resample(torch.from_numpy(wav), sr, sample_rate).numpy()
        waves.append(wav.astype(np.float32))
        voices.append(row["voice"])
    return waves, voices


@dataclass(frozen=True)
class MixtureConfig:
    n_src: int = 2
    sample_rate: int = 8000
    seconds: float = 4.0
    gain_db: float = 5.0          # one source gets U(-gain_db, +gain_db) relative to the others
    max_utterances: int = 2       # per source
    max_gap_s: float = 0.3
    noise_snr_db: tuple[float, float] | None = None   # e.g. (10, 20) adds white noise at that SNR


class SpeakerMixtures(Dataset):
    """``n_src``-speaker mixtures; item = {id, audio (T,), sources (n_src, T)}."""

    def __init__(self, waves: Sequence[np.ndarray], voices: Sequence[str], size: int, seed: int,
                 config: MixtureConfig = MixtureConfig()):
        by_voice: dict[str, list[int]] = {}
        for i, v in enumerate(voices):
            by_voice.setdefault(v, []).append(i)
        if len(by_voice) < config.n_src:
            raise ValueError(f"{config.n_src}-speaker mixtures need >= {config.n_src} voices, got {len(by_voice)}")
        self.waves, self.by_voice, self.size, self.seed, self.config = waves, by_voice, size, seed, config
        self.length = int(config.seconds * config.sample_rate)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        cfg, rng = self.config, random.Random(self.seed * 1_000_003 + index)
        voices = rng.sample(sorted(self.by_voice), cfg.n_src)
        sources = np.stack([self._source(rng, v) for v in voices])
        rms = np.sqrt((sources ** 2).mean(1, keepdims=True)) + EPS
        sources = sources / rms * 0.1
        sources[0] *= 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20)
        mix = sources.sum(0)
        if cfg.noise_snr_db is not None:
            noise = np.random.default_rng(rng.randrange(2**32)).standard_normal(self.length).astype(np.float32)
            snr = rng.uniform(*cfg.noise_snr_db)
            noise *= np.sqrt((mix ** 2).mean() / (noise ** 2).mean() / 10 ** (snr / 10))
            mix = mix + noise
        peak = max(np.abs(mix).max(), np.abs(sources).max()) + EPS
        scale = 0.9 / peak if peak > 0.9 else 1.0
        return {"id": f"mix{cfg.n_src}-{self.seed}-{index:06d}", "audio": torch.from_numpy(mix * scale),
                "sources": torch.from_numpy(sources * scale)}

    def _source(self, rng: random.Random, voice: str) -> np.ndarray:
        cfg, parts = self.config, []
        for k in range(rng.randint(1, cfg.max_utterances)):
            if k:
                parts.append(np.zeros(int(rng.uniform(0, cfg.max_gap_s) * cfg.sample_rate), np.float32))
            parts.append(self.waves[rng.choice(self.by_voice[voice])])
        wav = np.concatenate(parts)
        if len(wav) < self.length:
            start = rng.randint(0, self.length - len(wav))
            return np.pad(wav, (start, self.length - len(wav) - start))
        start = rng.randint(0, len(wav) - self.length)
        return wav[start: start + self.length].copy()


def collate_mixtures(items: list[dict]) -> dict:
    audio = torch.stack([it["audio"] for it in items])
    sources = torch.stack([it["sources"] for it in items])
    lengths = torch.full((len(items),), audio.shape[1])
    return {"ids": [it["id"] for it in items], "audio": audio, "audio_lengths": lengths,
            "targets": {"separation": {"sources": sources}}}


# --- a synthetic sound-event corpus with weak labels and text descriptions -------------------------

EVENT_CLASSES: dict[str, list[str]] = {
    "tone": ["a steady pure tone", "a constant beep held for a while"],
    "chirp": ["a rising chirp", "a quick upward frequency sweep"],
    "clicks": ["a train of sharp clicks", "repeated ticking clicks"],
    "noise_burst": ["bursts of hissing noise", "short blasts of static"],
    "hum": ["a low electrical hum", "a deep mains buzz"],
    "siren": ["a wailing siren", "a siren going up and down"],
    "drum": ["a low drum beat", "thumping percussion hits"],
    "bell": ["a ringing bell", "a metallic chime that fades"],
}
CLASS_NAMES = list(EVENT_CLASSES)


def synth_event(name: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of class ``name``: each class has its own structure and parameters drawn from ``rng``."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if name == "tone":
        x = np.sin(2 * np.pi * rng.uniform(600, 1200) * t)
    elif name == "chirp":
        f0, f1, period = rng.uniform(300, 600), rng.uniform(1500, 3000), rng.uniform(0.4, 0.8)
        phase_t = t % period
        x = np.sin(2 * np.pi * (f0 * phase_t + (f1 - f0) * phase_t ** 2 / (2 * period)))
    elif name == "clicks":
        x = np.zeros(n)
        step = int(sample_rate / rng.uniform(4, 12))
        for s in range(int(rng.integers(0, step)), n, step):
            m = min(n - s, 40)
            x[s: s + m] += np.exp(-np.arange(m) / 5.0) * rng.choice([-1, 1])
    elif name == "noise_burst":
        env = (np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.28)) > 0.3).astype(float)
        x = rng.standard_normal(n) * env
    elif name == "hum":
        f = rng.choice([50.0, 60.0]) * rng.uniform(1.0, 2.0)
        x = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 5))
    elif name == "siren":
        fc, dev, rate = rng.uniform(700, 1000), rng.uniform(200, 400), rng.uniform(0.5, 1.5)
        inst = fc + dev * np.sin(2 * np.pi * rate * t)
        x = np.sin(2 * np.pi * np.cumsum(inst) / sample_rate)
    elif name == "drum":
        x = np.zeros(n)
        step = int(sample_rate / rng.uniform(1.5, 3))
        hit = np.sin(2 * np.pi * rng.uniform(60, 120) * t[:step]) * np.exp(-t[:step] * 18)
        for s in range(0, n, step):
            m = min(step, n - s)
            x[s: s + m] += hit[:m]
    elif name == "bell":
        f = rng.uniform(1500, 2500)
        x = np.zeros(n)
        period = int(rng.uniform(0.6, 1.2) * sample_rate)
        ring = sum(np.sin(2 * np.pi * f * r * t[:period]) / (i + 1) for i, r in enumerate((1, 2.76, 5.4)))
        ring = ring * np.exp(-t[:period] * 5)
        for s in range(0, n, period):
            m = min(period, n - s)
            x[s: s + m] += ring[:m]
    else:
        raise ValueError(f"unknown event class {name!r}; classes are {CLASS_NAMES}")
    x = x.astype(np.float32)
    return x / (np.sqrt((x ** 2).mean()) + EPS) * 0.1


class EventMixtures(Dataset):
    """Mixtures of ``n_events`` clips of distinct classes, with weak labels (multi-hot), a queried class
    (``query`` index), its text description and an example clip of the same class for audio queries."""

    def __init__(self, size: int, seed: int, n_events: int = 2, seconds: float = 2.0, sample_rate: int = 8000,
                 gain_db: float = 5.0):
        self.size, self.seed, self.n_events = size, seed, n_events
        self.seconds, self.sample_rate, self.gain_db = seconds, sample_rate, gain_db

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        classes = rng.choice(len(CLASS_NAMES), self.n_events, replace=False)
        sources = np.stack([synth_event(CLASS_NAMES[c], self.seconds, self.sample_rate, rng) for c in classes])
        sources[1:] *= 10 ** (rng.uniform(-self.gain_db, self.gain_db, (self.n_events - 1, 1)) / 20)
        query = int(rng.integers(self.n_events))
        labels = np.zeros(len(CLASS_NAMES), np.float32)
        labels[classes] = 1
        descriptions = EVENT_CLASSES[CLASS_NAMES[classes[query]]]
        example = synth_event(CLASS_NAMES[classes[query]], self.seconds, self.sample_rate, rng)
        return {"id": f"events-{self.seed}-{index:06d}", "audio": torch.from_numpy(sources.sum(0)),
                "sources": torch.from_numpy(sources), "labels": torch.from_numpy(labels),
                "query_class": int(classes[query]), "query_source": query,
                "query_text": descriptions[int(rng.integers(len(descriptions)))],
                "query_audio": torch.from_numpy(example)}
