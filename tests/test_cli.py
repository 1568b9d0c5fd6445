"""The ``zoo`` command line: list, info, train/eval dispatch, card, recipe verbs and error handling."""
import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

import recipes
from zoo import UnknownNameError, create_model, list_encoders
from zoo.cli import main
from zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def zoo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=ROOT, env=env, capture_output=True, check=False,
                          text=True, timeout=120)


def test_list_and_info_in_a_subprocess():
    listed = zoo("list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == MODELS.list() and "toy_cascade" in names
    info = zoo("info", "toy_cascade")
    assert info.returncode == 0, info.stderr
    model = create_model("toy_cascade")
    for key, count in model.node_parameters().items():
        node = key.split(":")[1]
        assert any(node in line and f"{count:,} params" in line for line in info.stdout.splitlines())
    assert "inputs: signal" in info.stdout and "pretrained tags: none" in info.stdout
    assert "dim: 'int' = 64" in info.stdout  # the preset's signature


def test_misspelt_name_exits_2_with_a_suggestion():
    out = zoo("info", "toy_cascde")
    assert out.returncode == 2
    assert "Did you mean: toy_cascade" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(UnknownNameError, match="Did you mean: toy_cascade"):
        create_model("toy_cascde")


def test_the_same_errors_through_main(capsys):
    assert main(["info", "toy_cascde"]) == 2
    assert "error: unknown model, encoder or decoder 'toy_cascde'. Did you mean: toy_cascade" in capsys.readouterr().err
    assert main(["info", "mlp_encodr"]) == 2
    assert "mlp_encoder" in capsys.readouterr().err
    assert main(["info", "toy_cascade.nope"]) == 2
    assert "no pretrained tag 'nope'" in capsys.readouterr().err
    assert main(["card", "/nonexistent/dir"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(UnknownNameError):
        main(["--traceback", "info", "toy_cascde"])


def test_list_filters(capsys):
    assert main(["list", "toy*", "--task", "toy"]) == 0
    assert capsys.readouterr().out.split()[0] == "toy_cascade"
    assert main(["list", "--kind", "encoders", "*transformer*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list_encoders("*transformer*")
    assert main(["list", "toy*", "--modality", "audio"]) == 1


def test_info_on_a_component_prints_signature_and_doc(capsys):
    assert main(["info", "frame_classifier"]) == 0
    out = capsys.readouterr().out
    assert "decoder frame_classifier(in_dim: 'int', num_classes: 'int')" in out and "cross-entropy" in out


@pytest.fixture
def fake_recipe(monkeypatch):
    """A recipe ``_clitest`` with train.py, evaluate.py and a cli.py adding the verb ``clitest-hello``."""
    calls = []

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)

    def add_commands(sub):
        p = sub.add_parser("clitest-hello")
        p.add_argument("--who", default="zoo")
        p.set_defaults(func=lambda a: calls.append(("hello", a.who)) or 0)

    module("recipes._clitest")
    module("recipes._clitest.train", main=lambda argv: calls.append(("train", argv)) or 0)
    module("recipes._clitest.evaluate", main=lambda argv: calls.append(("eval", argv)) or 3)
    module("recipes._clitest.cli", add_commands=add_commands)
    monkeypatch.setattr(recipes, "RECIPES", [*recipes.RECIPES, "_clitest"])
    return calls


def test_train_and_eval_dispatch_to_the_recipe(fake_recipe, capsys):
    assert main(["train", "_clitest", "--epochs", "2", "--out", "x"]) == 0
    assert main(["eval", "_clitest", "--model", "d"]) == 3  # the recipe's exit code
    assert main(["clitest-hello", "--who", "me"]) == 0
    assert fake_recipe == [("train", ["--epochs", "2", "--out", "x"]), ("eval", ["--model", "d"]), ("hello", "me")]
    assert main(["train"]) == 0
    assert "_clitest" in capsys.readouterr().out
    assert main(["train", "_clitest_"]) == 2
    assert "Did you mean: _clitest" in capsys.readouterr().err


def test_eval_toy_writes_results_into_the_card(tmp_path, capsys):
    torch.manual_seed(0)
    create_model("toy_cascade", dim=16, layers=1, heads=2).save_pretrained(tmp_path)
    assert main(["eval", "toy", "--model", str(tmp_path), "--size", "24", "--seed", "5"]) == 0
    table = capsys.readouterr().out
    readme = (tmp_path / "README.md").read_text()
    results = yaml.safe_load(readme.split("---")[1])["model-index"][0]["results"]
    assert {r["task"]["type"] for r in results} == {"frame-classification", "sequence-classification"}
    for r in results:
        assert r["dataset"]["split"] == "seed-5"
        assert f"{r['metrics'][0]['value']:.4f}" in table
    assert main(["card", str(tmp_path), "--training-data", "Toy sequences, seed 0."]) == 0
    assert "Toy sequences, seed 0." in (tmp_path / "README.md").read_text()
    assert yaml.safe_load((tmp_path / "README.md").read_text().split("---")[1])["model-index"][0]["results"] == results


def test_toy_accuracy_matches_the_heads_logits():
    from recipes.toy.data import ToySequences, collate
    from recipes.toy.evaluate import evaluate

    torch.manual_seed(1)
    model = create_model("toy_cascade", dim=16, layers=1, heads=2).eval()
    data = ToySequences(20, seed=9)
    scores = evaluate(model, data, batch_size=7)
    with torch.no_grad():
        out = model(collate([data[i] for i in range(len(data))]))
    labels = torch.cat([it["tags"] for it in data.items])
    frames = torch.cat([lg[: len(it["tags"])] for lg, it in zip(out.outputs["tags"].logits, data.items)])
    assert scores["tags"] == {"accuracy": (frames.argmax(-1) == labels).sum().item() / len(labels),
                              "count": len(labels)}
    majority = torch.stack([it["majority"] for it in data.items])
    hits = (out.outputs["majority"].logits.argmax(-1) == majority).sum().item()
    assert scores["majority"] == {"accuracy": hits / len(data), "count": len(data)}
