"""JSONL manifests (one JSON object per line) validated against a small schema on load.

A schema maps field names to :class:`Field` (type, required, a per-value check, whether the value is a
file path that must exist, whether it must be unique). A bad row raises :class:`ManifestError` naming
``file:line``, the field and the fix. File paths are stored relative to the manifest's folder (so a
corpus can be moved) and come back absolute from :func:`read_manifest`.

    schema = {"id": Field(str, unique=True), "audio_filepath": Field(str, path=True),
              "duration": Field(float, check=positive)}
    rows = read_manifest("train.jsonl", schema)
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Field", "Schema", "ManifestError", "read_manifest", "write_manifest", "validate_row",
           "positive", "non_negative", "non_empty", "one_of", "in_range"]


@dataclass(frozen=True)
class Field:
    """One manifest field: its type(s); ``check(value)`` returns a problem description or None."""

    type: type | tuple[type, ...]
    required: bool = True
    check: Callable[[Any], str | None] | None = None
    path: bool = False        # a file path: resolved against the manifest folder and required to exist
    unique: bool = False      # no two rows may share the value (e.g. ids)


Schema = Mapping[str, Field]


class ManifestError(ValueError):
    """A manifest row broke the schema; the message reads ``file:line: field 'x': problem; fix``."""

    def __init__(self, where: str, field: str | None, problem: str, fix: str):
        self.where, self.field, self.problem = where, field, problem
        name = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {name}{problem}; {fix}")


# --- per-value checks ------------------------------------------------------------------------------
def positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def non_empty(v: Any) -> str | None:
    return None if len(v) > 0 else "must not be empty"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {list(choices)}, got {v!r}"
    return check


def in_range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must lie in [{lo}, {hi}], got {v!r}"
    return check


# --- validation ------------------------------------------------------------------------------------
def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def _coerce(value: Any, spec: Field) -> tuple[bool, Any]:
    """Type-check ``value``; ints pass where floats are expected (as floats), bools never pass as numbers."""
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if isinstance(value, bool) and bool not in types:
        return False, value
    if isinstance(value, types):
        return True, value
    if float in types and isinstance(value, int):
        return True, float(value)
    return False, value


def validate_row(row: Any, schema: Schema, where: str, base: Path | None = None,
                 check_files: bool = True, seen: dict[str, set] | None = None) -> dict:
    """Check one row against ``schema``; returns a copy with paths resolved against ``base``."""
    if not isinstance(row, dict):
        raise ManifestError(where, None, f"expected a JSON object, got {type(row).__name__}",
                            "write one object per line")
    out = dict(row)
    for name, spec in schema.items():
        if name not in row or row[name] is None:
            if spec.required:
                raise ManifestError(where, name, "missing required field", f"add '{name}' to every row")
            continue
        ok, value = _coerce(row[name], spec)
        if not ok:
            raise ManifestError(where, name, f"expected {_type_name(spec.type)}, got "
                                f"{type(row[name]).__name__} {row[name]!r}", "fix the value's type")
        if spec.check is not None and (problem := spec.check(value)) is not None:
            raise ManifestError(where, name, problem, "fix or drop this row")
        if spec.path:
            p = Path(value)
            if base is not None and not p.is_absolute():
                p = base / p
            if check_files and not p.is_file():
                raise ManifestError(where, name, f"file {p} does not exist",
                                    "rebuild the data or fix the path (relative paths are read from the "
                                    "manifest's folder)")
            value = str(p)
        if spec.unique and seen is not None:
            if value in seen.setdefault(name, set()):
                raise ManifestError(where, name, f"duplicate value {value!r}", "make the values unique")
            seen[name].add(value)
        out[name] = value
    return out


def read_manifest(path: str | Path, schema: Schema | None = None, check_files: bool = True) -> list[dict]:
    """Rows of a JSONL manifest, validated against ``schema`` (path fields come back absolute; without a
    schema, fields whose name ends in ``filepath`` are taken as paths)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest; build the data first or fix the path")
    rows, seen = [], {}
    base = path.resolve().parent
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(where, None, f"invalid JSON ({err.msg} at column {err.colno})",
                                    "write one JSON object per line") from err
            if schema is None and isinstance(row, dict):  # by convention, *filepath fields are paths
                row = {k: str(base / v) if k.endswith("filepath") and isinstance(v, str) and v
                       and not Path(v).is_absolute() else v for k, v in row.items()}
            rows.append(validate_row(row, schema or {}, where, base, check_files, seen))
    return rows


def write_manifest(path: str | Path, rows: Iterable[Mapping[str, Any]], schema: Schema | None = None) -> Path:
    """Write ``rows`` as JSONL atomically; with a schema, rows are validated and path fields under the
    manifest's folder are stored relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    lines, seen = [], {}
    for i, row in enumerate(rows):
        row = {k: str(v) if isinstance(v, Path) else v for k, v in row.items()}
        if schema is not None:
            validate_row(row, schema, f"{path} (row {i})", base, check_files=False, seen=seen)
            for name, spec in schema.items():
                if spec.path and row.get(name) is not None:
                    p = Path(row[name])
                    if p.is_absolute() and p.resolve().is_relative_to(base):
                        row[name] = p.resolve().relative_to(base).as_posix()
        lines.append(json.dumps(row, ensure_ascii=False))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
