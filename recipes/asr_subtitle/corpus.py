"""An embedded, synthetic *broadcast* corpus: Dutch and English news read by eSpeak NG voices, with
noise and reverberation, and two transcripts per utterance (verbatim and subtitle; see text.py).

Recipe (calibration.md "Corpus", extended to two languages and harder acoustics):

- voices: per language 10 training voices/variants and 2 held-out ones (:data:`VOICES`); eSpeak NG
  through its shared library (zoo/data/espeak.py), rate 140-190 words/min and pitch 30-70 drawn per
  utterance; the speech is the *verbatim* text;
- acoustics, drawn per utterance and seeded by its id: reverberation with probability 0.5 (a direct
  path plus an exponentially decaying Gaussian-noise tail, Polack's stochastic model of late
  reverberation; RT60 0.2-0.7 s, direct-to-reverberant ratio 0-10 dB), then white, pink or
  babble-like noise at 0-20 dB SNR (SNR of the noise-free signal over the noise), then a random gain;
- splits: ``train``, ``test_seen`` (new sentences, training voices), ``test_unseen`` (held-out
  voices); no sentence (subtitle text) occurs twice in the corpus.

Files: ``wav/<split>/<id>.wav`` (noisy, 16-bit mono), ``clean/<split>/<id>.wav`` (the same signal
without noise: reverberant where ``rt60 > 0``, so ``noisy = clean + noise`` exactly up to 16-bit
rounding), ``<split>.jsonl`` manifests (:data:`MANIFEST_SCHEMA`; paths relative to the root) and
``config.json`` whose hash names the default root, so an identical request reuses the corpus.

    python -m recipes.asr_subtitle.corpus --out /tmp/corpus --n-train 2000 --n-test 200 --workers 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import resource
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from recipes.asr_subtitle.text import LANGUAGES, NewsGrammar
from zoo.data import data_root
from zoo.data.manifest import Field, non_empty, one_of, positive, read_manifest, write_manifest

__all__ = ["build_corpus", "build_longform", "default_root", "corpus_config", "MANIFEST_SCHEMA", "VOICES",
           "SPLITS", "Acoustics", "render"]

CORPUS_VERSION = 1
SPLITS = ("train", "test_seen", "test_unseen")
VOICES = {  # every one verified with zoo.data.espeak.working_voices() (espeak-ng 1.52 from espeakng-loader)
    "en": dict(train=("en-us+m1", "en+f2", "en+m3", "en-gb-scotland+f3", "en-029+m2", "en-us+f4",
                      "en-gb-x-rp+m4", "en-gb-x-gbclan+f1", "en-us-nyc+m5", "en+m6"),
               held_out=("en-gb-x-gbcwmd+m7", "en-us+f5")),       # unseen accent + variant, unseen variant
    "nl": dict(train=("nl+m1", "nl+m2", "nl+m3", "nl+m4", "nl+m5", "nl+m6",
                      "nl+f1", "nl+f2", "nl+f3", "nl+f4"),
               held_out=("nl+m7", "nl+f5")),                       # unseen variants (one Dutch accent ships)
}
NOISES = ("white", "pink", "babble")

MANIFEST_SCHEMA = {
    "id": Field(str, unique=True, check=non_empty),
    "audio_filepath": Field(str, path=True),
    "clean_filepath": Field(str, path=True),
    "duration": Field(float, check=positive),
    "sample_rate": Field(int, check=positive),
    "lang": Field(str, check=one_of(*LANGUAGES)),
    "voice": Field(str, check=non_empty),
    "speaker": Field(str, check=non_empty),
    "snr_db": Field(float),
    "text_verbatim": Field(str, check=non_empty),
    "text_subtitle": Field(str, check=non_empty),
}


@dataclass(frozen=True)
class Acoustics:
    """Ranges the per-utterance conditions are drawn from (uniformly)."""

    rate: tuple[int, int] = (140, 190)
    pitch: tuple[int, int] = (30, 70)
    snr_db: tuple[float, float] = (0.0, 20.0)
    reverb_prob: float = 0.5
    rt60: tuple[float, float] = (0.2, 0.7)
    drr_db: tuple[float, float] = (0.0, 10.0)
    peak: tuple[float, float] = (0.3, 0.9)


@dataclass(frozen=True)
class Job:
    id: str
    split: str
    lang: str
    voice: str
    rate: int
    pitch: int
    snr_db: float
    noise: str
    rt60: float
    drr_db: float
    peak: float
    seed: int
    text_verbatim: str
    text_subtitle: str
    template: int


# --- signal processing -----------------------------------------------------------------------------
def _shape(x: np.ndarray, sr: int, exponent: float, band: tuple[float, float]) -> np.ndarray:
    """Filter ``x`` to a power spectrum ~ f^-exponent inside ``band`` (Hz), zero outside."""
    from scipy import fft

    m = fft.next_fast_len(len(x), real=True)
    f = np.fft.rfftfreq(m, 1 / sr)
    inside = (f >= band[0]) & (f <= band[1]) & (f > 0)
    gain = np.zeros_like(f)
    gain[inside] = f[inside] ** (-exponent / 2)
    return fft.irfft(fft.rfft(x, m) * gain, m)[: len(x)]


def make_noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``white``, ``pink`` (1/f) or ``babble``: six talker-like streams, each gated by its own
    syllable-rate (~4 Hz) envelope, shaped to a speech band (1/f, 100-4,000 Hz)."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return _shape(rng.standard_normal(n), sr, 1.0, (1.0, sr / 2))
    if kind == "babble":
        t = np.arange(n) / sr
        knots = np.arange(0.0, n / sr + 0.25, 0.125)  # 8 Hz knots -> ~4 Hz syllabic modulation
        streams = np.zeros(n)
        for _ in range(6):
            env = np.maximum(np.interp(t, knots, rng.standard_normal(len(knots))), 0.0)
            streams += env * rng.standard_normal(n) * rng.uniform(0.5, 1.0)
        return _shape(streams, sr, 1.0, (100.0, 4000.0))  # envelopes are slow, so shaping the sum ~ each
    raise ValueError(f"unknown noise type {kind!r}; use one of {NOISES}")


def room_impulse_response(sr: int, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A unit direct path followed (after 2.5 ms) by Gaussian noise decaying 60 dB over ``rt60`` s,
    scaled so the direct-to-reverberant energy ratio is ``drr_db``."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    tail[: int(0.0025 * sr)] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return tail


def render(job: Job, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float waveforms of one job: a pure function of the job."""
    from scipy.signal import fftconvolve

    from zoo.data.espeak import synthesize

    speech = synthesize(job.text_verbatim, job.voice, job.rate, job.pitch, sample_rate, seed=job.seed)
    speech = speech.astype(np.float64)
    rng = np.random.default_rng(job.seed)
    speech /= np.abs(speech).max() + 1e-9
    if job.rt60 > 0:
        rir = room_impulse_response(sample_rate, job.rt60, job.drr_db, rng)
        speech = fftconvolve(speech, rir)[: len(speech)]
    noise = make_noise(job.noise, len(speech), sample_rate, rng)
    noise *= np.sqrt(np.mean(speech**2) / (np.mean(noise**2) * 10 ** (job.snr_db / 10)))
    noisy = speech + noise
    gain = job.peak / np.abs(noisy).max()
    return (noisy * gain).astype(np.float32), (speech * gain).astype(np.float32)


def _render_to_files(args: tuple[Job, str, int]) -> tuple[str, int]:
    job, root, sample_rate = args
    noisy, clean = render(job, sample_rate)
    for folder, wav in (("wav", noisy), ("clean", clean)):
        path = Path(root, folder, job.split, f"{job.id}.wav")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wav, sample_rate, subtype="PCM_16")
    return job.id, len(noisy)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


# --- planning --------------------------------------------------------------------------------------
def _share(n: int, parts: int, i: int) -> int:
    return n // parts + (1 if i < n % parts else 0)


def plan_jobs(n_train: int, n_test: int, seed: int, languages: Sequence[str],
              acoustics: Acoustics = Acoustics()) -> list[Job]:
    """Every utterance's text, voice and conditions, drawn in the parent so workers cannot change them."""
    jobs, seen = [], set()
    for li, lang in enumerate(languages):
        if lang not in VOICES:
            raise ValueError(f"no voices for language {lang!r}; available: {sorted(VOICES)}")
        grammar, rng = NewsGrammar(lang), random.Random(f"{seed}:{lang}")
        n_test_lang = _share(n_test, len(languages), li)
        n_train_lang = _share(n_train, len(languages), li)
        sizes = dict(train=n_train_lang, test_seen=n_test_lang, test_unseen=n_test_lang)
        for split in SPLITS:
            voices = VOICES[lang]["held_out" if split == "test_unseen" else "train"]
            order = [voices[i % len(voices)] for i in range(sizes[split])]
            rng.shuffle(order)
            for i, voice in enumerate(order):
                for _ in range(1000):
                    sentence = grammar.sample(rng)
                    if sentence.subtitle not in seen:
                        break
                else:
                    raise RuntimeError(f"the {lang} grammar ran out of new sentences; ask for fewer")
                seen.add(sentence.subtitle)
                uid = f"{lang}-{split}-{i:05d}"
                a = acoustics
                reverb = rng.random() < a.reverb_prob
                jobs.append(Job(
                    id=uid, split=split, lang=lang, voice=voice, rate=rng.randint(*a.rate),
                    pitch=rng.randint(*a.pitch), snr_db=round(rng.uniform(*a.snr_db), 2),
                    noise=rng.choice(NOISES),
                    rt60=round(rng.uniform(*a.rt60), 3) if reverb else 0.0,
                    drr_db=round(rng.uniform(*a.drr_db), 2) if reverb else 0.0,
                    peak=round(rng.uniform(*a.peak), 3), seed=zlib.crc32(f"{seed}/{uid}".encode()),
                    text_verbatim=sentence.verbatim, text_subtitle=sentence.subtitle,
                    template=sentence.template,
                ))
    return jobs


def corpus_config(n_train: int = 2000, n_test: int = 200, seed: int = 0, sample_rate: int = 16000,
                  languages: Sequence[str] = LANGUAGES) -> dict:
    from zoo.data.espeak import ESpeak

    config = dict(version=CORPUS_VERSION, n_train=n_train, n_test=n_test, seed=seed, sample_rate=sample_rate,
                  languages=list(languages), voices={lang: VOICES[lang] for lang in languages},
                  acoustics=asdict(Acoustics()), espeak=ESpeak().version)
    return json.loads(json.dumps(config))  # as stored in config.json (tuples become lists)


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def default_root(config: dict) -> Path:
    """``$ZOO_DATA_DIR/asr_corpus-<hash>``, else ``~/.cache/encdec-zoo/asr_corpus-<hash>``."""
    return data_root() / f"asr_corpus-{_config_hash(config)}"


# --- building --------------------------------------------------------------------------------------
def build_corpus(root: str | Path | None = None, n_train: int = 2000, n_test: int = 200, seed: int = 0,
                 sample_rate: int = 16000, workers: int = 2, languages: Sequence[str] = LANGUAGES,
                 progress: bool = True) -> dict[str, Path]:
    """Build (or reuse) the corpus; returns ``{split: manifest path}``.

    ``n_train`` and ``n_test`` count utterances over all ``languages`` (split evenly); each test split
    has ``n_test``. A root whose ``config.json`` matches this request is reused; one holding another
    config raises ``ValueError``. Same arguments -> identical manifests and audio bytes, whatever
    ``workers`` is (each utterance is a pure function of its planned job).
    """
    from tqdm.auto import tqdm

    languages = tuple(languages)
    config = corpus_config(n_train, n_test, seed, sample_rate, languages)
    root = Path(root).expanduser() if root is not None else default_root(config)
    manifests = {split: root / f"{split}.jsonl" for split in SPLITS}
    stored = root / "config.json"
    if stored.is_file():
        old = json.loads(stored.read_text())
        if _config_hash(old) == _config_hash(config) and all(p.is_file() for p in manifests.values()):
            return manifests
        if _config_hash(old) != _config_hash(config):
            raise ValueError(f"{root} holds a corpus built with another config ({_config_hash(old)} != "
                             f"{_config_hash(config)}); pass another root, leave root=None, or delete {root}")
    jobs = plan_jobs(n_train, n_test, seed, languages)
    tasks = [(job, str(root), sample_rate) for job in jobs]
    lengths: dict[str, int] = {}
    bar = tqdm(total=len(tasks), desc=f"eSpeak corpus -> {root}", disable=not progress, unit="utt")
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for uid, n in pool.imap_unordered(_render_to_files, tasks, chunksize=8):
                lengths[uid] = n
                bar.update()
    else:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic as in a worker, so bytes do not depend on `workers`
        try:
            for task in tasks:
                uid, n = _render_to_files(task)
                lengths[uid] = n
                bar.update()
        finally:
            torch.set_num_threads(threads)
    bar.close()
    for split in SPLITS:
        rows = [dict(
            id=j.id, audio_filepath=str(root / "wav" / split / f"{j.id}.wav"),
            clean_filepath=str(root / "clean" / split / f"{j.id}.wav"),
            duration=round(lengths[j.id] / sample_rate, 4), sample_rate=sample_rate, lang=j.lang,
            voice=j.voice, speaker=j.voice, snr_db=j.snr_db, text_verbatim=j.text_verbatim,
            text_subtitle=j.text_subtitle, split=split, noise=j.noise, rt60=j.rt60, drr_db=j.drr_db,
            rate=j.rate, pitch=j.pitch, template=j.template,
        ) for j in jobs if j.split == split]
        write_manifest(manifests[split], rows, MANIFEST_SCHEMA)
    tmp = stored.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=1, sort_keys=True))
    os.replace(tmp, stored)
    return manifests


def _pause(background: np.ndarray, samples: int) -> np.ndarray:
    """``samples`` of an utterance's background (noisy minus clean), tiled, as int16."""
    return np.resize(background, samples).clip(-32768, 32767).astype(np.int16)


def build_longform(root: str | Path, minutes: float = 3.0, seed: int = 0, lang: str = "en",
                   split: str = "test_unseen", gap_s: tuple[float, float] = (0.3, 1.5)) -> Path:
    """Concatenate ``split`` utterances of ``lang`` (reshuffled and cycled as needed) with pauses into one
    >= ``minutes`` recording; writes ``longform/<name>.wav`` and a JSON of the known utterance boundaries
    (start, end in seconds, verbatim, subtitle). Returns the JSON path.

    As in a broadcast, the background does not stop between utterances: a pause carries the next
    utterance's own noise (its noisy minus clean signal, tiled), not digital silence."""
    root = Path(root)
    rows = [r for r in read_manifest(root / f"{split}.jsonl", MANIFEST_SCHEMA) if r["lang"] == lang]
    if not rows:
        raise ValueError(f"{root / f'{split}.jsonl'} has no {lang!r} utterances; "
                         "build the corpus with that language")
    sr = rows[0]["sample_rate"]
    name = f"{lang}_{split}_seed{seed}_{minutes:g}min_bed"
    out_json, out_wav = root / "longform" / f"{name}.json", root / "longform" / f"{name}.wav"
    if out_json.is_file() and out_wav.is_file():
        return out_json
    rng = random.Random(seed)
    pieces, segments, cursor, order = [], [], 0, []
    while cursor < minutes * 60 * sr:
        if not order:
            order = rng.sample(rows, len(rows))
        row = order.pop()
        wav, file_sr = sf.read(row["audio_filepath"], dtype="int16")
        if file_sr != sr:
            raise ValueError(f"{row['audio_filepath']}: {file_sr} Hz, the manifest says {sr} Hz; "
                             "rebuild the corpus")
        bed = wav.astype(np.int32) - sf.read(row["clean_filepath"], dtype="int16")[0].astype(np.int32)
        gap = _pause(bed, int(rng.uniform(*gap_s) * sr))
        pieces += [gap, wav]
        start = cursor + len(gap)
        cursor = start + len(wav)
        segments.append(dict(id=row["id"], start=start / sr, end=cursor / sr, voice=row["voice"],
                             text_verbatim=row["text_verbatim"], text_subtitle=row["text_subtitle"]))
    pieces.append(_pause(bed, int(gap_s[1] * sr)))
    audio = np.concatenate(pieces)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out_wav), audio, sr, subtype="PCM_16")
    info = dict(audio_filepath=out_wav.name, sample_rate=sr, duration=len(audio) / sr, lang=lang, split=split,
                seed=seed, segments=segments)
    out_json.write_text(json.dumps(info, indent=1, ensure_ascii=False))
    return out_json


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="corpus root (default: $ZOO_DATA_DIR or ~/.cache/encdec-zoo)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=LANGUAGES)
    p.add_argument("--longform-minutes", type=float, default=0.0, help="also build long-form files (0: skip)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    wall, cpu0 = time.perf_counter(), _cpu_seconds()
    manifests = build_corpus(args.out, args.n_train, args.n_test, args.seed, args.sample_rate, args.workers,
                             args.languages, progress=not args.no_progress)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu0
    total = 0
    for split, path in manifests.items():
        rows = read_manifest(path, MANIFEST_SCHEMA, check_files=False)
        hours = sum(r["duration"] for r in rows) / 3600
        total += len(rows)
        print(f"{split:12s} {len(rows):6d} utterances {hours:6.2f} h  {path}")
    print(f"{total} utterances in {wall:.1f} s wall, {cpu:.1f} s CPU (this process + workers)")
    if args.longform_minutes > 0:
        root = manifests["train"].parent
        for lang in args.languages:
            print("long-form:", build_longform(root, args.longform_minutes, args.seed, lang))


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
