"""A resumable, rank-aware batch sampler, and the protocol the Trainer expects of any batch sampler.

Order is a pure function of ``(seed, epoch)``, so every rank draws the same permutation and cuts
it into the same *global* batches; rank ``r`` of ``w`` takes the ``r``-th contiguous slice of each,
so the union over ranks is exactly the single-process global batch (as in DistributedSampler, but
split per batch rather than per epoch so ``global batch = per-rank batch * w`` at every step).
The state is ``(epoch, batches served)`` counted in global batches, hence independent of ``w``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["BatchSamplerProtocol", "ResumableBatchSampler", "check_batch_sampler", "keyed_batch_loader"]


@runtime_checkable
class BatchSamplerProtocol(Protocol):
    """What the Trainer needs: iterate (yields one rank's list of dataset keys per step), ``set_epoch``,
    and ``state_dict``/``load_state_dict`` of ints/lists/str. ``state_dict()`` taken right after a batch
    is yielded must describe the position *after* that batch; iterating yields the rest of the epoch."""

    def __iter__(self) -> Iterator[list[Any]]: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_batch_sampler(sampler: Any) -> None:
    missing = [m for m in ("__iter__", "set_epoch", "state_dict", "load_state_dict") if not hasattr(sampler, m)]
    if missing:
        raise TypeError(
            f"batch_sampler {type(sampler).__name__} lacks {', '.join(missing)}; the Trainer needs a resumable "
            "batch sampler (see zoo.data.sampler.BatchSamplerProtocol), e.g. ResumableBatchSampler"
        )


class ResumableBatchSampler:
    """Shuffled (or ordered) batches of indices ``0..size-1``; ``batch_size`` is the global batch.

    drop_last : drop the final short global batch; when kept and ``world_size > 1`` it is padded by
        wrapping around the epoch's order so every rank receives the same number of rows.
    rank, world_size : default to torch.distributed's when it is initialised, else 0 and 1.
    """

    def __init__(self, size: int, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        if rank is None or world_size is None:
            dist = torch.distributed
            ready = dist.is_available() and dist.is_initialized()
            rank = rank if rank is not None else (dist.get_rank() if ready else 0)
            world_size = world_size if world_size is not None else (dist.get_world_size() if ready else 1)
        if size <= 0:
            raise ValueError(f"cannot sample from an empty dataset (size={size})")
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(
                f"global batch_size {batch_size} must be a positive multiple of world_size {world_size} "
                f"(each rank takes batch_size / world_size rows); use e.g. "
                f"{max(world_size, batch_size - batch_size % world_size)}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if drop_last and size < batch_size:
            raise ValueError(f"dataset of {size} items yields no full batch of {batch_size}; "
                             "lower batch_size or set drop_last=False")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch, self.served = 0, 0

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        self.epoch, self.served = int(epoch), 0

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def global_batches(self, epoch: int) -> list[list[int]]:
        order = self.order(epoch)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)][: len(self)]
        last = batches[-1]
        if len(last) % self.world_size:
            pad = self.world_size - len(last) % self.world_size
            batches[-1] = last + [order[i % len(order)] for i in range(pad)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        """The rest of the current epoch: this rank's slice of each global batch not yet served."""
        batches = self.global_batches(self.epoch)
        while self.served < len(batches):
            batch = batches[self.served]
            per_rank = len(batch) // self.world_size
            self.served += 1  # before yielding, so state_dict() describes the position after this batch
            yield batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def state_dict(self) -> dict[str, Any]:
        return dict(epoch=self.epoch, served=self.served, seed=self.seed, size=self.size,
                    batch_size=self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "size", "batch_size", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]} but this sampler has "
                    f"{key}={getattr(self, key)}; "
                    "resume with the same dataset and global batch size (world size may differ)"
                )
        self.epoch, self.served = int(state["epoch"]), int(state["served"])


# --- a DataLoader whose batches carry the sampler state after them ------------------------------
class _KeyedSampler(torch.utils.data.Sampler):
    def __init__(self, batch_sampler):
        self.batch_sampler = batch_sampler

    def __iter__(self):
        for keys in self.batch_sampler:
            yield list(keys), self.batch_sampler.state_dict()


class _Batches(Dataset):
    def __init__(self, dataset, collate_fn):
        self.dataset, self.collate_fn = dataset, collate_fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        keys, state = key
        return self.collate_fn([self.dataset[k] for k in keys]), state


def _identity(x):
    return x


def keyed_batch_loader(dataset, collate_fn, batch_sampler, num_workers: int = 0, pin_memory: bool = False,
                       generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader yielding ``(collated batch, batch_sampler.state_dict() right after that batch)``.

    The sampler is iterated in the main process ahead of consumption (workers prefetch), so its live
    state runs ahead; the snapshot that travels with each batch is the exact position to resume from.
    Pass a ``generator`` so creating the loader draws nothing from the global torch RNG.
    """
    return DataLoader(_Batches(dataset, collate_fn), sampler=_KeyedSampler(batch_sampler), batch_size=None,
                      collate_fn=_identity, num_workers=num_workers, pin_memory=pin_memory, generator=generator)
