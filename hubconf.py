"""torch.hub entrypoints: one per registered encdec-zoo model preset, generated at import time.

    model = torch.hub.load("encdec-zoo/encdec-zoo", "toy_cascade", pretrained=False)
    model = torch.hub.load("path/to/clone", "toy_cascade", source="local", dim=32)

Each entrypoint is ``name(pretrained=False, *, tag=None, **kwargs)`` and calls
``zoo.registry.create_model``; pretrained weights load strictly and safely (safetensors, or
``torch.load(weights_only=True)``), never through remote code.
"""
import importlib.util as _importlib_util
import inspect as _inspect

dependencies = ["torch", "torchaudio", "timm", "transformers", "einops", "huggingface_hub", "safetensors"]


def _check_dependencies() -> None:
    # torch.hub checks `dependencies` only after importing this module, which needs them already
    missing = [name for name in dependencies if _importlib_util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"Missing dependencies: {', '.join(missing)}; "
                           f"install them with pip install {' '.join(missing)}")


def _entrypoint(entry):
    """A module-level function ``entry.name(pretrained=False, *, tag=None, **kwargs)`` for one preset."""
    from zoo.registry import create_model

    name = entry.name

    def load(pretrained: bool = False, *, tag: str | None = None, **kwargs):
        if tag is not None and not pretrained:
            raise ValueError(f"tag={tag!r} only selects pretrained weights; pass pretrained=True as well")
        return create_model(f"{name}.{tag}" if tag else name, pretrained=pretrained, **kwargs)

    tags = list(entry.pretrained_cfgs)
    weights = (f"``pretrained=True`` loads the weights of ``{name}.{tags[0]}``; ``tag=`` picks one of "
               f"{', '.join(tags)}." if tags else "No pretrained weights are registered (``pretrained=True`` fails).")
    load.__name__ = load.__qualname__ = name
    load.__module__ = __name__
    load.__doc__ = (f"{_inspect.cleandoc(entry.fn.__doc__ or name)}\n\n"
                    f"torch.hub entrypoint for the encdec-zoo preset ``{name}`` (task: {entry.task or '-'}, "
                    f"modality: {entry.modality or '-'}). {weights} Other keyword arguments go to the preset.")
    own = [_inspect.Parameter("pretrained", _inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False, annotation=bool),
           _inspect.Parameter("tag", _inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None")]
    preset = [p.replace(kind=_inspect.Parameter.KEYWORD_ONLY) if p.kind is not p.VAR_KEYWORD else p
              for p in _inspect.signature(entry.fn).parameters.values()
              if p.name not in ("pretrained", "tag") and p.kind is not p.VAR_POSITIONAL]
    load.__signature__ = _inspect.Signature(own + preset)
    return load


def _install() -> list:
    _check_dependencies()
    from zoo.registry import MODELS, list_models

    names = list_models()
    for name in names:
        if name in globals():
            raise RuntimeError(f"model preset '{name}' clashes with a name in hubconf.py; rename the preset")
        globals()[name] = _entrypoint(MODELS.get(name))
    return names


__all__ = _install()  # noqa: PLE0605 (the registered presets)
