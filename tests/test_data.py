"""Audio I/O, manifests and collates (zoo/data/audio.py, manifest.py, collate.py)."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.data.audio import check_waveform, load_audio, save_audio
from zoo.data.collate import collate_dict, collate_speech, collate_token_targets, collate_tokens, pad_batch
from zoo.data.manifest import Field, ManifestError, non_empty, positive, read_manifest, write_manifest


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(len(x)))
    return float(spec.abs().argmax()) * sr / len(x)


# --- audio -----------------------------------------------------------------------------------------
def test_resampling_is_explicit_logged_and_keeps_the_frequency(tmp_path, caplog):
    path = tmp_path / "tone.wav"
    sf.write(path, _sine(1000.0, 44100, 1.0), 44100, subtype="FLOAT")
    with caplog.at_level(logging.INFO, logger="zoo.data.audio"):
        wav = load_audio(path, 16000)
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    assert abs(_peak_hz(wav, 16000) - 1000.0) <= 1.0
    assert any("44100" in r.getMessage() and "16000" in r.getMessage() for r in caplog.records)
    # amplitude preserved away from the edges (band-limited resampling, tone well below Nyquist)
    assert wav[2000:-2000].abs().max().item() == pytest.approx(0.5, abs=0.01)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo.data.audio"):
        same = load_audio(path, 44100)
    assert not caplog.records and same.shape == (44100,)  # no resampling at the native rate


def test_stereo_policy(tmp_path):
    left, right = _sine(440.0, 16000, 0.5), np.zeros(8000, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    mean, first, both = (load_audio(path, 16000, channels=c) for c in ("mean", "first", "all"))
    assert torch.allclose(mean, torch.from_numpy(left) / 2)       # default: average the channels
    assert torch.allclose(first, torch.from_numpy(left))
    assert both.shape == (2, 8000) and torch.equal(both[1], torch.zeros(8000))
    with pytest.raises(ValueError, match="channel policy"):
        load_audio(path, 16000, channels="left")


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    with pytest.raises(ValueError, match=r"junk\.wav: cannot read audio.*convert it"):
        load_audio(junk, 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match=r"empty\.wav: the file holds no samples"):
        load_audio(empty, 16000)
    nan = tmp_path / "nan.wav"
    x = _sine(300, 16000, 0.1)
    x[10] = np.nan
    sf.write(nan, x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan\.wav: 1 NaN/inf samples"):
        load_audio(nan, 16000)


def test_save_audio_round_trip_and_clipping_guard(tmp_path):
    x = _sine(200, 8000, 0.25)
    path = save_audio(tmp_path / "sub" / "a.wav", torch.from_numpy(x), 8000)
    back = load_audio(path, 8000)
    assert torch.allclose(back, torch.from_numpy(x), atol=1 / 32768)
    with pytest.raises(ValueError, match="exceeds 1.0"):
        save_audio(tmp_path / "b.wav", x * 3, 8000)


def test_check_waveform_names_problem_and_fix():
    ok = torch.randn(16000) * 0.1
    assert torch.equal(check_waveform(ok, 16000, 16000), ok)
    assert check_waveform(ok[None], 16000, 16000).shape == (16000,)          # (1, T) is mono
    cases = [
        ((ok, 8000, 16000), "8000 Hz but the model expects 16000 Hz; resample"),
        ((torch.randn(2, 16000), 16000, 16000), r"2 channels .*wav.mean\(0\)"),
        ((torch.randn(16000, 2), 16000, 16000), r"2 channels .*wav.mean\(1\)"),
        ((torch.zeros(0), 16000, 16000), "empty audio"),
        ((torch.tensor([0.0, float("nan"), 0.1]), 16000, 16000), "1 NaN/inf"),
        ((torch.zeros(10, dtype=torch.int16), 16000, 16000), "int16 samples.*32768"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            check_waveform(*args)
    with pytest.raises(ValueError, match="shorter than the 400 samples.*pad it"):
        check_waveform(torch.zeros(100), 16000, 16000, min_samples=400)
    with pytest.raises(TypeError):
        check_waveform([0.0, 1.0], 16000, 16000)


# --- manifests -------------------------------------------------------------------------------------
SCHEMA = {"id": Field(str, unique=True, check=non_empty), "audio_filepath": Field(str, path=True),
          "duration": Field(float, check=positive), "n": Field(int, required=False)}


def _write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_manifest_round_trip_resolves_relative_paths(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    rows = [dict(id="a", audio_filepath=str(tmp_path / "a.wav"), duration=1, extra="kept")]
    path = write_manifest(tmp_path / "m.jsonl", rows, SCHEMA)
    assert json.loads(path.read_text())["audio_filepath"] == "a.wav"        # stored relative
    back = read_manifest(path, SCHEMA)
    assert back == [dict(id="a", audio_filepath=str(tmp_path / "a.wav"), duration=1.0, extra="kept")]
    assert isinstance(back[0]["duration"], float)
    assert read_manifest(path)[0]["audio_filepath"] == str(tmp_path / "a.wav")  # *filepath without a schema


@pytest.mark.parametrize("bad, field, problem", [
    (dict(id="c", audio_filepath="a.wav", duration=-1.0), "duration", "must be > 0"),
    (dict(id="c", audio_filepath="a.wav"), "duration", "missing required field"),
    (dict(id="c", audio_filepath="a.wav", duration="2.0"), "duration", "expected float, got str"),
    (dict(id="c", audio_filepath="a.wav", duration=1.0, n=True), "n", "expected int, got bool"),
    (dict(id="c", audio_filepath="nope.wav", duration=1.0), "audio_filepath", "does not exist"),
    (dict(id="a", audio_filepath="a.wav", duration=1.0), "id", "duplicate value 'a'"),
    ("{not json", None, "invalid JSON"),
])
def test_bad_manifest_row_names_file_line_and_field(tmp_path, bad, field, problem):
    (tmp_path / "a.wav").write_bytes(b"")
    good = [dict(id="a", audio_filepath="a.wav", duration=1.0),
            dict(id="b", audio_filepath="a.wav", duration=2.5)]
    path = _write_lines(tmp_path / "m.jsonl", good + [bad])
    with pytest.raises(ManifestError) as err:
        read_manifest(path, SCHEMA)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ") and problem in message
    if field:
        assert f"field '{field}'" in message and err.value.field == field


# --- collate ---------------------------------------------------------------------------------------
def test_pad_batch_keeps_values_and_pads_the_rest():
    seqs = [torch.arange(1.0, 4.0), torch.arange(1.0, 2.0), torch.arange(1.0, 6.0)]
    padded, lengths = pad_batch(seqs, pad_value=-1.0)
    assert lengths.tolist() == [3, 1, 5] and padded.shape == (3, 5)
    for row, seq, n in zip(padded, seqs, lengths, strict=True):
        assert torch.equal(row[:n], seq) and (row[n:] == -1).all()
    with pytest.raises(ValueError, match="trailing shape"):
        pad_batch([torch.zeros(3, 2), torch.zeros(3, 4)])


def test_speech_collate_marks_missing_labels():
    items = [dict(id="u1", audio=torch.ones(5), verbatim=[3, 4, 5], subtitle=None),
             dict(id="u2", audio=torch.ones(2), verbatim=[7], subtitle=[8, 9])]
    batch = collate_speech(items, heads=("verbatim", "subtitle", "absent"), pad_id=0)
    assert batch["ids"] == ["u1", "u2"] and batch["audio_lengths"].tolist() == [5, 2]
    assert batch["audio"][1, 2:].abs().sum() == 0
    v, s = batch["targets"]["verbatim"], batch["targets"]["subtitle"]
    assert v["tokens"].tolist() == [[3, 4, 5], [7, 0, 0]] and v["lengths"].tolist() == [3, 1]
    assert s["present"].tolist() == [False, True] and s["tokens"].tolist() == [[0, 0], [8, 9]]
    assert "absent" not in batch["targets"]
    assert collate_tokens([[1, 2], []], pad_id=9)["tokens"].tolist() == [[1, 2], [9, 9]]
    assert collate_token_targets([dict(a=None)], ["a"]) == {}
    with pytest.raises(ValueError, match="mono"):
        collate_speech([dict(id="x", audio=torch.ones(2, 5))])


def test_generic_dict_collate():
    items = [dict(id=1, feats=torch.ones(3, 2), label=torch.tensor(1), meta=dict(tags=torch.tensor([1, 2])),
                  name="a"),
             dict(id=2, feats=torch.ones(1, 2), label=torch.tensor(0), meta=dict(tags=torch.tensor([5])),
                  name="b")]
    batch = collate_dict(items, pad_values={"feats": 0.0, "meta": {"tags": -100}})
    assert batch["ids"] == ["1", "2"] and batch["name"] == ["a", "b"]
    assert batch["feats"].shape == (2, 3, 2) and batch["feats_lengths"].tolist() == [3, 1]
    assert batch["label"].tolist() == [1, 0]
    assert batch["meta"]["tags"].tolist() == [[1, 2], [5, -100]]
    assert batch["meta"]["tags_lengths"].tolist() == [2, 1]
    with pytest.raises(ValueError, match="add 'feats' to pad_values"):
        collate_dict(items)
    with pytest.raises(ValueError, match="same keys"):
        collate_dict([dict(a=1), dict(b=2)])
