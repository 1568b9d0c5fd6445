"""The ``zoo`` command: list and inspect registered names, train and evaluate recipes, write cards.

    zoo list [PATTERN] [--task T] [--modality M] [--pretrained] [--kind models|encoders|decoders]
    zoo info NAME                 graph, parameters per node, inputs, pretrained tags (or a component's signature)
    zoo train RECIPE [args...]    recipes.<RECIPE>.train.main(args)
    zoo eval RECIPE [args...]     recipes.<RECIPE>.evaluate.main(args)
    zoo card DIR                  regenerate DIR/README.md from its config, weights and eval results

Recipes add their own verbs through ``recipes/<name>/cli.py: add_commands(subparsers)``. The zoo's
user-facing errors print ``error: <message>`` and exit 2 (``--traceback`` shows the traceback).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Sequence

from zoo.hub import CheckpointError
from zoo.registry import DECODERS, ENCODERS, MODELS, UnknownNameError, split_name_tag

USER_ERRORS = (UnknownNameError, KeyError, ValueError, CheckpointError, FileNotFoundError)
REGISTRIES = {"models": MODELS, "encoders": ENCODERS, "decoders": DECODERS}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `zoo list | head`: the reader left; silence the flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as error:
        if args.traceback:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="encdec-zoo: encoders, decoders and model graphs.")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models, encoders or decoders")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. '*whisper*'")
    p.add_argument("--task")
    p.add_argument("--modality")
    p.add_argument("--pretrained", action="store_true", help="list name.tag entries that have weights")
    p.add_argument("--kind", choices=list(REGISTRIES), default="models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="describe a model (graph, parameters, inputs, tags) or a component")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    for verb, module in (("train", "train"), ("eval", "evaluate")):
        p = sub.add_parser(verb, help=f"run recipes.<RECIPE>.{module}.main(args)", add_help=False)
        p.add_argument("recipe", nargs="?")
        p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the recipe")
        p.set_defaults(func=lambda a, module=module: cmd_recipe(a, module))

    p = sub.add_parser("card", help="regenerate DIR/README.md from config.json, weights and eval_results.json")
    p.add_argument("directory")
    p.add_argument("--training-data", help="text for the training data section (kept in card.json)")
    p.add_argument("--intended-use")
    p.add_argument("--limitations")
    p.add_argument("--license")
    p.add_argument("--language", nargs="+")
    p.add_argument("--dataset", dest="datasets", action="append", help="a dataset id; repeatable")
    p.add_argument("--repo-id", help="hub id shown in the usage snippet")
    p.set_defaults(func=cmd_card)

    from zoo import quickstart

    p = sub.add_parser("quickstart", help="build embedded data, train + evaluate every recipe's tiny preset offline")
    quickstart.add_arguments(p)
    p.set_defaults(func=lambda a: quickstart.run(a.out, fast=a.fast, only=a.only) and 0)

    for add_commands in recipe_commands():
        add_commands(sub)
    return parser


def recipe_commands() -> list:
    """``add_commands`` of every ``recipes/<name>/cli.py`` that defines one."""
    import recipes

    found = []
    for name in recipes.RECIPES:
        if importlib.util.find_spec(f"recipes.{name}.cli") is not None:
            module = importlib.import_module(f"recipes.{name}.cli")
            if callable(getattr(module, "add_commands", None)):
                found.append(module.add_commands)
    return found


# --- commands --------------------------------------------------------------------------------
def cmd_list(args) -> int:
    registry = REGISTRIES[args.kind]
    names = registry.list(args.pattern, args.task, args.modality, args.pretrained)
    if not names:
        print(f"no {args.kind} match pattern {args.pattern!r} (task={args.task}, modality={args.modality}, "
              f"pretrained={args.pretrained})", file=sys.stderr)
        return 1
    rows = [(n, registry.get(n).task or "-", registry.get(n).modality or "-") for n in names]
    width = max(len(r[0]) for r in rows)
    for name, task, modality in rows:
        print(f"{name:<{width}}  {task:<16} {modality}")
    return 0


def cmd_info(args) -> int:
    MODELS.list()  # imports the built-in encoders, decoders and presets
    found = [kind for kind, r in REGISTRIES.items() if split_name_tag(args.name)[0] in r.entries]
    if not found:
        raise UnknownNameError(unknown_name_message(args.name))
    for kind in found:
        print(model_info(args.name) if kind == "models" else component_info(REGISTRIES[kind], args.name))
    return 0


def unknown_name_message(name: str) -> str:
    everything = [n for r in REGISTRIES.values() for n in r.entries]
    close = difflib.get_close_matches(split_name_tag(name)[0], everything, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown model, encoder or decoder '{name}'.{hint} See `zoo list --kind models|encoders|decoders`."


def model_info(name: str) -> str:
    import torch

    from zoo.registry import create_model

    entry = MODELS.get(name)
    _, tag = split_name_tag(name)
    if tag is not None:
        MODELS.pretrained_cfg(name)  # an unknown tag fails here, naming the known ones
    try:
        with torch.device("meta"):  # shapes and counts without allocating the weights
            model = create_model(entry.name)
    except (RuntimeError, NotImplementedError, TypeError):
        model = create_model(entry.name)
    lines = [model.describe(), "", f"inputs: {', '.join(model.inputs())}",
             f"preset: {entry.name}{_signature(entry.fn)}"]
    doc = inspect.cleandoc(entry.fn.__doc__ or "")
    if doc:
        lines += ["", doc]
    lines += ["", "pretrained tags:" if entry.pretrained_cfgs else "pretrained tags: none"]
    for t, cfg in entry.pretrained_cfgs.items():
        if tag is None or t == tag:
            lines.append(f"  {entry.name}.{t:<20} {_weights_source(cfg)}  {cfg.description}".rstrip())
    return "\n".join(lines)


def component_info(registry, name: str) -> str:
    entry = registry.get(name)
    lines = [f"{registry.kind} {entry.name}{_signature(entry.fn)}",
             f"  task: {entry.task or '-'}, modality: {entry.modality or '-'}, defined in {entry.fn.__module__}"]
    doc = inspect.cleandoc(entry.fn.__doc__ or "")
    return "\n".join(lines + (["", doc] if doc else []))


def cmd_recipe(args, module: str) -> int:
    import recipes

    if args.recipe in (None, "-h", "--help"):
        runnable = [r for r in recipes.RECIPES if importlib.util.find_spec(f"recipes.{r}.{module}") is not None]
        print(f"usage: zoo {'eval' if module == 'evaluate' else module} RECIPE [args...]\n")
        print(f"recipes with {module}.py: {', '.join(runnable) or 'none'}")
        print(f"all recipes: {', '.join(recipes.RECIPES)}")
        return 0
    if args.recipe not in recipes.RECIPES:
        close = difflib.get_close_matches(args.recipe, recipes.RECIPES, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown recipe '{args.recipe}'.{hint} Recipes: {', '.join(recipes.RECIPES)}")
    if importlib.util.find_spec(f"recipes.{args.recipe}.{module}") is None:
        raise UnknownNameError(f"recipe '{args.recipe}' has no {module} step (recipes/{args.recipe}/{module}.py)")
    return int(importlib.import_module(f"recipes.{args.recipe}.{module}").main(list(args.args)) or 0)


def cmd_card(args) -> int:
    from zoo.cards import CARD_FIELDS, regenerate_card

    fields = {k: getattr(args, k) for k in CARD_FIELDS if getattr(args, k, None) is not None}
    regenerate_card(args.directory, **fields)
    print(f"wrote {args.directory}/README.md")
    return 0


def _signature(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _weights_source(cfg) -> str:
    if cfg.local_dir:
        return f"local-dir:{cfg.local_dir}"
    if cfg.hf_hub_id:
        return f"hf-hub:{cfg.hf_hub_id}@{cfg.revision or 'main'}"
    return f"{cfg.url} (sha256 {cfg.sha256[:12] if cfg.sha256 else 'missing'})"


if __name__ == "__main__":
    sys.exit(main())
