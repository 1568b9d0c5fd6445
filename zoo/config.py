"""YAML configs as typed dataclasses, with ``key=value`` command-line overrides.

A config file is a YAML mapping whose keys mirror a dataclass (nested dataclasses for nested
sections, e.g. a recipe config with ``model``/``data``/``train`` parts). Overrides use dotted keys
(``train.lr=1e-3``) and values parsed by ``yaml.safe_load``, then coerced to the field's type, so
``1e-3`` (a string to YAML 1.1) still becomes a float. Unknown keys fail with the closest names.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load_config",
    "parse_overrides",
    "parse_train_args",
    "save_config",
    "to_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix or '<root>'}' must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else ""
        raise ConfigError(f"unknown config key '{prefix}{key}'.{hint} Known keys"
                          f"{' under ' + repr(prefix[:-1]) if prefix else ''}: {', '.join(fields)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-safe containers (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "seed=3"]`` -> ``{"train": {"lr": "1e-3"}, "seed": 3}`` (yaml-parsed values)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (dotted keys nest: train.lr=1e-3)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is set to a value earlier, not a section")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value, f"{prefix}{key}.")
        elif isinstance(value, Mapping) and out.get(key) is not None and not isinstance(out[key], Mapping):
            raise ConfigError(f"override '{prefix}{key}.…': '{prefix}{key}' is a value ({out[key]!r}), "
                              "not a section")
        else:
            out[key] = value
    return out


def apply_overrides(config: T, overrides: Sequence[str] | Mapping[str, Any]) -> T:
    """A copy of ``config`` with ``key=value`` overrides (or a nested mapping) applied and checked."""
    extra = parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides
    return from_dict(type(config), _merge(to_dict(config), extra))


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read YAML ``path`` (or start from the defaults) into ``cls`` and apply ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a YAML mapping at its top level")
    return from_dict(cls, _merge(data, parse_overrides(overrides)))


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def parse_train_args(argv: Sequence[str] | None, config_cls: type[T], default_config: str | Path | None = None,
                     prog: str | None = None) -> tuple[T, bool]:
    """``--config FILE key=value ... [--resume]`` -> (config, resume); shared by every recipe's train.py."""
    parser = argparse.ArgumentParser(prog=prog, description="Train from a YAML config with key=value overrides.")
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=1e-3")
    args = parser.parse_intermixed_args(argv)
    return load_config(config_cls, args.config, args.overrides), args.resume


# --- type coercion ---------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key '{key}': {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' is a section; give a mapping, not {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false; got {value!r}")
    if tp is int:
        number = _number(value, key, "an integer")
        if float(number) != int(number):
            raise ConfigError(f"config key '{key}' must be an integer; got {value!r}")
        return int(number)
    if tp is float:
        return float(_number(value, key, "a number"))
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be a string; got {value!r}")
        return "" if value is None else str(value)
    if tp is Path:
        return Path(str(value))
    container = origin or tp
    if container in (dict, list, tuple) and not isinstance(value, (dict if container is dict else (list, tuple))):
        raise ConfigError(f"config key '{key}' must be a {container.__name__}; got {value!r}")
    if container is tuple:
        return tuple(value)
    return value


def _number(value: Any, key: str, what: str) -> int | float:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"config key '{key}' must be {what}; got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(str(value).replace("_", "")) if not str(value).lstrip("+-").isdigit() else int(value)
    except ValueError:
        raise ConfigError(f"config key '{key}' must be {what}; got {value!r}") from None
