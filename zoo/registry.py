"""timm-style registries for encoders, decoders and assembled models.

``@register_encoder`` / ``@register_decoder`` / ``@register_model`` key entries by function name and
raise on duplicates; ``create_*(name, **overrides)`` builds; ``list_*(pattern, task=, modality=,
pretrained=)`` filters with fnmatch. Models carry ``name.tag`` pretrained configs
(:class:`PretrainedCfg`) telling where their weights live.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "PretrainedCfg", "Registry", "UnknownNameError", "ENCODERS", "DECODERS", "MODELS",
    "register_encoder", "register_decoder", "register_model", "create_encoder", "create_decoder",
    "create_model", "list_encoders", "list_decoders", "list_models", "split_name_tag", "get_pretrained_cfg",
]


class UnknownNameError(KeyError):
    """A registry lookup failed; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a ``name.tag`` model's weights come from, in priority order: local dir, HF repo, URL.

    hf_hub_id : ``org/name`` on the Hugging Face hub, loaded with ``revision`` (pin a commit sha)
    url, sha256 : a direct download, verified against the sha256 before loading
    local_dir : a directory written by ``save_pretrained``
    converter : ``"module:function"`` turning a foreign state dict (transformers Whisper,
        wav2vec2, torchaudio Conv-TasNet, ...) into ours; called as ``fn(state_dict, model)``
    """

    hf_hub_id: str | None = None
    revision: str | None = None
    url: str | None = None
    sha256: str | None = None
    local_dir: str | None = None
    filename: str = "model.safetensors"
    converter: str | None = None
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entry:
    name: str
    fn: Callable[..., Any]
    task: str | None = None
    modality: str | None = None
    pretrained_cfgs: dict[str, PretrainedCfg] = field(default_factory=dict)


def split_name_tag(name: str) -> tuple[str, str | None]:
    """``'asr_ctc_tiny.synthetic'`` -> ``('asr_ctc_tiny', 'synthetic')``."""
    base, _, tag = name.partition(".")
    return base, tag or None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def register(self, fn=None, *, task=None, modality=None, pretrained_cfgs=None, name=None):
        def wrap(f):
            _ensure_builtins_loaded()  # so a user's name can never shadow a built-in one
            key = name or f.__name__
            if key in self.entries:
                where = self.entries[key].fn
                raise ValueError(
                    f"{self.kind} '{key}' is already registered by {where.__module__}.{where.__qualname__}; "
                    "pick another name"
                )
            self.entries[key] = Entry(key, f, task, modality, dict(pretrained_cfgs or {}))
            return f

        return wrap(fn) if fn is not None else wrap

    def add_pretrained(self, name: str, tag: str, cfg: PretrainedCfg) -> None:
        entry = self.get(name)
        if tag in entry.pretrained_cfgs:
            raise ValueError(f"{self.kind} '{name}.{tag}' is already registered")
        entry.pretrained_cfgs[tag] = cfg

    def get(self, name: str) -> Entry:
        _ensure_builtins_loaded()
        base, _ = split_name_tag(name)
        if base not in self.entries:
            close = difflib.get_close_matches(base, list(self.entries), n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'.{hint} See `zoo list` or list_{self.kind}s() for all names."
            )
        return self.entries[base]

    def pretrained_cfg(self, name: str) -> PretrainedCfg | None:
        entry = self.get(name)
        _, tag = split_name_tag(name)
        if tag is None:
            return next(iter(entry.pretrained_cfgs.values()), None)  # the first tag is the default
        if tag not in entry.pretrained_cfgs:
            tags = ", ".join(f"{entry.name}.{t}" for t in entry.pretrained_cfgs) or "none"
            raise UnknownNameError(f"{self.kind} '{entry.name}' has no pretrained tag '{tag}'; known: {tags}")
        return entry.pretrained_cfgs[tag]

    def list(self, pattern: str = "*", task=None, modality=None, pretrained: bool = False) -> list[str]:
        _ensure_builtins_loaded()
        names = []
        for entry in self.entries.values():
            if task is not None and entry.task != task:
                continue
            if modality is not None and entry.modality != modality:
                continue
            candidates = [f"{entry.name}.{t}" for t in entry.pretrained_cfgs] if pretrained else [entry.name]
            names += [n for n in candidates if fnmatch.fnmatch(n, pattern)]
        return sorted(names)


ENCODERS, DECODERS, MODELS = Registry("encoder"), Registry("decoder"), Registry("model")
register_encoder, register_decoder, register_model = ENCODERS.register, DECODERS.register, MODELS.register


def create_encoder(name: str, **kwargs):
    return ENCODERS.get(name).fn(**kwargs)


def create_decoder(name: str, **kwargs):
    return DECODERS.get(name).fn(**kwargs)


def create_model(name: str, pretrained: bool = False, revision: str | None = None, **kwargs):
    """Build a registered model; ``name.tag`` + ``pretrained=True`` loads that tag's weights strictly."""
    model = MODELS.get(name).fn(**kwargs)
    if pretrained:
        cfg = MODELS.pretrained_cfg(name)
        if cfg is None:
            raise UnknownNameError(
                f"model '{name}' has no pretrained weights; list them with list_models(pretrained=True)"
            )
        from zoo.hub import load_pretrained_cfg

        load_pretrained_cfg(model, cfg, revision=revision)
    return model


def list_encoders(pattern="*", task=None, modality=None, pretrained=False) -> list[str]:
    return ENCODERS.list(pattern, task, modality, pretrained)


def list_decoders(pattern="*", task=None, modality=None, pretrained=False) -> list[str]:
    return DECODERS.list(pattern, task, modality, pretrained)


def list_models(pattern="*", task=None, modality=None, pretrained=False) -> list[str]:
    return MODELS.list(pattern, task, modality, pretrained)


def get_pretrained_cfg(name: str) -> PretrainedCfg | None:
    return MODELS.pretrained_cfg(name)


_BUILTIN_MODULES = ["encoders", "decoders", "recipes"]
_loaded = False


def _ensure_builtins_loaded() -> None:
    """Import the packages whose modules register the built-in encoders, decoders and presets."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    try:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
    except BaseException:
        _loaded = False
        raise
