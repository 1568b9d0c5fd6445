"""Model cards: model-index YAML from eval results, node table, usage, stored results and regeneration."""
import json
import re

import pytest
import torch
import yaml
from huggingface_hub import EvalResult, ModelCard

from zoo import ZooModel, create_model
from zoo.cards import add_eval_results, build_card, read_eval_results, regenerate_card, write_card

RESULT = dict(task_type="frame-classification", dataset_name="ToySequences", dataset_type="toy-sequences",
              dataset_split="test", metric_type="accuracy", metric_value=0.875)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("toy_cascade", dim=16, layers=1, heads=2)


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "the card must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def test_card_yaml_carries_the_model_index(model):
    second = EvalResult(task_type="sequence-classification", dataset_type="toy-sequences",
                        dataset_name="ToySequences", dataset_split="test", metric_type="accuracy", metric_value=0.5)
    card = build_card(model, [RESULT, second], datasets=["org/toy"], language="en", license="mit")
    meta = front_matter(str(card))
    assert meta["license"] == "mit" and meta["language"] == "en" and meta["datasets"] == ["org/toy"]
    assert meta["library_name"] == "encdec-zoo" and {"encdec-zoo", "toy", "signal"} <= set(meta["tags"])
    (index,) = meta["model-index"]
    assert index["name"] == "toy_cascade"
    got = [(r["task"]["type"], r["dataset"]["name"], r["dataset"]["split"], r["metrics"][0]["type"],
            r["metrics"][0]["value"]) for r in index["results"]]
    assert got == [("frame-classification", "ToySequences", "test", "accuracy", 0.875),
                   ("sequence-classification", "ToySequences", "test", "accuracy", 0.5)]
    assert "model-index" not in front_matter(str(build_card(model)))


def test_card_body_has_usage_nodes_and_sections(model):
    body = build_card(model, [RESULT], training_data="Synthetic sequences.", intended_use="Tests.",
                      repo_id="org/toy").text
    assert 'torch.hub.load("encdec-zoo/encdec-zoo", "toy_cascade", source="github"' in body
    assert 'ZooModel.from_pretrained("org/toy")' in body
    for key, count in model.node_parameters().items():
        kind, node = key.split(":")
        row = next(line for line in body.splitlines() if line.startswith(f"| {node} | {kind} |"))
        assert f"| {count:,} |" in row
    total = sum(p.numel() for p in model.parameters())
    assert f"| **total** | | | | {total:,} |" in body
    assert "| frames | encoder | `mlp_encoder` | signal |" in body
    assert "| majority | decoder | `sequence_classifier` | context |" in body
    for section, text in [("Training data", "Synthetic sequences."), ("Intended use", "Tests."),
                          ("Limitations", "ToySequences")]:
        assert re.search(rf"## {section}\n\n[^#]*{text}", body)
    assert "| frame-classification | ToySequences | test | accuracy | 0.875 |" in body


def test_save_pretrained_writes_card_and_results_regenerate(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert read_eval_results(tmp_path) == []
    model = ZooModel.from_pretrained(tmp_path)  # config.json sorts the heads; compare like with like
    write_card(model, tmp_path, [RESULT], training_data="Synthetic.")
    stored = read_eval_results(tmp_path)
    assert [{k: v for k, v in r.items() if k != "weights_sha256"} for r in stored] == [RESULT]
    assert json.loads((tmp_path / "card.json").read_text()) == {"training_data": "Synthetic."}
    before = (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").unlink()
    regenerate_card(tmp_path)  # from config.json + model.safetensors + eval_results.json + card.json
    assert (tmp_path / "README.md").read_text() == before
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.eval_results[0].metric_value == 0.875


def test_add_eval_results_merges_and_replaces(model, tmp_path):
    model.save_pretrained(tmp_path)
    add_eval_results(tmp_path, [RESULT], model=model)
    newer = {**RESULT, "metric_value": 0.9}
    other = {**RESULT, "dataset_split": "validation", "metric_value": 0.7}
    results = add_eval_results(tmp_path, [newer, other])  # loads the model from the directory
    assert sorted((r["dataset_split"], r["metric_value"]) for r in results) == [("test", 0.9), ("validation", 0.7)]
    values = [r["metrics"][0]["value"] for r in front_matter((tmp_path / "README.md").read_text())
              ["model-index"][0]["results"]]
    assert sorted(values) == [0.7, 0.9]


def test_results_of_replaced_weights_are_dropped(model, tmp_path):
    model.save_pretrained(tmp_path)
    add_eval_results(tmp_path, [RESULT], model=model)
    model.save_pretrained(tmp_path)  # same weights: the results still apply
    assert len(read_eval_results(tmp_path)) == 1
    with torch.no_grad():
        model.decoders["tags"].proj.bias.add_(1.0)
    with pytest.warns(UserWarning, match="dropped 1 evaluation result"):
        model.save_pretrained(tmp_path)
    assert read_eval_results(tmp_path) == []
    assert "model-index" not in front_matter((tmp_path / "README.md").read_text())


def test_bad_results_and_fields_are_rejected(model, tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['score'\], missing keys \['metric_value'\]"):
        build_card(model, [{**{k: v for k, v in RESULT.items() if k != "metric_value"}, "score": 1}])
    with pytest.raises(TypeError, match="unknown card fields \\['trainig_data'\\]"):
        write_card(model, tmp_path, trainig_data="typo")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        regenerate_card(tmp_path / "empty")
