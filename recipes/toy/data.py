"""Seeded synthetic sequences: each frame's tag is the argmax of its first four features, and the
sequence label is the most frequent tag. Some rows lack one of the two labels (partial labelling)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from recipes.toy.presets import IN_DIM, NUM_CLASSES


class ToySequences(Dataset):
    def __init__(self, size: int = 512, min_len: int = 6, max_len: int = 24, seed: int = 0,
                 missing_fraction: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(size):
            length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
            x = torch.randn(length, IN_DIM, generator=g)
            tags = x[:, :NUM_CLASSES].argmax(-1)
            majority = torch.bincount(tags, minlength=NUM_CLASSES).argmax()
            drop = float(torch.rand(1, generator=g))
            self.items.append(dict(
                id=f"toy-{seed}-{i:05d}", signal=x, tags=tags, majority=majority,
                has_tags=drop >= missing_fraction / 2, has_majority=not (missing_fraction / 2 <= drop < missing_fraction),
            ))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(items: list[dict]) -> dict:
    """Pad ``signal`` and ``tags``; rows without a label are marked absent for that head."""
    lengths = torch.tensor([len(it["signal"]) for it in items])
    signal = torch.nn.utils.rnn.pad_sequence([it["signal"] for it in items], batch_first=True)
    tags = torch.nn.utils.rnn.pad_sequence([it["tags"] for it in items], batch_first=True, padding_value=-100)
    return dict(
        ids=[it["id"] for it in items], signal=signal, signal_lengths=lengths,
        targets=dict(
            tags=dict(labels=tags, present=torch.tensor([it["has_tags"] for it in items])),
            majority=dict(labels=torch.stack([it["majority"] for it in items]),
                          present=torch.tensor([it["has_majority"] for it in items])),
        ),
    )
