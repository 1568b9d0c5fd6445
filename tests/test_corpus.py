"""The embedded eSpeak NG broadcast corpus (zoo/data/espeak.py, recipes/asr_subtitle/text.py, corpus.py)."""
from __future__ import annotations

import json
import random
import re
import time

import numpy as np
import pytest
import soundfile as sf

from recipes.asr_subtitle.corpus import (
    MANIFEST_SCHEMA,
    SPLITS,
    VOICES,
    build_corpus,
    build_longform,
    corpus_config,
    default_root,
    plan_jobs,
)
from recipes.asr_subtitle.text import HESITATIONS, LANGUAGES, MARKERS, NewsGrammar, spell_number
from zoo.data.espeak import ESpeak, ESpeakError, synthesize
from zoo.data.manifest import read_manifest

TINY = dict(n_train=8, n_test=2, seed=3, progress=False)  # 12 utterances: per language 4 train + 1 + 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root, workers=1, **TINY)


def _rows(manifests):
    return {split: read_manifest(path, MANIFEST_SCHEMA) for split, path in manifests.items()}


# --- eSpeak ----------------------------------------------------------------------------------------
def test_every_corpus_voice_speaks_and_bad_voices_fail_clearly():
    engine = ESpeak()
    assert engine.version.startswith("1.")
    lengths = {}
    for lang in VOICES:
        for voice in VOICES[lang]["train"] + VOICES[lang]["held_out"]:
            lengths[voice] = len(engine.synthesize("one two three four", voice))
            assert lengths[voice] > 0.5 * 22050, voice
    assert len(set(lengths.values())) > len(lengths) // 2  # variants really change the voice
    for bad in ("en-gb", "mb-en1", "xx-nonsense"):
        with pytest.raises(ESpeakError, match="gmw language voice"):
            engine.synthesize("hello", bad)


def test_synthesis_is_a_pure_function_of_its_arguments():
    a = synthesize("the weather in ghent", "en-us+m1", rate=150, pitch=40, seed=1)
    synthesize("de trein heeft vertraging", "nl+f2", rate=190, pitch=70, seed=2)  # state must not leak
    b = synthesize("the weather in ghent", "en-us+m1", rate=150, pitch=40, seed=1)
    assert np.array_equal(a, b)
    slow = synthesize("the weather in ghent", "en-us+m1", rate=100, pitch=40, seed=1)
    assert len(slow) > 1.2 * len(a)  # the rate parameter reaches the library
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0


# --- text domains ----------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", LANGUAGES)
def test_verbatim_and_subtitle_domains_differ_as_described(lang):
    grammar, rng = NewsGrammar(lang), random.Random(0)
    sentences = [grammar.sample(rng) for _ in range(400)]
    vocab = grammar.vocabulary()
    fillers = set(HESITATIONS[lang])
    with_hesitation = 0
    for s in sentences:
        words = s.verbatim.split()
        assert s.verbatim == s.verbatim.lower() and not re.search(r"[0-9.,:;!?%]", s.verbatim)
        assert set(words) <= vocab
        assert not fillers & set(re.findall(r"\w+", s.subtitle.lower()))       # hesitations only in verbatim
        assert (s.subtitle[0].isupper() or s.subtitle[0].isdigit()) and s.subtitle.endswith(".")
        with_hesitation += bool(fillers & set(words))
        for number in re.findall(r"\d+", s.subtitle):                            # digits only in subtitles,
            assert spell_number(int(number), lang) in s.fluent                   # spelt out in the speech
        assert len(s.subtitle.split()) <= len(words)                              # subtitles are condensed
    assert 0.3 < with_hesitation / len(sentences) < 0.8
    assert sum(bool(re.search(r"\d", s.subtitle)) for s in sentences) > 0.5 * len(sentences)
    assert sum(s.verbatim != s.fluent for s in sentences) > 0.5 * len(sentences)  # disfluencies
    assert sum(s.verbatim.split()[0] in {m.split()[0] for m in MARKERS[lang]} for s in sentences) > 40
    assert len({s.template for s in sentences}) == 17


def test_number_spelling():
    assert spell_number(3459, "en") == "three thousand four hundred and fifty nine"
    assert spell_number(1005, "en") == "one thousand and five"
    assert spell_number(3459, "nl") == "drieduizend vierhonderdnegenenvijftig"
    assert spell_number(22, "nl") == "tweeëntwintig" and spell_number(101, "nl") == "honderdeen"
    assert spell_number(0, "en") == "zero" and spell_number(9999, "nl").startswith("negenduizend")
    with pytest.raises(ValueError):
        spell_number(10000, "en")


def test_no_sentence_repeats_and_held_out_voices_stay_out_of_training():
    jobs = plan_jobs(2000, 200, 0, LANGUAGES)
    assert len(jobs) == 2400 and len({j.text_subtitle for j in jobs}) == 2400
    for lang in LANGUAGES:
        train = {j.voice for j in jobs if j.lang == lang and j.split == "train"}
        seen = {j.voice for j in jobs if j.lang == lang and j.split == "test_seen"}
        unseen = {j.voice for j in jobs if j.lang == lang and j.split == "test_unseen"}
        assert len(train) >= 8 and seen <= train and unseen and not unseen & train
    rates = {j.rate for j in jobs}
    pitches = {j.pitch for j in jobs}
    assert min(rates) >= 140 and max(rates) <= 190 and len(rates) > 30 and len(pitches) > 30
    assert {j.noise for j in jobs} == {"white", "pink", "babble"}
    assert 0.4 < np.mean([j.rt60 > 0 for j in jobs]) < 0.6
    assert plan_jobs(2000, 200, 0, LANGUAGES) == jobs


# --- the built corpus ------------------------------------------------------------------------------
def test_manifests_hold_the_promised_fields(tiny):
    _, manifests = tiny
    rows = _rows(manifests)
    assert [len(rows[s]) for s in SPLITS] == [8, 2, 2]
    for split, split_rows in rows.items():
        for r in split_rows:
            assert r["sample_rate"] == 16000 and r["speaker"] == r["voice"]
            info = sf.info(r["audio_filepath"])
            assert info.samplerate == 16000 and info.channels == 1
            assert r["duration"] == pytest.approx(info.frames / 16000, abs=1e-4)
            assert (r["voice"] in VOICES[r["lang"]]["held_out"]) == (split == "test_unseen")
    assert {r["lang"] for r in rows["train"]} == {"en", "nl"}


def test_snr_of_noisy_vs_clean_matches_the_manifest(tiny):
    _, manifests = tiny
    for rows in _rows(manifests).values():
        for r in rows:
            noisy, _ = sf.read(r["audio_filepath"], dtype="float64")
            clean, _ = sf.read(r["clean_filepath"], dtype="float64")
            snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
            assert abs(snr - r["snr_db"]) < 0.5, (r["id"], snr, r["snr_db"])


def test_deterministic_whatever_the_workers(tiny, tmp_path):
    root, manifests = tiny
    again = build_corpus(tmp_path / "again", workers=2, **TINY)
    for split in SPLITS:
        assert again[split].read_bytes() == manifests[split].read_bytes()  # paths are stored relative
    wavs = sorted(p.relative_to(root) for p in root.rglob("*.wav"))
    assert len(wavs) == 24
    assert wavs == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*.wav"))
    for rel in wavs:
        assert (root / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    assert plan_jobs(8, 2, 4, LANGUAGES) != plan_jobs(8, 2, 3, LANGUAGES)  # another seed, another corpus


def test_cache_is_reused_and_a_foreign_root_is_refused(tiny, tmp_path, monkeypatch):
    root, manifests = tiny
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert build_corpus(root, workers=1, **TINY) == manifests
    assert time.perf_counter() - start < 2.0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    with pytest.raises(ValueError, match="another config"):
        build_corpus(root, workers=1, **{**TINY, "n_train": 10})
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    config = corpus_config(8, 2, 3, 16000, LANGUAGES)
    assert default_root(config).parent == tmp_path and default_root(config).name.startswith("asr_corpus-")
    assert json.loads((root / "config.json").read_text()) == config
    assert default_root(config) != default_root({**config, "seed": 4})


def test_longform_boundaries_match_the_concatenation(tiny):
    root, _ = tiny
    info_path = build_longform(root, minutes=0.25, seed=1, lang="nl", split="test_unseen")
    info = json.loads(info_path.read_text())
    audio, sr = sf.read(info_path.parent / info["audio_filepath"], dtype="int16")
    assert sr == 16000 and len(audio) / sr >= 15.0 and info["duration"] == len(audio) / sr
    rows = {r["id"]: r for r in read_manifest(root / "test_unseen.jsonl", MANIFEST_SCHEMA)}
    previous_end = 0
    for seg in info["segments"]:
        start, end = round(seg["start"] * sr), round(seg["end"] * sr)
        source, _ = sf.read(rows[seg["id"]]["audio_filepath"], dtype="int16")
        clean, _ = sf.read(rows[seg["id"]]["clean_filepath"], dtype="int16")
        assert np.array_equal(audio[start:end], source)
        assert seg["text_verbatim"] == rows[seg["id"]]["text_verbatim"] and rows[seg["id"]]["lang"] == "nl"
        assert start - previous_end >= 0.3 * sr - 1
        # the pause carries this utterance's own background (noisy - clean), not digital silence
        bed = source.astype(np.int32) - clean
        assert np.array_equal(audio[previous_end:start], np.resize(bed, start - previous_end).astype(np.int16))
        assert audio[previous_end:start].any()
        previous_end = end
    assert build_longform(root, minutes=0.25, seed=1, lang="nl", split="test_unseen") == info_path
