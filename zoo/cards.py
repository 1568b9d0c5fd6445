"""Model cards (Mitchell et al., 2019, "Model Cards for Model Reporting", §4) for saved zoo models.

A card is huggingface_hub's :class:`~huggingface_hub.ModelCard`: YAML metadata whose ``model-index``
carries the evaluation results (the format the Hub's leaderboards read), then a body with usage, the
graph's nodes, evaluation, training data, intended use and limitations.

A ``save_pretrained`` directory keeps everything needed to regenerate its card (``zoo card DIR``):
``config.json`` + ``model.safetensors`` (the graph), ``eval_results.json`` (a list of dicts with
``task_type, dataset_name, dataset_type, dataset_split, metric_type, metric_value``) and the optional
``card.json`` (``training_data``, ``intended_use``, ...). Each stored result is stamped with the sha256
of the weights it was measured on, so re-saving new weights into the directory drops stale results.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["add_eval_results", "build_card", "read_eval_results", "regenerate_card", "write_card"]

EVAL_RESULTS_NAME, CARD_META_NAME, CARD_NAME = "eval_results.json", "card.json", "README.md"
WEIGHTS_NAME = "model.safetensors"
CARD_FIELDS = ("datasets", "training_data", "intended_use", "limitations", "language", "license", "repo_id")
_DIGEST_KEY = "weights_sha256"
_RESULT_ID = ("task_type", "task_name", "dataset_name", "dataset_type", "dataset_split", "dataset_config", "metric_type")
_EVAL_FIELDS = {f.name for f in dataclasses.fields(EvalResult)}
_DEFAULT_USE = "Research on encoder-decoder models; not validated for production use."


def build_card(
    model,
    eval_results: Iterable[EvalResult | dict] | None = None,
    datasets: list[str] | None = None,
    training_data: str = "",
    intended_use: str = "",
    language: str | list[str] | None = None,
    license: str = "apache-2.0",
    limitations: str = "",
    repo_id: str | None = None,
) -> ModelCard:
    """The card of a :class:`~zoo.graph.ZooModel`; ``repo_id`` (hub id or directory) goes in the usage snippet."""
    results = [to_eval_result(r) for r in eval_results or []]
    name = model.name or type(model).__name__
    entry = _registry_entry(model.name)
    mixin = getattr(type(model), "_hub_mixin_info", None)
    tags = list(mixin.model_card_data.tags or []) if mixin else ["encdec-zoo"]
    tags += [t for t in (model.task, entry.modality if entry else None) if t and t not in tags]
    data = ModelCardData(
        model_name=name, eval_results=results or None, datasets=list(datasets or []) or None,
        language=language, license=license, library_name="encdec-zoo", tags=tags,
    )
    body = "\n\n".join([
        f"# {name}",
        _summary(model, entry),
        "## Usage\n\n" + _usage(model, entry, repo_id, mixin.repo_url if mixin else None),
        "## Graph\n\n" + _node_table(model),
        "## Evaluation\n\n" + (_results_table(results) if results else "No evaluation results recorded yet."),
        "## Training data\n\n" + (training_data or "Not documented."),
        "## Intended use\n\n" + (intended_use or _DEFAULT_USE),
        "## Limitations\n\n" + (limitations or _default_limitations(results)),
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def write_card(
    model, directory: str | Path, eval_results: Iterable[EvalResult | dict] | None = None, **kw
) -> ModelCard:
    """Write ``README.md`` (+ ``eval_results.json``, ``card.json``) into ``directory``.

    ``eval_results=None`` keeps the results already stored for the weights now in the directory;
    card fields in ``kw`` (see ``CARD_FIELDS``) are merged into ``card.json`` and persist.
    """
    unknown = sorted(set(kw) - set(CARD_FIELDS))
    if unknown:
        raise TypeError(f"write_card got unknown card fields {unknown}; known fields: {list(CARD_FIELDS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = _weights_digest(directory)
    if eval_results is None:
        stored = read_eval_results(directory)
        results = [r for r in stored if r.get(_DIGEST_KEY) in (None, digest)]
        if len(results) < len(stored):
            warnings.warn(f"{directory}: dropped {len(stored) - len(results)} evaluation result(s) measured on "
                          "other weights than the model.safetensors now there; evaluate again", stacklevel=2)
    else:
        results = [{**result_to_dict(r), **({_DIGEST_KEY: digest} if digest else {})} for r in eval_results]
    meta = {**_read_json(directory / CARD_META_NAME, {}), **{k: v for k, v in kw.items() if v is not None}}
    card = build_card(model, [{k: v for k, v in r.items() if k != _DIGEST_KEY} for r in results], **meta)
    _write_json(directory / EVAL_RESULTS_NAME, results)
    if meta:
        _write_json(directory / CARD_META_NAME, meta)
    card.save(directory / CARD_NAME)
    return card


def add_eval_results(directory: str | Path, results: Iterable[EvalResult | dict], model=None) -> list[dict]:
    """Merge ``results`` into the directory's stored ones (same task/dataset/split/metric: replaced) and
    rewrite the card. ``model`` defaults to ``ZooModel.from_pretrained(directory)``."""
    directory = Path(directory)
    model = model if model is not None else _load(directory)
    digest = _weights_digest(directory)
    merged = {_result_id(r): r for r in read_eval_results(directory) if r.get(_DIGEST_KEY) in (None, digest)}
    merged.update({_result_id(d): d for d in map(result_to_dict, results)})
    write_card(model, directory, eval_results=list(merged.values()))
    return read_eval_results(directory)


def regenerate_card(directory: str | Path, **kw) -> ModelCard:
    """Rebuild ``README.md`` from config.json + model.safetensors + eval_results.json (+ card.json)."""
    directory = Path(directory)
    return write_card(_load(directory), directory, **kw)


def read_eval_results(directory: str | Path) -> list[dict]:
    results = _read_json(Path(directory) / EVAL_RESULTS_NAME, [])
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"{Path(directory) / EVAL_RESULTS_NAME} must hold a JSON list of result objects")
    return results


def to_eval_result(result: EvalResult | dict) -> EvalResult:
    if isinstance(result, EvalResult):
        return result
    if not isinstance(result, dict):
        raise TypeError(f"an eval result must be an EvalResult or a dict, not {type(result).__name__}")
    unknown = sorted(set(result) - _EVAL_FIELDS - {_DIGEST_KEY})
    missing = sorted({"task_type", "dataset_name", "dataset_type", "metric_type", "metric_value"} - set(result))
    if unknown or missing:
        raise ValueError(f"bad eval result {result}: unknown keys {unknown}, missing keys {missing}; "
                         "use the fields of huggingface_hub.EvalResult")
    fields = {k: v for k, v in result.items() if k != _DIGEST_KEY}
    value = fields["metric_value"]
    fields["metric_value"] = value.item() if hasattr(value, "item") else value  # a tensor or numpy scalar
    return EvalResult(**fields)


def result_to_dict(result: EvalResult | dict) -> dict[str, Any]:
    r = to_eval_result(result)
    return {k: v for k, v in dataclasses.asdict(r).items() if v is not None}


# --- body sections -------------------------------------------------------------------------
def _summary(model, entry) -> str:
    doc = (entry.fn.__doc__ or "").strip().split("\n\n")[0] if entry else ""
    inputs = ", ".join(f"`{k}`" for k in model.inputs())
    heads = ", ".join(f"`{h}`" for h in model.spec_decoders)
    return (f"{' '.join(doc.split())}\n\n" if doc else "") + (
        f"An [encdec-zoo](https://github.com/encdec-zoo/encdec-zoo) model graph for task `{model.task or '-'}`: "
        f"it reads the batch keys {inputs} and has the heads {heads}.")


def _usage(model, entry, repo_id: str | None, repo_url: str | None) -> str:
    repo_id = repo_id or "<hub id or directory>"
    heads = list(model.spec_decoders)
    keys = ", ".join(f'"{k}": ...' for k in model.inputs())
    text = ("Load this checkpoint (strict: every key must match; safetensors only):\n\n```python\n"
            "from zoo import ZooModel\n\n"
            f'model = ZooModel.from_pretrained("{repo_id}")  # add revision="<commit sha>" to pin it\n'
            f"results = model.generate({{{keys}}}, heads={json.dumps(heads)})\n```")
    if entry is not None:
        github = (repo_url or "").removeprefix("https://github.com/").strip("/") or "encdec-zoo/encdec-zoo"
        pretrained = "True" if entry.pretrained_cfgs else "False"
        text += ("\n\nBuild the registered preset through torch.hub (`pretrained=True` loads the preset's default "
                 "weights, not necessarily this checkpoint):\n\n```python\nimport torch\n\n"
                 f'model = torch.hub.load("{github}", "{entry.name}", source="github", pretrained={pretrained})\n'
                 f'# from a local clone: torch.hub.load("path/to/encdec-zoo", "{entry.name}", source="local")\n```')
    return text


def _node_table(model) -> str:
    counts = model.node_parameters()
    rows = ["| node | kind | type | reads | parameters | loss weight |", "|---|---|---|---|---:|---:|"]
    for n in model.order:
        c = model.spec_encoders[n]
        rows.append(f"| {n} | encoder | `{c['type']}` | {c['input']} | {counts[f'encoder:{n}']:,} | |")
    for n, c in model.spec_decoders.items():
        src = ", ".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        weight = model.loss_weights[n]
        rows.append(f"| {n} | decoder | `{c['type']}` | {src} | {counts[f'decoder:{n}']:,} | {weight:g} |")
    total = sum(p.numel() for p in model.parameters())
    return "\n".join(rows + [f"| **total** | | | | {total:,} | |"])


def _results_table(results: list[EvalResult]) -> str:
    rows = ["| task | dataset | split | metric | value |", "|---|---|---|---|---:|"]
    for r in results:
        value = f"{r.metric_value:.4g}" if isinstance(r.metric_value, float) else str(r.metric_value)
        rows.append(f"| {r.task_type} | {r.dataset_name} | {r.dataset_split or '-'} | {r.metric_type} | {value} |")
    return "\n".join(rows)


def _default_limitations(results: list[EvalResult]) -> str:
    if not results:
        return "This checkpoint has not been evaluated; measure it on your own data before relying on it."
    names = sorted({r.dataset_name for r in results})
    return (f"Quality is only measured on {', '.join(names)}; expect it to drop on data that differs from "
            "the training data (domain, recording conditions, language, subjects).")


# --- helpers --------------------------------------------------------------------------------
def _registry_entry(name: str):
    from zoo.registry import MODELS

    return MODELS.entries.get(name) if name else None


def _result_id(result: dict) -> tuple:
    return tuple(result.get(k) for k in _RESULT_ID)


def _weights_digest(directory: Path) -> str | None:
    from zoo.hub import file_sha256

    path = directory / WEIGHTS_NAME
    return file_sha256(path) if path.is_file() else None


def _load(directory: Path):
    from zoo.graph import ZooModel

    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass a directory written by save_pretrained")
    return ZooModel.from_pretrained(str(directory))


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it") from error


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
