"""Padding collates built on ``torch.nn.utils.rnn.pad_sequence``.

Batch format (see zoo/graph.py): modality tensors padded along time with ``<key>_lengths``;
``ids`` a list of str; ``targets[head] = {"tokens": (B, L), "lengths": (B,), "present": (B,) bool}``
where ``present`` is False for rows without that head's label (their tokens are all ``pad_id``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

__all__ = ["pad_batch", "collate_audio", "collate_tokens", "collate_token_targets", "collate_speech",
           "collate_dict"]


def pad_batch(seqs: Sequence[Tensor], pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Pad tensors along their first axis: ``(B, L_max, ...)`` plus ``(B,)`` int64 lengths."""
    if len(seqs) == 0:
        raise ValueError("cannot collate an empty batch; the sampler yielded no rows")
    for i, s in enumerate(seqs):
        if not isinstance(s, Tensor) or s.dim() == 0:
            raise TypeError(f"item {i}: expected a tensor with a length axis, got {type(s).__name__} "
                            f"{tuple(getattr(s, 'shape', ()))}")
        if s.shape[1:] != seqs[0].shape[1:]:
            raise ValueError(f"item {i}: trailing shape {tuple(s.shape[1:])} differs from item 0's "
                             f"{tuple(seqs[0].shape[1:])}; only the first axis may vary")
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    return pad_sequence(list(seqs), batch_first=True, padding_value=pad_value), lengths


def collate_audio(wavs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Mono waveforms ``(T_i,)`` -> zero-padded ``(B, T)`` and lengths in samples."""
    for i, w in enumerate(wavs):
        if w.dim() != 1:
            raise ValueError(f"item {i}: audio of shape {tuple(w.shape)}; expected mono (T,), average the "
                             "channels first (zoo.data.audio.load_audio does by default)")
    return pad_batch(wavs, 0.0)


def collate_tokens(seqs: Sequence[Tensor | Sequence[int]], pad_id: int = 0) -> dict[str, Tensor]:
    """Token id sequences -> ``{"tokens": (B, L) padded with pad_id, "lengths": (B,)}``."""
    seqs = [torch.as_tensor(s, dtype=torch.long) for s in seqs]
    tokens, lengths = pad_batch(seqs, pad_id)
    return {"tokens": tokens.long(), "lengths": lengths}


def collate_token_targets(items: Sequence[Mapping[str, Any]], heads: Sequence[str], pad_id: int = 0
                          ) -> dict[str, dict[str, Tensor]]:
    """Per head, token targets with ``present``; a head no row carries is left out of the batch."""
    targets = {}
    for head in heads:
        present = torch.tensor([item.get(head) is not None for item in items])
        if not present.any():
            continue
        seqs = [item[head] if item.get(head) is not None else [] for item in items]
        targets[head] = {**collate_tokens(seqs, pad_id), "present": present}
    return targets


def collate_speech(items: Sequence[Mapping[str, Any]], heads: Sequence[str] = (), pad_id: int = 0,
                   audio_key: str = "audio") -> dict[str, Any]:
    """Items ``{"id", "audio": (T,), <head>: token ids or None}`` -> a model batch."""
    audio, lengths = collate_audio([item[audio_key] for item in items])
    return {"ids": [str(item["id"]) for item in items], audio_key: audio, f"{audio_key}_lengths": lengths,
            "targets": collate_token_targets(items, heads, pad_id)}


def collate_dict(items: Sequence[Mapping[str, Any]], pad_values: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Generic collate of dicts of per-item values.

    Keys in ``pad_values`` are padded along their first axis with that value and get ``<key>_lengths``
    (a nested dict value in ``pad_values`` applies to a nested dict); other tensors are stacked (equal
    shapes required); nested dicts recurse; anything else becomes a list. ``id`` becomes ``ids``.
    """
    if not items:
        raise ValueError("cannot collate an empty batch; the sampler yielded no rows")
    pad_values = pad_values or {}
    keys = list(items[0])
    for i, item in enumerate(items):
        if set(item) != set(keys):
            raise ValueError(f"item {i} has keys {sorted(item)} but item 0 has {sorted(keys)}; every "
                             "item must carry the same keys (use None for a missing label)")
    out: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        if key == "id":
            out["ids"] = [str(v) for v in values]
        elif isinstance(first, Mapping):
            nested = pad_values.get(key, {})
            out[key] = collate_dict(values, nested if isinstance(nested, Mapping) else {})
        elif isinstance(first, Tensor) and key in pad_values:
            out[key], out[f"{key}_lengths"] = pad_batch(values, pad_values[key])
        elif isinstance(first, Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"'{key}': items have shapes {sorted(shapes)}; add '{key}' to pad_values "
                                 "to pad it along its first axis")
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
