"""Safe, strict weight loading from a local directory, the Hugging Face hub (and its offline
cache) or a sha256-checked URL.

safetensors is preferred; a ``.pt``/``.bin`` file is only read through
``torch.load(weights_only=True)``, so a pickle that would run code is refused. Nothing here ever
passes ``trust_remote_code``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from zoo.registry import PretrainedCfg

SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt")


class CheckpointError(RuntimeError):
    """A checkpoint could not be used: mismatched keys or shapes, unsafe pickle, bad hash, missing file."""


def resolve_weights_file(
    source: str | os.PathLike,
    revision: str | None = None,
    filename: str | None = None,
    sha256: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """Find the weights file of ``source``: a file, a directory, ``hf-hub:org/name``/``org/name``, or a URL."""
    source = str(source)
    if source.startswith(("http://", "https://", "file://")):
        return _download_url(source, sha256, cache_dir)
    path = Path(source.removeprefix("local-dir:"))
    if path.is_file():
        return path
    if path.is_dir():
        for name in ([filename] if filename else []) + [SAFETENSORS_NAME, *PICKLE_NAMES]:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no weights in {path}: expected {SAFETENSORS_NAME} (written by save_pretrained)")
    if source.startswith("local-dir:") or source.startswith((".", "/")):
        raise CheckpointError(f"checkpoint path {source!r} does not exist")
    return _download_hf(source.removeprefix("hf-hub:"), revision, filename, cache_dir, local_files_only)


def _download_hf(repo_id, revision, filename, cache_dir, local_files_only) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    names = [filename] if filename else [SAFETENSORS_NAME, *PICKLE_NAMES]
    last_error: Exception | None = None
    for name in names:
        try:
            return Path(
                hf_hub_download(
                    repo_id, name, revision=revision, cache_dir=cache_dir,
                    local_files_only=local_files_only, library_name="encdec-zoo",
                )
            )
        except (EntryNotFoundError, LocalEntryNotFoundError) as error:
            last_error = error
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    hint = " (HF_HUB_OFFLINE is set: download it once online, or pass a local directory)" if offline else ""
    raise CheckpointError(
        f"no weights for hub repo {repo_id!r} at revision {revision or 'main'}{hint}: {last_error}"
    ) from last_error


def _download_url(url: str, sha256: str | None, cache_dir: str | None) -> Path:
    if not sha256:
        raise CheckpointError(f"refusing to load {url} without a sha256 to check it against")
    root = Path(cache_dir or torch.hub.get_dir()) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{sha256[:16]}-{Path(url).name}"
    if not target.exists():
        try:
            torch.hub.download_url_to_file(url, str(target), hash_prefix=None, progress=True)
        except Exception as error:
            raise CheckpointError(f"could not download {url}: {error}") from error
    digest = file_sha256(target)
    if digest != sha256:
        target.unlink()
        raise CheckpointError(f"sha256 mismatch for {url}: expected {sha256}, got {digest}; file removed")
    return target


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a state dict: safetensors directly, anything else with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = str(error).splitlines()
        reason = next((ln.strip() for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), "it imports code")
        raise CheckpointError(
            f"refused to load {path}: it is a pickle that needs code to be run ({reason}). "
            "Only tensors are accepted; convert the checkpoint to safetensors from a source you trust."
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True, source: str = "") -> None:
    """``load_state_dict`` whose error names the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items() if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state_dict and not _is_tied(model, k, state_dict)]
    unexpected = [k for k in state_dict if k not in own]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_short(shapes)}")
        where = f" from {source}" if source else ""
        fix = " Build the model with the config the checkpoint was saved with (config.json)"
        fix += "." if shapes else ", or pass strict=False to load the overlap."
        raise CheckpointError(f"checkpoint{where} does not match {type(model).__name__}: " + "; ".join(parts) + "." + fix)
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    # safetensors drops one name of each tied pair; re-tie by copying from the kept twin
    for name in missing:
        twin = _tied_twin(model, name, state_dict)
        if twin is not None:
            own[name].data.copy_(state_dict[twin])


def _tied_groups(model: nn.Module) -> dict[str, list[str]]:
    by_ptr: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_ptr.setdefault(tensor.data_ptr(), []).append(name)
    return {n: names for names in by_ptr.values() if len(names) > 1 for n in names}


def _tied_twin(model: nn.Module, key: str, state_dict) -> str | None:
    return next((k for k in _tied_groups(model).get(key, []) if k in state_dict), None)


def _is_tied(model: nn.Module, key: str, state_dict) -> bool:
    return _tied_twin(model, key, state_dict) is not None


def _short(items: list[str], n: int = 8) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def load_pretrained_cfg(model: nn.Module, cfg: "PretrainedCfg", revision: str | None = None, strict: bool = True):
    """Load the weights a :class:`~zoo.registry.PretrainedCfg` points to into ``model``."""
    source = cfg.local_dir or (f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else None) or cfg.url
    if source is None:
        raise CheckpointError("pretrained config names no local_dir, hf_hub_id or url")
    path = resolve_weights_file(source, revision=revision or cfg.revision, filename=cfg.filename, sha256=cfg.sha256)
    state = load_state_dict(path)
    if cfg.converter:
        state = import_object(cfg.converter)(state, model)
    load_weights(model, state, strict=strict, source=str(path))
    return model


def import_object(spec: str):
    """``'package.module:attr'`` -> the object."""
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)
