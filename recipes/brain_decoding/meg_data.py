"""A simulated MEG/EEG listening cohort (Gwilliams/Brennan-like: everyone hears the same stories).

Speech: sentences from a small seeded grammar, spoken by eSpeak NG (:mod:`zoo.data.espeak`, several
voices, rates and pitches) and joined with pauses into a training and a test story; when eSpeak
is unavailable, speech-like signals (harmonic voiced syllables with formants, noise bursts,
syllabic rhythm) are synthesised instead. Log-mel (40 bands, 20 ms hop = 50 Hz) of the audio.

Decoding target (the "frozen speech encoder"): a seeded random-weights zoo ``transformer_encoder``
(2 layers, width ``speech_dim``, no absolute positions) over each segment's log-mel, frozen.

Brain: ``n_sources`` cortical sources, each a band-weighted log-mel envelope plus its rectified
onsets filtered by an evoked-response kernel; subject-specific sensor layouts (64-273 sensors,
2-D positions in [0, 1]), dipolar lead fields from jittered source positions, a subject latency
(80-160 ms), spatially correlated pink "brain noise" and white sensor noise; every sensor is
z-scored with training statistics. Segments are cut with the MEG window shifted by ``offset_ms``
(Défossez et al. 2023 use 150 ms).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.brain_decoding.data import cache_root

WORDS = dict(
    det=["the", "a", "every", "that", "one"],
    adj=["small", "red", "quiet", "old", "bright", "heavy", "green", "happy", "cold", "tall", "gentle", "dark"],
    noun=["dog", "river", "teacher", "window", "garden", "engine", "bird", "mountain", "letter", "city", "child",
          "boat", "forest", "doctor", "table", "market", "storm", "bottle"],
    verb=["watched", "carried", "found", "painted", "followed", "opened", "remembered", "pushed", "visited", "heard"],
    prep=["near", "behind", "under", "beside", "across", "inside"],
)
VOICES = ["en-us", "en", "en-us+f2", "en+m3", "en-us+m1", "en+f4"]


@dataclass(frozen=True)
class MEGConfig:
    sensors: tuple[int, ...] = (273, 208, 128, 64)   # per subject: CTF-, KIT-like MEG, 128/64-channel EEG
    train_minutes: float = 12.0
    test_minutes: float = 9.5
    segment_s: float = 1.0
    train_stride_s: float = 0.25        # training windows overlap; test segments never do
    rate: int = 50                      # Hz of log-mel, speech targets and MEG
    n_mels: int = 40
    speech_dim: int = 32
    n_sources: int = 24
    noise: float = 20.0                 # white sensor noise (std relative to the clean signal's)
    brain_noise: float = 20.0           # correlated pink noise from 32 random sources (same scale)
    offset_ms: float = 150.0
    seed: int = 0

    def key(self, *fields: str) -> str:
        d = asdict(self)
        return hashlib.sha1(json.dumps({k: d[k] for k in fields} if fields else d, sort_keys=True).encode()).hexdigest()[:12]


def sentence(rng: np.random.Generator) -> str:
    w = {k: v[int(rng.integers(len(v)))] for k, v in WORDS.items()}
    obj = {k: v[int(rng.integers(len(v)))] for k, v in WORDS.items()}
    extra = f" {WORDS['prep'][int(rng.integers(6))]} the {WORDS['noun'][int(rng.integers(18))]}" if rng.random() < 0.5 else ""
    return f"{w['det']} {w['adj']} {w['noun']} {w['verb']} {obj['det']} {obj['adj']} {obj['noun']}{extra}"


def speech_like(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """Fallback without eSpeak: voiced syllables (harmonics shaped by two formants), bursts and pauses."""
    out, n_total = [], int(seconds * sr)
    while sum(map(len, out)) < n_total:
        n = int(rng.uniform(0.12, 0.3) * sr)
        t = np.arange(n) / sr
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
        voiced = sum(np.sin(k * phase) * (np.exp(-((k * f0 - f1) / 150) ** 2) + 0.6 * np.exp(-((k * f0 - f2) / 250) ** 2))
                     for k in range(1, 30))
        burst = rng.normal(size=int(0.03 * sr)) * 0.3 if rng.random() < 0.5 else np.zeros(0)
        pause = np.zeros(int(rng.uniform(0.0, 0.25) * sr))
        out += [burst, voiced * np.hanning(n), pause]
    return np.concatenate(out)[:n_total].astype(np.float32) * 0.1


def story(seconds: float, seed: int, sr: int = 16000) -> tuple[np.ndarray, list[str]]:
    """About ``seconds`` of speech: eSpeak sentences with pauses, or the speech-like fallback."""
    rng, chunks, texts, total = np.random.default_rng(seed), [], [], 0
    try:
        from zoo.data.espeak import synthesize

        while total < seconds * sr:
            text = sentence(rng)
            wav = synthesize(text, voice=VOICES[int(rng.integers(len(VOICES)))], rate=int(rng.integers(140, 200)),
                             pitch=int(rng.integers(30, 70)), sample_rate=sr, seed=int(rng.integers(1 << 30)))
            pause = np.zeros(int(rng.uniform(0.15, 0.5) * sr), dtype=np.float32)
            chunks += [wav, pause]
            texts.append(text)
            total += len(wav) + len(pause)
        return np.concatenate(chunks)[: int(seconds * sr)], texts
    except (ImportError, OSError, RuntimeError):
        return speech_like(rng, seconds, sr), []


def log_mel(wav: np.ndarray, cfg: MEGConfig, sr: int = 16000) -> np.ndarray:
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=512, hop_length=sr // cfg.rate, n_mels=cfg.n_mels)
    with torch.no_grad():
        return torch.log(mel(torch.from_numpy(wav)) + 1e-5).T.numpy().astype(np.float32)  # (frames, n_mels)


class FrozenSpeech:
    """The frozen target encoder: a seeded random-weights ``transformer_encoder`` over standardised log-mel."""

    def __init__(self, cfg: MEGConfig):
        from zoo.registry import create_encoder

        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed + 17)
            self.net = create_encoder("transformer_encoder", in_dim=cfg.n_mels, dim=cfg.speech_dim, layers=2,
                                      heads=4, dropout=0.0, positions=False).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, mel_segments: np.ndarray) -> np.ndarray:
        """(N, T, n_mels) -> (N, T, speech_dim)."""
        return np.concatenate([self.net(torch.from_numpy(mel_segments[i:i + 256])).x.numpy()
                               for i in range(0, len(mel_segments), 256)])


def audio_features(cfg: MEGConfig, cache: bool = True) -> dict[str, np.ndarray]:
    """Standardised log-mel of the train and test stories (cached)."""
    path = cache_root() / f"meg-audio-{cfg.key('train_minutes', 'test_minutes', 'rate', 'n_mels', 'seed')}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            return dict(f)
    mels = {split: log_mel(story(minutes * 60, cfg.seed * 2 + i)[0], cfg)
            for i, (split, minutes) in enumerate((("train", cfg.train_minutes), ("test", cfg.test_minutes)))}
    mu, sd = mels["train"].mean(0), mels["train"].std(0) + 1e-5
    out = {k: ((v - mu) / sd).astype(np.float32) for k, v in mels.items()}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **out)
        tmp.replace(path)
    return out


def _layout(rng: np.random.Generator, n: int) -> np.ndarray:
    """n sensor positions spread over a disk inscribed in [0, 1]^2 (sunflower spiral + jitter)."""
    k = np.arange(n) + 0.5
    r, theta = 0.45 * np.sqrt(k / n), np.pi * (3 - np.sqrt(5)) * k
    pos = 0.5 + np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + rng.normal(0, 0.01, (n, 2))
    return np.clip(pos, 0, 1).astype(np.float32)


def _leadfield(rng: np.random.Generator, sensors: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """(C, K) dipolar 2-D field patterns: ((p - q) . u) / (|p - q|^2 + d^2)^1.5, unit-norm columns."""
    u = rng.normal(size=(len(sources), 2))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    diff = sensors[:, None, :] - sources[None, :, :]
    g = (diff * u[None]).sum(-1) / ((diff ** 2).sum(-1) + 0.08 ** 2) ** 1.5
    return g / np.linalg.norm(g, axis=0, keepdims=True)


def _pink(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=(n, k)), axis=0)
    spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1))[:, None]
    x = np.fft.irfft(spec, n=n, axis=0)
    return x / x.std(0)


def sources(mel: np.ndarray, cfg: MEGConfig) -> np.ndarray:
    """(frames, n_sources) source activity shared by all subjects (the auditory response)."""
    rng = np.random.default_rng([cfg.seed, 11])
    bands = np.arange(cfg.n_mels)
    centres, widths = rng.uniform(0, cfg.n_mels, cfg.n_sources), rng.uniform(2, 10, cfg.n_sources)
    weights = np.exp(-0.5 * ((bands[None] - centres[:, None]) / widths[:, None]) ** 2)
    drive = mel @ weights.T / weights.sum(1)
    onsets = np.maximum(np.diff(drive, axis=0, prepend=drive[:1]), 0)
    mix = rng.uniform(0, 1, cfg.n_sources)
    drive = (1 - mix) * drive + mix * 3 * onsets
    t = np.arange(int(0.4 * cfg.rate)) / cfg.rate                     # evoked kernel over 400 ms
    out = np.empty_like(drive)
    for k in range(cfg.n_sources):
        lat = rng.uniform(0.05, 0.15)
        kernel = (t / lat) ** 2 * np.exp(-t / lat * 2) * np.cos(2 * np.pi * rng.uniform(2, 6) * t)
        out[:, k] = np.convolve(drive[:, k], kernel)[: len(drive)]
    return (out - out.mean(0)) / out.std(0)


def simulate_subject(src: dict[str, np.ndarray], subject: int, cfg: MEGConfig) -> dict[str, np.ndarray]:
    """One subject's layout and z-scored recordings of the train and test stories."""
    rng = np.random.default_rng([cfg.seed, 12, subject])
    n = cfg.sensors[subject]
    pos = _layout(rng, n)
    template = np.random.default_rng([cfg.seed, 13]).uniform(0.2, 0.8, (cfg.n_sources, 2))
    lf = _leadfield(rng, pos, template + rng.normal(0, 0.03, template.shape))
    noise_lf = _leadfield(rng, pos, rng.uniform(0.05, 0.95, (32, 2)))
    delay = int(round(rng.uniform(0.08, 0.16) * cfg.rate))
    out = {"positions": pos}
    for split, s in src.items():
        clean = np.roll(s, delay, axis=0) @ lf.T
        clean[:delay] = 0
        scale = clean.std()
        x = clean + scale * (cfg.brain_noise * _pink(rng, len(s), 32) @ noise_lf.T / np.sqrt(32 / 4)
                             + cfg.noise * rng.normal(size=clean.shape))
        out[split] = x.astype(np.float32)
    mu, sd = out["train"].mean(0), out["train"].std(0)
    for split in src:
        out[split] = np.clip((out[split] - mu) / sd, -20, 20).T.copy()   # (C, frames), clamped as in Défossez
    return out


@dataclass
class MEGCohort:
    config: MEGConfig
    targets: dict[str, np.ndarray]      # split -> (n_segments, T, speech_dim)
    starts: dict[str, np.ndarray]       # split -> segment start frames
    subjects: list[dict[str, np.ndarray]]


def meg_cohort(cfg: MEGConfig = MEGConfig(), cache: bool = True) -> MEGCohort:
    mel = audio_features(cfg, cache)
    src = {split: sources(m, cfg) for split, m in mel.items()}
    seg = int(round(cfg.segment_s * cfg.rate))
    offset = int(round(cfg.offset_ms / 1000 * cfg.rate))
    speech = FrozenSpeech(cfg)
    starts, targets = {}, {}
    for split, m in mel.items():
        stride = seg if split == "test" else max(1, int(round(cfg.train_stride_s * cfg.rate)))
        starts[split] = np.arange(0, len(m) - seg - offset + 1, stride)
        targets[split] = speech(np.stack([m[s:s + seg] for s in starts[split]])).astype(np.float32)
    return MEGCohort(cfg, targets, starts, [simulate_subject(src, s, cfg) for s in range(len(cfg.sensors))])


class MEGSegments(Dataset):
    """(subject, segment) pairs of one split; the MEG window starts ``offset_ms`` after the audio's."""

    def __init__(self, cohort: MEGCohort, subjects: list[int] | None = None, split: str = "train"):
        self.cohort, self.split = cohort, split
        cfg = cohort.config
        self.seg, self.offset = int(round(cfg.segment_s * cfg.rate)), int(round(cfg.offset_ms / 1000 * cfg.rate))
        subjects = list(range(len(cohort.subjects))) if subjects is None else subjects
        self.items = [(s, i) for s in subjects for i in range(len(cohort.starts[split]))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        s, j = self.items[i]
        start = int(self.cohort.starts[self.split][j]) + self.offset
        sub = self.cohort.subjects[s]
        return dict(id=f"meg-sub{s:02d}-{self.split}-{j:05d}", subject=s, segment=j,
                    meg=torch.from_numpy(sub[self.split][:, start:start + self.seg]),
                    positions=torch.from_numpy(sub["positions"]),
                    embedding=torch.from_numpy(self.cohort.targets[self.split][j]))


def collate_meg(items: list[dict]) -> dict:
    """Pad sensors to the widest layout; ``sensor_mask`` marks the real ones."""
    c = max(it["meg"].shape[0] for it in items)
    meg = torch.zeros(len(items), c, items[0]["meg"].shape[1])
    pos, mask = torch.zeros(len(items), c, 2), torch.zeros(len(items), c, dtype=torch.bool)
    for row, it in enumerate(items):
        n = it["meg"].shape[0]
        meg[row, :n], pos[row, :n], mask[row, :n] = it["meg"], it["positions"], True
    return dict(ids=[it["id"] for it in items], meg=meg, subject_ids=torch.tensor([it["subject"] for it in items]),
                sensor_positions=pos, sensor_mask=mask, segments=torch.tensor([it["segment"] for it in items]),
                targets=dict(segments=dict(embedding=torch.stack([it["embedding"] for it in items]))))
