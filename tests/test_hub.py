"""Saving and loading weights: bit-identical round trips (local dir, offline HF cache, pinned revision),
strict key checking, refusal of code-running pickles, sha256-checked URLs and registered pretrained tags."""
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from recipes.toy.data import ToySequences, collate
from zoo import PretrainedCfg, ZooModel, create_model
from zoo.hub import CheckpointError, load_state_dict, load_weights, resolve_weights_file
from zoo.registry import MODELS

SMALL = dict(dim=16, layers=1, heads=2)



def toy(seed: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    return create_model("toy_cascade", **SMALL).eval()


def batch():
    return collate([ToySequences(5, seed=11)[i] for i in range(5)])


def outputs(model: ZooModel) -> list[torch.Tensor]:
    """Every encoder's features, both heads' predictions and the training loss, for one fixed batch."""
    b = batch()
    with torch.no_grad():
        feats = model.encode(b)
        gen = model.generate(b)
        loss = model(b).loss
    return [feats["frames"].x, feats["context"].x, *gen["tags"], gen["majority"], loss]


def assert_same(a: ZooModel, b: ZooModel) -> None:
    assert all(torch.equal(x, y) for x, y in zip(outputs(a), outputs(b), strict=True))


def test_local_round_trip_is_bit_identical(tmp_path):
    model = toy()
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    loaded = ZooModel.from_pretrained(tmp_path)
    assert_same(model, loaded)
    assert not torch.equal(outputs(toy(seed=1))[1], outputs(loaded)[1])  # the check can tell weights apart


def write_hf_cache(cache: Path, repo_id: str, commits: dict[str, Path], main: str) -> None:
    """The huggingface_hub cache layout: blobs named by content hash, snapshots/<commit>/ linking them."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(main)
    for commit, source in commits.items():
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in source.iterdir():
            blob = root / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
            shutil.copyfile(file, blob)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """Two commits of ``zoo-test/toy`` (main = the second) in a private cache; the hub is offline."""
    from huggingface_hub import constants

    first, second = toy(seed=0), toy(seed=1)
    first.save_pretrained(tmp_path / "v1")
    second.save_pretrained(tmp_path / "v2")
    sha1, sha2 = "1" * 40, "2" * 40
    cache = tmp_path / "hub"
    write_hf_cache(cache, "zoo-test/toy", {sha1: tmp_path / "v1", sha2: tmp_path / "v2"}, main=sha2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # constants are read once, at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return dict(cache=cache, first=first, second=second, sha1=sha1, sha2=sha2)


def test_offline_hf_cache_round_trip(offline_cache):
    c = offline_cache
    assert_same(ZooModel.from_pretrained("zoo-test/toy", cache_dir=c["cache"]), c["second"])
    assert_same(ZooModel.from_pretrained("zoo-test/toy"), c["second"])  # through HF_HUB_CACHE


def test_pinned_revision_loads_that_commit(offline_cache):
    c = offline_cache
    assert_same(ZooModel.from_pretrained("zoo-test/toy", revision=c["sha1"], cache_dir=c["cache"]), c["first"])
    assert_same(ZooModel.from_pretrained("zoo-test/toy", revision=c["sha2"], cache_dir=c["cache"]), c["second"])
    path = resolve_weights_file("hf-hub:zoo-test/toy", revision=c["sha1"], cache_dir=str(c["cache"]))
    assert c["sha1"] in str(path)


def test_unknown_revision_fails_clearly(offline_cache):
    unknown = "3" * 40
    with pytest.raises((CheckpointError, FileNotFoundError), match="cache|revision"):
        ZooModel.from_pretrained("zoo-test/toy", revision=unknown, cache_dir=offline_cache["cache"])
    with pytest.raises(CheckpointError, match=f"revision {unknown}.*HF_HUB_OFFLINE"):
        resolve_weights_file("hf-hub:zoo-test/toy", revision=unknown, cache_dir=str(offline_cache["cache"]))


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_mismatched_keys_are_named(tmp_path, change):
    toy().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = "decoders.majority.proj.bias"
    if change == "missing":
        del state[key]
    else:
        key = "decoders.majority.extra_weight"
        state[key] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"{change} keys \[{key}\]"):
        ZooModel.from_pretrained(tmp_path)  # strict is the default
    loaded = ZooModel.from_pretrained(tmp_path, strict=False)
    if change == "unexpected":
        assert_same(loaded, toy())


MISMATCH = r"shape mismatches \[decoders.majority.proj.weight: checkpoint \(4, 16\) vs model \(4, 64\)"


def test_shape_mismatch_names_the_key_even_when_not_strict(tmp_path):
    toy().save_pretrained(tmp_path)  # width 16; the preset's default is 64
    state = load_state_dict(tmp_path / "model.safetensors")
    for strict in (True, False):
        with pytest.raises(CheckpointError, match=MISMATCH):
            load_weights(create_model("toy_cascade"), state, strict=strict)


class RunsCode:
    """Unpickling this would run a shell command creating ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_code_running_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    model = toy()
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    payload = {**model.state_dict(), "decoders.tags.proj.bias": RunsCode(marker)}
    path = tmp_path / "ckpt" / "pytorch_model.bin"
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused to load .*pytorch_model.bin"):
        ZooModel.from_pretrained(tmp_path / "ckpt")
    assert not marker.exists()


def test_plain_tensor_pickle_loads(tmp_path):
    model = toy()
    model.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    assert_same(ZooModel.from_pretrained(tmp_path), model)


def test_url_needs_the_right_sha256(tmp_path):
    model = toy()
    model.save_pretrained(tmp_path / "src")
    weights = tmp_path / "src" / "model.safetensors"
    url, digest = weights.as_uri(), hashlib.sha256(weights.read_bytes()).hexdigest()
    path = resolve_weights_file(url, sha256=digest, cache_dir=str(tmp_path / "dl"))
    assert path.read_bytes() == weights.read_bytes()
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        resolve_weights_file(url, sha256="0" * 64, cache_dir=str(tmp_path / "dl"))
    assert [p.name for p in (tmp_path / "dl" / "checkpoints").iterdir()] == [path.name]  # bad file removed
    with pytest.raises(CheckpointError, match="without a sha256"):
        resolve_weights_file(url, cache_dir=str(tmp_path / "dl"))


@pytest.fixture
def pretrained_tag():
    """Registers ``toy_cascade.<tag>`` configs for one test and removes them afterwards."""
    added = []

    def add(tag: str, cfg: PretrainedCfg) -> str:
        MODELS.add_pretrained("toy_cascade", tag, cfg)
        added.append(tag)
        return f"toy_cascade.{tag}"

    yield add
    for tag in added:
        MODELS.get("toy_cascade").pretrained_cfgs.pop(tag)


def test_create_model_loads_a_registered_local_tag(tmp_path, pretrained_tag):
    model = toy(seed=5)
    model.save_pretrained(tmp_path)
    name = pretrained_tag("hubtest_local", PretrainedCfg(local_dir=str(tmp_path)))
    assert name in MODELS.list(pretrained=True)
    assert_same(create_model(name, pretrained=True, **SMALL).eval(), model)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        create_model(name, pretrained=True)  # the preset's default width does not fit these weights


def test_create_model_loads_a_registered_url_tag(tmp_path, pretrained_tag, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    model = toy(seed=6)
    model.save_pretrained(tmp_path / "src")
    weights = tmp_path / "src" / "model.safetensors"
    good = pretrained_tag("hubtest_url", PretrainedCfg(
        url=weights.as_uri(), sha256=hashlib.sha256(weights.read_bytes()).hexdigest()))
    bad = pretrained_tag("hubtest_badurl", PretrainedCfg(url=weights.as_uri(), sha256="f" * 64))
    assert_same(create_model(good, pretrained=True, **SMALL).eval(), model)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        create_model(bad, pretrained=True, **SMALL)
