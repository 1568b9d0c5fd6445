"""The model graph: named encoder nodes (a node's input is a batch modality or another encoder,
so encoders cascade) and named decoder heads (each reading one or several encoders), built into
one :class:`ZooModel` whose config.json *is* the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from zoo.contract import DecoderOutput, Features, Hypothesis, select_rows
from zoo.registry import create_decoder, create_encoder


@dataclass
class Node:
    """One node of a :class:`ModelSpec`: a registered component name plus its keyword arguments.

    Encoders set ``input`` (a batch key such as ``"audio"``, or another encoder's name) and may
    name batch keys passed as ``conditions`` (e.g. ``subject_ids``). Decoders set ``source``:
    one encoder name, or a list of names (the decoder then receives a list of Features).
    """

    type: str
    input: str | None = None
    source: str | list[str] | None = None
    conditions: list[str] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, type: str, input=None, source=None, conditions=(), **kwargs):
        self.type, self.input, self.source = type, input, source
        self.conditions, self.kwargs = list(conditions), dict(kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type}
        if self.input is not None:
            out["input"] = self.input
        if self.source is not None:
            out["source"] = self.source
        if self.conditions:
            out["conditions"] = list(self.conditions)
        return {**out, **self.kwargs}


@dataclass
class ModelSpec:
    """A declaration of encoders, decoders and per-head loss weights (default 1.0)."""

    encoders: dict[str, Node]
    decoders: dict[str, Node]
    loss_weights: dict[str, float] = field(default_factory=dict)
    task: str = ""
    name: str = ""

    def to_config(self) -> dict[str, Any]:
        return dict(
            encoders={k: n.to_dict() for k, n in self.encoders.items()},
            decoders={k: n.to_dict() for k, n in self.decoders.items()},
            loss_weights=dict(self.loss_weights), task=self.task, name=self.name,
            head_order=list(self.decoders),
        )

    def build(self) -> "ZooModel":
        return ZooModel(**self.to_config())


@dataclass
class ModelOutput:
    loss: Tensor                                  # weighted sum over the heads that trained
    losses: dict[str, Tensor]                     # per head, unweighted
    outputs: dict[str, DecoderOutput]             # per head, on the rows that carried its labels
    rows: dict[str, Tensor]                       # per head, which batch rows it trained on
    features: dict[str, Features]                 # per encoder


_NODE_KEYS = ("type", "input", "source", "conditions")


class ZooModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="encdec-zoo",
    tags=["encdec-zoo"],
    repo_url="https://github.com/encdec-zoo/encdec-zoo",
):
    """Encoders run in dependency order; every decoder reads its source encoder(s).

    The constructor arguments are JSON and become config.json through ``PyTorchModelHubMixin``.
    """

    def __init__(
        self,
        encoders: dict[str, dict[str, Any]],
        decoders: dict[str, dict[str, Any]],
        loss_weights: dict[str, float] | None = None,
        task: str = "",
        name: str = "",
        meta: dict[str, Any] | None = None,
        head_order: list[str] | None = None,
    ):
        super().__init__()
        if head_order is not None:  # config.json stores dicts with sorted keys; keep the declared order
            if sorted(head_order) != sorted(decoders):
                raise ValueError(f"head_order {head_order} does not name the decoders {sorted(decoders)}")
            decoders = {h: decoders[h] for h in head_order}
        self.spec_encoders, self.spec_decoders = encoders, decoders
        self.loss_weights = {h: float((loss_weights or {}).get(h, 1.0)) for h in decoders}
        self.task, self.name, self.meta = task, name, dict(meta or {})
        self._tokenizers: dict[str, Any] = {}
        self.order = _topological_order(encoders)
        self.encoders = nn.ModuleDict(
            {n: create_encoder(c["type"], **_kwargs(c)) for n, c in encoders.items()}
        )
        for head, cfg in decoders.items():
            for src in _sources(cfg, head):
                if src not in encoders:
                    raise ValueError(f"decoder '{head}' reads unknown encoder '{src}'; encoders: {list(encoders)}")
        self.decoders = nn.ModuleDict({n: create_decoder(c["type"], **_kwargs(c)) for n, c in decoders.items()})

    # --- running the graph -------------------------------------------------------------------
    def inputs(self) -> list[str]:
        """Batch keys the graph reads (modalities and conditions)."""
        keys = {c["input"] for n, c in self.spec_encoders.items() if _upstream(self.spec_encoders, n) is None}
        keys |= {k for c in self.spec_encoders.values() for k in c.get("conditions", [])}
        return sorted(keys)

    def encode(self, batch: dict[str, Any], needed: set[str] | None = None) -> dict[str, Features]:
        """Run the encoders (all, or those ``needed`` and their ancestors) in dependency order."""
        needed = set(self.order) if needed is None else self._ancestors(needed)
        feats: dict[str, Features] = {}
        for name in self.order:
            if name not in needed:
                continue
            cfg = self.spec_encoders[name]
            src, upstream = cfg["input"], _upstream(self.spec_encoders, name)
            if upstream is not None:
                inputs, lengths = feats[upstream].x, feats[upstream].lengths
            else:
                if src not in batch:
                    raise KeyError(
                        f"encoder '{name}' reads batch['{src}'] but the batch has keys {sorted(batch)}; "
                        f"this model needs inputs {self.inputs()}"
                    )
                inputs, lengths = batch[src], batch.get(f"{src}_lengths")
            conditions = {k: batch[k] for k in cfg.get("conditions", [])}
            feats[name] = self.encoders[name](inputs, lengths, **conditions)
        return feats

    def memory(self, feats: dict[str, Features], head: str) -> Features | list[Features]:
        src = self.spec_decoders[head]["source"]
        return [feats[s] for s in src] if isinstance(src, list) else feats[src]

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Per-head losses on the rows that carry that head's labels (``targets[head]['present']``)."""
        all_targets: dict[str, dict[str, Tensor]] = batch.get("targets", {})
        heads = [h for h in self.decoders if h in all_targets]
        if not heads:
            raise ValueError(
                f"batch carries no targets for any head; heads are {list(self.decoders)}, "
                f"targets given for {list(all_targets)}"
            )
        feats = self.encode(batch, needed={s for h in heads for s in _sources(self.spec_decoders[h], h)})
        losses, outputs, rows = {}, {}, {}
        total = None
        for head in heads:
            targets = dict(all_targets[head])
            present = targets.pop("present", None)
            memory = self.memory(feats, head)
            if present is not None:
                index = present.nonzero().squeeze(1)
                if index.numel() == 0:
                    continue
                if index.numel() < present.numel():
                    memory, targets = select_rows(memory, index), select_rows(targets, index)
            else:
                index = torch.arange(_batch_size(memory), device=_device(memory))
            out = self.decoders[head](memory, targets)
            losses[head], outputs[head], rows[head] = out.loss, out, index
            weighted = self.loss_weights[head] * out.loss
            total = weighted if total is None else total + weighted
        if total is None:
            # no row carries any head's label: a zero loss still connected to every parameter, so that a
            # DDP rank holding such a batch joins the gradient all-reduce instead of stalling the others
            total = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        return ModelOutput(total, losses, outputs, rows, feats)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], heads: list[str] | str | None = None, options: Any = None) -> dict[str, Any]:
        """Decode with each head in ``heads`` (default all); ``options`` is one object or a dict per head.

        A head whose ``DecodingOptions.draft`` names another head decodes speculatively from that head's
        hypothesis of the same input, copied through text (CopySpec across heads: a subtitle head drafted by the
        verbatim transcript). Its tokens are greedy's; the other head is decoded first."""
        heads = [heads] if isinstance(heads, str) else list(heads or self.decoders)
        for h in heads:
            if h not in self.decoders:
                raise KeyError(f"unknown head '{h}'; this model has heads {list(self.decoders)}")
        per_head = {h: options.get(h) if isinstance(options, dict) else options for h in self.decoders}
        order = self._drafts_first(heads, per_head)
        feats = self.encode(batch, needed={s for h in order for s in _sources(self.spec_decoders[h], h)})
        results = {}
        for head in order:
            opts, source = per_head[head], self._draft_head(per_head[head])
            if source is not None:
                opts = replace(opts, draft=self.copy_drafter(source, head, results[source]))
            results[head] = self.decoders[head].decode(self.memory(feats, head), opts)
            tokenizer = self.tokenizer(head)
            if tokenizer is not None:
                _fill_text(results[head], tokenizer)
        return {h: results[h] for h in heads}

    def _draft_head(self, options: Any) -> str | None:
        draft = getattr(options, "draft", None)
        return draft if isinstance(draft, str) and draft in self.decoders else None

    def _drafts_first(self, heads: list[str], per_head: dict[str, Any]) -> list[str]:
        """``heads`` and the heads they draft from, each after the head it drafts from."""
        order: list[str] = []

        def visit(head: str, path: tuple[str, ...]) -> None:
            if head in path:
                raise ValueError(f"heads draft from each other in a cycle: {' -> '.join((*path, head))}; give one "
                                 "of them no draft (a head's options are shared when options is not a dict per head)")
            source = self._draft_head(per_head[head])
            if source is not None:
                visit(source, (*path, head))
            if head not in order:
                order.append(head)

        for h in heads:
            visit(h, ())
        return order

    def copy_drafter(self, source: str, target: str, hyps: list, k: int = 8):
        """A copy drafter for head ``target`` from head ``source``'s hypotheses: token ids when both heads share
        a tokenizer, else through text (the subtitle re-cases the verbatim text: matched case-insensitively)."""
        from decoders.drafters import CopyDrafter, TokenCopyDrafter

        specs = self.meta.get("tokenizers", {})
        if source not in specs or target not in specs:
            raise ValueError(f"draft={source!r} for head {target!r} copies text between heads: both need a tokenizer "
                             f"stored with the model (meta['tokenizers']); this model has {sorted(specs)}")
        hyps = [h[0] if isinstance(h, list) else h for h in hyps]  # n-best: the best
        if specs[source] == specs[target]:
            return TokenCopyDrafter.from_hypotheses(hyps, k=k)
        return CopyDrafter.from_hypotheses(hyps, self.tokenizer(source), self.tokenizer(target), k=k)

    def tokenizer(self, head: str):
        """The tokenizer stored with the model for a text head (``meta['tokenizers'][head]``), or None."""
        spec = self.meta.get("tokenizers", {}).get(head)
        if spec is None:
            return None
        if head not in self._tokenizers:
            from zoo.tokenizers import tokenizer_from_dict

            self._tokenizers[head] = tokenizer_from_dict(spec)
        return self._tokenizers[head]

    # --- introspection -----------------------------------------------------------------------
    def node_parameters(self) -> dict[str, int]:
        counts = {f"encoder:{n}": _count(m) for n, m in self.encoders.items()}
        counts.update({f"decoder:{n}": _count(m) for n, m in self.decoders.items()})
        return counts

    def describe(self) -> str:
        lines = [f"{self.name or type(self).__name__} (task: {self.task or '-'}), inputs: {', '.join(self.inputs())}"]
        for n in self.order:
            c = self.spec_encoders[n]
            lines.append(f"  encoder {n:<14} {c['type']:<24} <- {c['input']:<12} {_count(self.encoders[n]):>12,} params")
        for n, c in self.spec_decoders.items():
            src = ", ".join(_sources(c, n))
            lines.append(f"  decoder {n:<14} {c['type']:<24} <- {src:<12} {_count(self.decoders[n]):>12,} params"
                         f"  (loss weight {self.loss_weights[n]})")
        lines.append(f"  total {_count(self):,} parameters")
        return "\n".join(lines)

    def _ancestors(self, names: set[str]) -> set[str]:
        out, stack = set(), list(names)
        while stack:
            n = stack.pop()
            if n in out:
                continue
            out.add(n)
            upstream = _upstream(self.spec_encoders, n)
            if upstream is not None:
                stack.append(upstream)
        return out

    # --- hub: strict, safe loading -----------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None, **kwargs) -> "ZooModel":
        """Load from a local dir or a hub repo id (strict by default; pin ``revision`` to a commit sha)."""
        from huggingface_hub.errors import (
            EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
        )

        from zoo.hub import CheckpointError

        try:
            return super().from_pretrained(pretrained_model_name_or_path, revision=revision, **kwargs)
        except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise CheckpointError(
                f"cannot load {str(pretrained_model_name_or_path)!r} at revision {revision or 'main'}: "
                f"{type(error).__name__}: {str(error).splitlines()[0]}. Check the repo id and revision, or "
                "download it once online (HF_HUB_OFFLINE=1 only reads the local cache)."
            ) from error

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        from zoo.hub import CheckpointError, load_state_dict, load_weights, resolve_weights_file

        if "encoders" not in model_kwargs or "decoders" not in model_kwargs:
            raise CheckpointError(
                f"{model_id}: no usable config.json (it must name 'encoders' and 'decoders'); "
                "save models with ZooModel.save_pretrained"
            )
        model = cls(**model_kwargs)
        path = resolve_weights_file(model_id, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only)
        load_weights(model, load_state_dict(path, map_location), strict=strict, source=str(path))
        return model.eval()

    def save_pretrained(self, save_directory: str | Path, **kwargs):
        """The mixin's save (config.json + model.safetensors), plus the zoo's own model card."""
        out = super().save_pretrained(save_directory, **kwargs)
        from zoo.cards import write_card

        write_card(self, save_directory)
        return out


def _fill_text(result: Any, tokenizer) -> None:
    """Set ``text`` on every Hypothesis in a (possibly nested) list of results."""
    if isinstance(result, Hypothesis):
        if not result.text:
            result.text = tokenizer.decode(result.tokens)
    elif isinstance(result, list):
        for item in result:
            _fill_text(item, tokenizer)


def _kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _NODE_KEYS}


def _sources(cfg: dict[str, Any], head: str) -> list[str]:
    src = cfg.get("source")
    if src is None:
        raise ValueError(f"decoder '{head}' has no 'source' encoder")
    return list(src) if isinstance(src, (list, tuple)) else [src]


def _topological_order(encoders: dict[str, dict[str, Any]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError(f"encoder cycle: {' -> '.join(path + [n])}")
        if "input" not in encoders[n]:
            raise ValueError(f"encoder '{n}' has no 'input' (a batch key or another encoder's name)")
        state[n] = 1
        if _upstream(encoders, n) is not None:
            visit(encoders[n]["input"], path + [n])
        state[n] = 2
        order.append(n)

    for n in encoders:
        visit(n, [])
    return order


def _upstream(encoders: dict[str, dict[str, Any]], name: str) -> str | None:
    """The encoder that ``name`` is cascaded on, or None when its input is a batch key. An encoder may
    share its name with the batch key it reads (``"audio"`` reading ``batch["audio"]``)."""
    src = encoders[name]["input"]
    return src if src in encoders and src != name else None


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _batch_size(memory) -> int:
    return (memory[0] if isinstance(memory, list) else memory).x.shape[0]


def _device(memory) -> torch.device:
    return (memory[0] if isinstance(memory, list) else memory).x.device
