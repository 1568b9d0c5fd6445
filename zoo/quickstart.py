"""The offline quickstart: every recipe that has a ``quickstart.py`` builds its embedded data, trains
its tiny preset, evaluates it and writes its artefacts (model + card, plots, outputs) under one folder.

Each recipe module defines ``run(out_dir: Path, fast: bool) -> dict`` returning a summary of its
metrics and artefact paths; this module runs them in order and writes ``SUMMARY.md``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import recipes

ORDER = ["toy", "asr_subtitle", "separation", "captioning", "brain_decoding"]


def available() -> list[str]:
    names = [r for r in recipes.RECIPES if importlib.util.find_spec(f"recipes.{r}.quickstart") is not None]
    return sorted(names, key=lambda r: ORDER.index(r) if r in ORDER else len(ORDER))


def run(out_dir: Path, fast: bool = False, only: list[str] | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = available()
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"no quickstart for {unknown}; recipes with one: {names}")
        names = [n for n in names if n in only]
    summary = {}
    for name in names:
        print(f"\n=== quickstart: {name} {'(fast)' if fast else ''} ===", flush=True)
        start = time.time()
        result = importlib.import_module(f"recipes.{name}.quickstart").run(out_dir / name, fast=fast)
        result["seconds"] = round(time.time() - start, 1)
        summary[name] = result
        print(f"=== {name} done in {result['seconds']:.0f} s ===", flush=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = ["# encdec-zoo quickstart", "", f"mode: {'fast' if fast else 'full'}", ""]
    for name, result in summary.items():
        lines += [f"## {name}", ""] + [f"- {k}: {v}" for k, v in result.items()] + [""]
    (out_dir / "SUMMARY.md").write_text("\n".join(lines))
    print(f"\nquickstart artefacts in {out_dir.resolve()} (see SUMMARY.md)")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"), help="folder for every artefact")
    parser.add_argument("--fast", action="store_true", help="a smoke run of every recipe (<= 5 minutes)")
    parser.add_argument("--only", nargs="*", help="run only these recipes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo quickstart", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(args.out, fast=args.fast, only=args.only)
    return 0
