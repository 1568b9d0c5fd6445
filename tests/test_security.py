"""A pickle that would run code is refused on every path that loads weights, and the package never trusts
remote code or unpickles arbitrary objects.

The malicious checkpoint holds an object whose ``__reduce__`` runs ``touch MARKER``; each loader must raise a
clear :class:`CheckpointError` and the marker must never appear.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from zoo import PretrainedCfg, ZooModel, create_model
from zoo.hub import CheckpointError, load_state_dict
from zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dim=16, layers=1, heads=2)
REFUSED = r"refused to load .*it is a pickle that needs code to be run"
PACKAGE_DIRS = ["zoo", "encoders", "decoders", "recipes", "benchmarks", "scripts"]


class RunsCode:
    """Unpickling this runs a shell command creating ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_malicious(path: Path, state: dict, marker: Path, writer: str = "torch.save") -> Path:
    """``state`` with one tensor replaced by a code-running object, as a torch zip or a raw pickle."""
    key = next(iter(state))
    payload = {**state, key: RunsCode(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle ran code while being loaded"


def toy() -> ZooModel:
    torch.manual_seed(0)
    return create_model("toy_cascade", **SMALL)


@pytest.fixture
def tag():
    """Register ``<model>.<tag>`` configs for one test; removed afterwards."""
    added = []

    def add(model: str, name: str, cfg: PretrainedCfg) -> str:
        MODELS.add_pretrained(model, name, cfg)
        added.append((model, name))
        return f"{model}.{name}"

    yield add
    for model, name in added:
        MODELS.get(model).pretrained_cfgs.pop(name)


# --- every weight-loading path --------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_load_state_dict_refuses(tmp_path, marker, writer):
    path = write_malicious(tmp_path / "w.bin", toy().state_dict(), marker, writer)
    with pytest.raises(CheckpointError, match=REFUSED):
        load_state_dict(path)
    torch.save(toy().state_dict(), tmp_path / "plain.bin")  # the same loader reads a plain tensor pickle
    assert torch.equal(load_state_dict(tmp_path / "plain.bin")["decoders.tags.proj.weight"],
                       toy().state_dict()["decoders.tags.proj.weight"])


def test_from_pretrained_refuses(tmp_path, marker):
    model = toy()
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    write_malicious(tmp_path / "m" / "pytorch_model.bin", model.state_dict(), marker)
    with pytest.raises(CheckpointError, match=REFUSED):
        ZooModel.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()  # only pytorch_model.bin left
    with pytest.raises(CheckpointError, match="no usable config.json"):
        ZooModel.from_pretrained(tmp_path / "m")


def test_create_model_with_a_local_tag_refuses(tmp_path, marker, tag):
    write_malicious(tmp_path / "w" / "pytorch_model.bin", toy().state_dict(), marker)
    name = tag("toy_cascade", "sectest_local", PretrainedCfg(local_dir=str(tmp_path / "w")))
    with pytest.raises(CheckpointError, match=REFUSED):
        create_model(name, pretrained=True, **SMALL)


def test_torch_hub_load_local_refuses(tmp_path, marker, tag):
    write_malicious(tmp_path / "w" / "pytorch_model.bin", toy().state_dict(), marker)
    tag("toy_cascade", "sectest_hub", PretrainedCfg(local_dir=str(tmp_path / "w"), filename="pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=REFUSED):
        torch.hub.load(str(ROOT), "toy_cascade", source="local", pretrained=True, tag="sectest_hub", **SMALL)


def test_trainer_resume_refuses(tmp_path, marker):
    from recipes.toy.data import ToySequences, collate
    from zoo.checkpoint import load_checkpoint
    from zoo.train import TrainConfig, Trainer

    out = tmp_path / "run"
    payload = {"model": toy().state_dict(), "step": 5}
    path = out / "checkpoints" / "step-00000005.pt"
    path.parent.mkdir(parents=True)
    torch.save({**payload, "step": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint .*safely \(weights_only=True\)"):
        load_checkpoint(path)
    trainer = Trainer(toy(), ToySequences(8, seed=0), collate,
                      TrainConfig(steps=6, batch_size=4, out_dir=str(out), tensorboard=False, progress=False))
    with pytest.raises(CheckpointError, match=r"step-00000005.pt safely"):
        trainer.fit(resume=True)


def test_separation_converter_tag_refuses(tmp_path, marker, tag):
    pytest.importorskip("recipes.separation.convert")
    write_malicious(tmp_path / "w" / "model.pt", {"encoder.weight": torch.zeros(1)}, marker)
    name = tag("conv_tasnet_tiny", "sectest_convert", PretrainedCfg(
        local_dir=str(tmp_path / "w"), filename="model.pt",
        converter="recipes.separation.convert:convert_torchaudio_convtasnet"))
    with pytest.raises(CheckpointError, match=REFUSED):
        create_model(name, pretrained=True)


def test_wav2vec2_converter_refuses(tmp_path, marker):
    convert = pytest.importorskip("recipes.asr_subtitle.convert_wav2vec2")
    from transformers import Wav2Vec2Config

    Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                   conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                   num_conv_pos_embedding_groups=2, vocab_size=12).save_pretrained(tmp_path / "w2v")
    write_malicious(tmp_path / "w2v" / "pytorch_model.bin", {"lm_head.weight": torch.zeros(12, 16)}, marker)
    with pytest.raises(CheckpointError, match=REFUSED):
        convert.from_transformers_wav2vec2_ctc(tmp_path / "w2v")


def test_whisper_converter_refuses(tmp_path, marker):
    convert = pytest.importorskip("recipes.asr_subtitle.convert_whisper")
    from transformers import WhisperConfig

    WhisperConfig(vocab_size=64, num_mel_bins=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, d_model=16,
                  max_source_positions=16, max_target_positions=16, decoder_start_token_id=1, eos_token_id=2,
                  pad_token_id=2, bos_token_id=1).save_pretrained(tmp_path / "whisper")
    write_malicious(tmp_path / "whisper" / "pytorch_model.bin", {"proj_out.weight": torch.zeros(64, 16)}, marker)
    assert json.loads((tmp_path / "whisper" / "config.json").read_text())["model_type"] == "whisper"
    with pytest.raises(CheckpointError, match=REFUSED):
        convert.from_transformers_whisper(tmp_path / "whisper")


# --- static checks over the package ---------------------------------------------------------------------
def package_files() -> list[Path]:
    files = [ROOT / "hubconf.py"]
    for d in PACKAGE_DIRS:
        files += sorted((ROOT / d).rglob("*.py")) if (ROOT / d).is_dir() else []
    return files


def test_the_scan_sees_the_package():
    names = {p.relative_to(ROOT).as_posix() for p in package_files()}
    assert {"zoo/hub.py", "zoo/checkpoint.py", "hubconf.py", "encoders/text.py"} <= names


def test_no_file_trusts_remote_code():
    pattern = re.compile(r"trust_remote_code\s*=\s*True")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in package_files()
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"trust_remote_code=True in {offenders}"
    assert pattern.search("AutoModel.from_pretrained(x, trust_remote_code = True)")  # the pattern can fire


def unsafe_loads(source: str) -> list[str]:
    """``torch.load`` without ``weights_only=True``, ``np.load(allow_pickle=True)``, ``pickle.load(s)``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        const = lambda key: isinstance(kwargs.get(key), ast.Constant) and kwargs[key].value is True  # noqa: E731
        if name.endswith("torch.load") or name == "load" and "map_location" in kwargs:
            if not const("weights_only"):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif name in ("np.load", "numpy.load") and const("allow_pickle"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_every_torch_load_passes_weights_only():
    offenders = {str(p.relative_to(ROOT)): bad for p in package_files()
                 if (bad := unsafe_loads(p.read_text(encoding="utf-8")))}
    assert not offenders, offenders
    assert sum("torch.load(" in p.read_text(encoding="utf-8") for p in package_files()) >= 2  # hub + checkpoint
    # the checker catches what it must
    assert unsafe_loads("torch.load(f)") and unsafe_loads("torch.load(f, weights_only=False)")
    assert unsafe_loads("np.load(f, allow_pickle=True)") and unsafe_loads("pickle.loads(b)")
    assert not unsafe_loads("torch.load(f, map_location='cpu', weights_only=True)\nnp.load(f)")


def test_every_hub_pretrained_config_pins_a_commit():
    """A hub weight download is reproducible only at a fixed commit: every ``hf_hub_id`` carries a sha."""
    import re

    from zoo.registry import get_pretrained_cfg, list_encoders, list_models

    names = list_models(pretrained=True) + list_encoders(pretrained=True)
    assert names, "no pretrained tags registered: the check would pass vacuously"
    for name in names:
        cfg = get_pretrained_cfg(name)
        if cfg.hf_hub_id:
            assert cfg.revision and re.fullmatch(r"[0-9a-f]{40}", cfg.revision), f"{name}: revision {cfg.revision!r}"
