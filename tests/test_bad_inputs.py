"""Bad input gets a clear error naming the problem and the fix: the ``zoo`` command (exit code 2, an
``error:`` line, no traceback) and the Python API (the exception type and the key words of its message).

The command-line cases run as real ``python -m zoo`` subprocesses, started together (they are
independent) so that the whole file stays well under a minute.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from zoo import ZooModel, create_model
from zoo.contract import Features
from zoo.data.audio import check_waveform, load_audio
from zoo.data.manifest import Field, ManifestError, positive, read_manifest
from zoo.hub import CheckpointError, load_weights, resolve_weights_file
from zoo.registry import UnknownNameError

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dim=16, layers=1, heads=2)


def toy(seed: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    return create_model("toy_cascade", **SMALL).eval()


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


# --- the command line, in subprocesses ---------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Saved models and audio files the command-line cases point at."""
    root = tmp_path_factory.mktemp("bad_inputs")
    toy().save_pretrained(root / "toy")
    torch.manual_seed(0)
    create_model("conv_tasnet_tiny").save_pretrained(root / "sep")
    sf.write(root / "speech.wav", noise(16000), 16000)
    sf.write(root / "mix.wav", noise(8000), 8000)
    sf.write(root / "silent.wav", np.zeros(8000, np.float32), 8000)
    sf.write(root / "tiny.wav", noise(4), 8000)  # shorter than one 16-sample filter
    (root / "junk.wav").write_text("this is not audio")
    (root / "list.yaml").write_text("- a\n- b\n")
    return {p.name: p for p in root.iterdir()} | {"root": root}


@pytest.fixture(scope="module")
def query_model(files) -> Path:
    pytest.importorskip("recipes.separation.query")
    from recipes.separation.query import QueryNets, QuerySeparator

    torch.manual_seed(0)
    nets = QueryNets()
    path = files["root"] / "query"
    QuerySeparator(nets, create_model("query_tasnet_tiny", condition_dim=nets.dim)).save(path)
    return path


# (argv with {placeholders} for `files`, words the error line must contain)
CLI_CASES = {
    "unknown model name": (["info", "toy_cascde"], ["unknown model", "Did you mean: toy_cascade"]),
    "unknown pretrained tag": (["info", "toy_cascade.nope"], ["no pretrained tag 'nope'", "known:"]),
    "unknown recipe": (["train", "toi"], ["unknown recipe 'toi'", "Did you mean: toy"]),
    "unknown config key": (["train", "toy", "train.lrr=1e-3"], ["unknown config key 'train.lrr'",
                                                               "Did you mean: train.lr?"]),
    "config value of the wrong type": (["train", "toy", "train.steps=many"], ["'train.steps' must be an integer",
                                                                            "'many'"]),
    "config value not among the choices": (["train", "toy", "train.schedule=cosin"],
                                           ["'train.schedule' must be one of 'cosine', 'linear', 'constant'"]),
    "override without '='": (["train", "toy", "train.lr"], ["override 'train.lr' must look like key=value"]),
    "missing config file": (["train", "toy", "--config", "{root}/nope.yaml"], ["nope.yaml does not exist",
                                                                               "pass an existing YAML file"]),
    "config file that is not a mapping": (["train", "toy", "--config", "{list.yaml}"], ["must hold a YAML mapping"]),
    "separate: silent mixture": (["separate", "{sep}", "{silent.wav}", "--out", "{root}/o1"],
                                 ["silent.wav: the mixture is silent", "check the file or its gain"]),
    "separate: shorter than one filter": (["separate", "{sep}", "{tiny.wav}", "--out", "{root}/o2"],
                                          ["4 samples", "shorter than one filter of 16 samples",
                                           "pass a longer recording"]),
    "separate: query on a non-query model": (["separate", "{sep}", "{mix.wav}", "--out", "{root}/o3", "--query",
                                              "a barking dog"], ["--query needs a query model", "query.json"]),
    "separate: unreadable audio": (["separate", "{sep}", "{junk.wav}", "--out", "{root}/o4"],
                                   ["junk.wav: cannot read audio", "convert it to WAV or FLAC"]),
    "separate: missing audio": (["separate", "{sep}", "{root}/gone.wav", "--out", "{root}/o5"],
                                ["gone.wav: no such audio file"]),
    "separate: unknown query label": (["separate", "{query}", "{mix.wav}", "--out", "{root}/o6", "--query-label",
                                       "unicorn"], ["unknown query label 'unicorn'", "known labels:", "bell"]),
    "transcribe: model without a CTC verbatim head": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t1"],
                                                      ["needs a CTC or hybrid 'verbatim' head", "asr_hybrid_*"]),
    "transcribe: max line width 0": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t2",
                                      "--max-line-width", "0"], ["max_line_width=0 must be >= 1",
                                                                 "max_line_width=42"]),
    "transcribe: speech threshold outside [0, 1]": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t9",
                                                     "--end-speech-min", "5"],
                                                    ["end_speech_min=5.0 is a posterior threshold", "[0, 1]",
                                                     "default 0.05"]),
    "transcribe: missing audio": (["transcribe", "{toy}", "{root}/gone.wav", "--out", "{root}/t3"],
                                  ["gone.wav: no such audio file"]),
    "transcribe: --lm-weight with --one-pass": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t7",
                                                  "--lm-weight", "0.5", "--one-pass"],
                                                 ["fuses the LM into the second pass", "drop --one-pass"]),
    "transcribe: --lm-weight without the LM file": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t8",
                                                     "--lm-weight", "0.5"],
                                                    ["verbatim_lm.json", "zoo eval asr_subtitle --model"]),
    "transcribe: hub id not in the offline cache": (["transcribe", "nobody-zz/no-such-model", "{speech.wav}",
                                                     "--out", "{root}/t4"],
                                                    ["cannot load 'nobody-zz/no-such-model'", "HF_HUB_OFFLINE=1"]),
    "transcribe: unknown device": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t5", "--device",
                                    "tpu9"], ["unknown device 'tpu9'", "use auto, cpu, cuda or cuda:N"]),
    **({} if torch.cuda.is_available() else {
        "transcribe: --device cuda without a GPU": (["transcribe", "{toy}", "{speech.wav}", "--out", "{root}/t6",
                                                     "--device", "cuda"], ["torch sees no CUDA device", "use cpu"])}),
    "card: directory without config.json": (["card", "{root}/nothing"], ["has no config.json",
                                                                        "written by save_pretrained"]),
}


# cases run as real subprocesses (a few: each start imports torch); the others go through zoo.cli.main in-process,
# the same parser and error handler
IN_SUBPROCESS = ["unknown model name", "unknown recipe", "unknown config key", "missing config file",
                 "separate: silent mixture", "separate: query on a non-query model", "separate: unreadable audio",
                 "transcribe: max line width 0"]


def _argv(case: str, names: dict[str, str]) -> list[str]:
    return [re.sub(r"\{([\w.]+)\}", lambda m: names[m.group(1)], a) for a in CLI_CASES[case][0]]


@pytest.fixture(scope="module")
def names(files) -> dict[str, str]:
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="module")
def cli_results(names) -> dict[str, subprocess.CompletedProcess]:
    """The IN_SUBPROCESS cases, run concurrently as ``python -m zoo ...`` (HF_HUB_OFFLINE=1, one thread each)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    procs = {case: subprocess.Popen([sys.executable, "-m", "zoo", *_argv(case, names)], cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for case in IN_SUBPROCESS}
    results = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[case] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def _check_error_line(case: str, stderr: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    for words in CLI_CASES[case][1]:
        assert words in lines[0], (words, lines[0])


@pytest.mark.parametrize("case", IN_SUBPROCESS)
def test_cli_bad_input_exits_2_with_a_clear_error(case, cli_results):
    result = cli_results[case]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    _check_error_line(case, result.stderr)


@pytest.mark.parametrize("case", [c for c in CLI_CASES if c not in IN_SUBPROCESS])
def test_cli_main_bad_input_returns_2_with_a_clear_error(case, names, request, capsys):
    from zoo.cli import main

    if "{query}" in CLI_CASES[case][0]:
        names = {**names, "query": str(request.getfixturevalue("query_model"))}
    assert main(_argv(case, names)) == 2  # an unhandled exception would propagate here
    _check_error_line(case, capsys.readouterr().err)


# --- audio ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech_encoder():
    from encoders.speech import conformer_speech

    torch.manual_seed(0)
    return conformer_speech(dim=16, layers=1, heads=2, ffn=32, n_mels=20, subsampling_channels=4).eval()


@pytest.mark.parametrize("wav, sr, min_samples, error, match", [
    (torch.zeros(8000), 8000, 1, ValueError, r"sampled at 8000 Hz but the model expects 16000 Hz; resample"),
    (torch.zeros(2, 16000), 16000, 1, ValueError, r"2 channels .*mix it down with wav.mean\(0\)"),
    (torch.zeros(0), 16000, 1, ValueError, r"empty audio \(0 samples\)"),
    (torch.tensor([0.1, float("nan"), float("inf")]), 16000, 1, ValueError, r"2 NaN/inf samples; clean"),
    (torch.zeros(16000, dtype=torch.int16), 16000, 1, ValueError, r"int16 samples; convert to float .*/ 32768"),
    (torch.zeros(100), 16000, 400, ValueError, r"100 samples .* shorter than the 400 samples .*pad it with zeros"),
    ([0.0, 0.1], 16000, 1, TypeError, r"expected a torch.Tensor or numpy array, got list"),
], ids=["wrong-rate", "stereo", "empty", "nan", "int16", "too-short", "list"])
def test_in_memory_audio_is_checked(wav, sr, min_samples, error, match):
    with pytest.raises(error, match=match):
        check_waveform(wav, sr, 16000, min_samples=min_samples)


@pytest.mark.parametrize("audio, error, match", [
    (torch.zeros(1, 2, 16000), ValueError, r"takes mono audio .*average the channels first: audio.mean\(dim=1\)"),
    (torch.zeros(16000), ValueError, r"add a batch dimension with audio\[None\]"),
    (torch.zeros(1, 16000, dtype=torch.int16), TypeError, r"float audio in \[-1, 1\], got torch.int16.*/ 32768"),
    (torch.full((1, 16000), float("nan")), ValueError, r"audio rows \[0\] contain NaN or Inf; clean the input"),
    (torch.zeros(1, 100), ValueError, r"audio too short \(row 0: 100 samples.*at least 960 samples.*Pad such clips"),
], ids=["stereo", "unbatched", "int16", "nan", "too-short"])
def test_speech_encoder_rejects_bad_audio(speech_encoder, audio, error, match):
    with pytest.raises(error, match=match):
        speech_encoder(audio)


def test_audio_files_unreadable_missing_or_empty(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF....not a wav at all")
    with pytest.raises(ValueError, match=r"junk.wav: cannot read audio .*convert it to WAV or FLAC"):
        load_audio(tmp_path / "junk.wav", 16000)
    with pytest.raises(FileNotFoundError, match=r"gone.wav: no such audio file; check the path"):
        load_audio(tmp_path / "gone.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match=r"empty.wav: the file holds no samples"):
        load_audio(tmp_path / "empty.wav", 16000)


# --- manifests ------------------------------------------------------------------------------------------
SCHEMA = {"id": Field(str, unique=True), "audio_filepath": Field(str, path=True),
          "duration": Field(float, check=positive)}


@pytest.mark.parametrize("bad_row, match", [
    ('{"id": "b", "audio_filepath": "a.wav", "duration": 1.0', r"m.jsonl:2: invalid JSON .*one JSON object per line"),
    ({"id": "b", "audio_filepath": "a.wav"}, r"m.jsonl:2: field 'duration': missing required field; add 'duration'"),
    ({"id": "b", "audio_filepath": "a.wav", "duration": "long"},
     r"m.jsonl:2: field 'duration': expected float, got str 'long'; fix the value's type"),
    ({"id": "b", "audio_filepath": "a.wav", "duration": 0}, r"m.jsonl:2: field 'duration': must be > 0, got 0.0"),
    ({"id": "b", "audio_filepath": "gone.wav", "duration": 1.0},
     r"m.jsonl:2: field 'audio_filepath': file .*gone.wav does not exist; rebuild the data or fix the path"),
    ({"id": "a", "audio_filepath": "a.wav", "duration": 1.0}, r"m.jsonl:2: field 'id': duplicate value 'a'"),
], ids=["bad-json", "missing-field", "wrong-type", "zero-duration", "missing-audio", "duplicate-id"])
def test_manifest_errors_name_file_line_and_field(tmp_path, bad_row, match):
    sf.write(tmp_path / "a.wav", noise(160), 16000)
    good = json.dumps({"id": "a", "audio_filepath": "a.wav", "duration": 0.01})
    bad = bad_row if isinstance(bad_row, str) else json.dumps(bad_row)
    (tmp_path / "m.jsonl").write_text(f"{good}\n{bad}\n")
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path / "m.jsonl", SCHEMA)
    with pytest.raises(FileNotFoundError, match=r"no such manifest; build the data first"):
        read_manifest(tmp_path / "other.jsonl", SCHEMA)


def test_config_file_with_a_wrong_type_names_the_key(tmp_path):
    from recipes.toy.train import ToyConfig
    from zoo.config import ConfigError, load_config

    (tmp_path / "c.yaml").write_text("train:\n  lr: fast\n  warmup: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.warmup'. Did you mean: train.warmup_steps"):
        load_config(ToyConfig, tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"config key 'train.lr' must be a number; got 'fast'"):
        load_config(ToyConfig, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"config key 'model' is a section; give a mapping"):
        load_config(ToyConfig, None, ["model=3"])


# --- checkpoints ----------------------------------------------------------------------------------------
@pytest.fixture
def saved_toy(tmp_path) -> Path:
    toy().save_pretrained(tmp_path / "toy")
    return tmp_path / "toy"


@pytest.mark.parametrize("change, match", [
    ("missing", r"missing keys \[decoders.majority.proj.bias\].*strict=False"),
    ("extra", r"unexpected keys \[decoders.majority.bonus\].*strict=False"),
    ("shape", r"shape mismatches \[decoders.majority.proj.bias: checkpoint \(5,\) vs model \(4,\)\].*config.json"),
])
def test_checkpoint_key_and_shape_mismatches_are_named(saved_toy, change, match):
    state = load_file(saved_toy / "model.safetensors")
    if change == "missing":
        del state["decoders.majority.proj.bias"]
    elif change == "extra":
        state["decoders.majority.bonus"] = torch.zeros(2)
    else:
        state["decoders.majority.proj.bias"] = torch.zeros(5)
    save_file(state, saved_toy / "model.safetensors")
    with pytest.raises(CheckpointError, match=match):
        ZooModel.from_pretrained(saved_toy)


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_running_pickle_is_refused(saved_toy, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({**toy().state_dict(), "decoders.tags.proj.bias": RunsCode(marker)}, saved_toy / "pytorch_model.bin")
    (saved_toy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"refused to load .*pytorch_model.bin: it is a pickle that needs "
                                              r"code to be run.*convert the checkpoint to safetensors"):
        ZooModel.from_pretrained(saved_toy)
    assert not marker.exists()


def test_checkpoint_without_config_json(saved_toy):
    (saved_toy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no usable config.json .*save models with ZooModel.save_pretrained"):
        ZooModel.from_pretrained(saved_toy)
    with pytest.raises(CheckpointError, match=r"no weights in .*expected model.safetensors"):
        resolve_weights_file(saved_toy.parent)


def test_url_with_a_wrong_or_no_sha256(saved_toy, tmp_path):
    url = (saved_toy / "model.safetensors").as_uri()
    with pytest.raises(CheckpointError, match=r"sha256 mismatch for .*expected 0{64}, got [0-9a-f]{64}; file removed"):
        resolve_weights_file(url, sha256="0" * 64, cache_dir=str(tmp_path / "dl"))
    with pytest.raises(CheckpointError, match=r"refusing to load .* without a sha256"):
        resolve_weights_file(url, cache_dir=str(tmp_path / "dl"))
    good = hashlib.sha256((saved_toy / "model.safetensors").read_bytes()).hexdigest()
    assert resolve_weights_file(url, sha256=good, cache_dir=str(tmp_path / "dl")).is_file()  # the check can pass


def test_hub_id_not_in_the_offline_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"no weights for hub repo 'nobody-zz/nothing' .*HF_HUB_OFFLINE is set"):
        resolve_weights_file("hf-hub:nobody-zz/nothing", cache_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"cannot load 'nobody-zz/nothing' .*download it once online"):
        ZooModel.from_pretrained("nobody-zz/nothing", cache_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"checkpoint path './gone' does not exist"):
        resolve_weights_file("./gone")


def test_load_weights_names_the_source(saved_toy):
    state = load_file(saved_toy / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"checkpoint from my.ckpt does not match ZooModel: missing keys .*shape mismatches"):
        load_weights(create_model("toy_cascade"), state, source="my.ckpt")


# --- names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: create_model("toy_cascde"), r"unknown model 'toy_cascde'. Did you mean: toy_cascade"),
    (lambda: create_model("toy_cascade.nope", pretrained=True), r"no pretrained tag 'nope'; known: none"),
    (lambda: create_model("toy_cascade", pretrained=True), r"has no pretrained weights; list them with list_models"),
], ids=["unknown-model", "unknown-tag", "no-weights"])
def test_registry_names(call, match):
    with pytest.raises(UnknownNameError, match=match):
        call()


def test_graph_inputs_and_heads_are_checked():
    from recipes.toy.data import ToySequences, collate

    model = toy()
    batch = collate([ToySequences(2, seed=1)[i] for i in range(2)])
    with pytest.raises(KeyError, match=r"unknown head 'tagz'; this model has heads \['tags', 'majority'\]"):
        model.generate(batch, heads="tagz")
    with pytest.raises(KeyError, match=r"reads batch\['signal'\] but the batch has keys .*needs inputs \['signal'\]"):
        model.generate({"audio": batch["signal"]})
    with pytest.raises(ValueError, match=r"batch carries no targets for any head; heads are \['tags', 'majority'\]"):
        model({**batch, "targets": {}})
    spec = model.spec_decoders["tags"]
    with pytest.raises(ValueError, match=r"decoder 'tags' reads unknown encoder 'nowhere'"):
        ZooModel(model.spec_encoders, {"tags": {**spec, "source": "nowhere"}})


# --- decoding options -----------------------------------------------------------------------------------
def _search_options(**kw):
    from decoders.search import DecodingOptions

    return DecodingOptions(**kw)


def _ctc_options(**kw):
    from decoders.ctc import CTCDecodingOptions

    return CTCDecodingOptions(**kw)


@pytest.mark.parametrize("make, kwargs, match", [
    (_search_options, dict(beam_size=0), r"beam_size must be >= 1, got 0"),
    (_search_options, dict(beam_size=4, groups=3, diversity=0.5), r"groups=3 must divide beam_size=4"),
    (_search_options, dict(beam_size=2, n_best=3), r"n_best=3 must lie in \[1, beam_size=2\]; raise beam_size"),
    (_search_options, dict(beam_size=4, groups=2), r"groups > 1 needs diversity > 0.*set e.g. diversity=0.5"),
    (_search_options, dict(beam_size=2, temperature=0.7), r"temperature=0.7 needs beam_size=1"),
    (_ctc_options, dict(beam_size=0), r"beam_size \(0\) and n_best \(1\) must be >= 1"),
    (_ctc_options, dict(beam_size=2, n_best=3), r"n_best=3 needs beam_size >= n_best"),
], ids=["beam0", "groups", "nbest", "no-diversity", "sampling-beam", "ctc-beam0", "ctc-nbest"])
def test_decoding_options(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_ctc_targets_longer_than_frames_name_the_utterance():
    from decoders.ctc import ctc

    head = ctc(in_dim=8, vocab_size=10)
    memory = Features(torch.randn(2, 3, 8), torch.tensor([3, 3]))
    targets = {"tokens": torch.tensor([[4, 5, 0, 0], [4, 4, 5, 0]]), "lengths": torch.tensor([2, 3]),
               "ids": ["utt-short", "utt-long"]}
    with pytest.raises(ValueError, match=r"utterance 'utt-long': 3 tokens \+ 1 repeats .*> 3 frames.*subsampling"):
        head(memory, targets)
    targets = {"tokens": torch.tensor([[4, 0], [4, 5]]), "lengths": torch.tensor([2, 2]), "ids": ["u0", "u1"]}
    with pytest.raises(ValueError, match=r"targets of 'u0' contain the blank id 0"):
        head(memory, targets)


def test_tokenizers_name_unknown_characters():
    from zoo.tokenizers import CharTokenizer, tokenizer_from_dict

    tok = CharTokenizer.train(["hello world"])
    with pytest.raises(ValueError, match=r"characters outside the tokenizer: \['!', 'W'\].*strict=False"):
        tok.encode("hello World!")
    assert tok.encode("hello World!", strict=False).count(tok.unk_id) == 2
    with pytest.raises(ValueError, match=r"unknown tokenizer type 'bytes'; expected 'char' or 'sentencepiece'"):
        tokenizer_from_dict({"type": "bytes"})


# --- separation -----------------------------------------------------------------------------------------
def test_unknown_query_label_lists_the_labels():
    query = pytest.importorskip("recipes.separation.query")
    nets = query.QueryNets()
    with pytest.raises(ValueError, match=r"unknown query label 'unicorn'; known labels: .*bell"):
        nets.embed(label="unicorn")
    with pytest.raises(ValueError, match=r"give exactly one query \(text, audio or label\); got \['text', 'label'\]"):
        nets.embed(text="a dog", label="dog")


def test_streaming_separation_needs_the_models_rate(tmp_path):
    from recipes.separation.longform import separate_file

    sf.write(tmp_path / "mix16k.wav", noise(1600), 16000)
    with pytest.raises(ValueError, match=r"16000 Hz but the model runs at 8000 Hz; resample the file first"):
        separate_file(lambda x: x[:, None], tmp_path / "mix16k.wav", [tmp_path / "s1.wav"], 8000, 400)
    (tmp_path / "junk.wav").write_text("junk")
    with pytest.raises(ValueError, match=r"junk.wav: cannot read audio"):
        separate_file(lambda x: x[:, None], tmp_path / "junk.wav", [tmp_path / "s1.wav"], 8000, 400)


# --- brain decoding -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def brain():
    module = pytest.importorskip("encoders.brain")
    torch.manual_seed(0)
    return module.fmri_encoder({"1": 10, "2": 12}, hidden=16, out_dim=8, depth=1, adapter_hidden=8).eval()


def test_brain_subject_without_adapter(brain):
    with pytest.raises(ValueError, match=r"subject 3 has no adapter \(known subjects: \['1', '2'\]\).*add_subject"):
        brain(torch.zeros(2, 10), torch.tensor([10, 10]), subject_ids=torch.tensor([1, 3]))
    with pytest.raises(ValueError, match=r"needs subject_ids .*conditions=\['subject_ids'\]"):
        brain(torch.zeros(2, 10), torch.tensor([10, 10]))


def test_brain_voxel_count_mismatch(brain):
    with pytest.raises(ValueError, match=r"subject 1's adapter expects 10 voxels but rows of that subject carry "
                                         r"\[11\].*same voxel mask"):
        brain(torch.zeros(2, 11), torch.tensor([11, 11]), subject_ids=torch.tensor([1, 1]))


def test_brain_nan_voxels(brain):
    x = torch.zeros(3, 12)
    x[2, 4] = float("nan")
    with pytest.raises(ValueError, match=r"subject 2 has NaN voxels \(batch rows \[2\]\).*impute them"):
        brain(x, torch.tensor([10, 12, 12]), subject_ids=torch.tensor([1, 2, 2]))
    assert torch.isfinite(brain(x[:2], torch.tensor([10, 12]), subject_ids=torch.tensor([1, 2])).x).all()


# --- subtitles and transcription ------------------------------------------------------------------------
def test_subtitle_options():
    from zoo.subtitles import CueOptions, write_transcript

    with pytest.raises(ValueError, match=r"max_line_width=0 must be >= 1; use e.g. max_line_width=42"):
        CueOptions(max_line_width=0)
    with pytest.raises(ValueError, match=r"max_line_count=-1 must be >= 1"):
        CueOptions(max_line_count=-1)
    with pytest.raises(ValueError, match=r"unknown format 'doc'; choose txt, srt, vtt or json"):
        write_transcript("x.doc", "doc", [], [])


def test_transcribe_checks_the_model_and_the_audio():
    from recipes.asr_subtitle.transcribe import AudioSource, transcribe

    with pytest.raises(ValueError, match=r"needs a CTC or hybrid 'verbatim' head .*heads \{'tags': 'frame_classifier'"):
        transcribe(toy(), torch.zeros(16000), "unused", audio_sample_rate=16000)
    with pytest.raises(ValueError, match=r"in-memory audio needs audio_sample_rate=.*pass the rate"):
        AudioSource(torch.zeros(16000), 16000)
    with pytest.raises(ValueError, match=r"sampled at 44100 Hz but the model expects 16000 Hz"):
        AudioSource(torch.zeros(44100), 16000, audio_sample_rate=44100)
    with pytest.raises(ValueError, match=r"2 channels"):
        AudioSource(torch.zeros(2, 16000), 16000, audio_sample_rate=16000)
