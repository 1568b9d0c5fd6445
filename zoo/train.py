"""The shared Trainer: AdamW (Loshchilov & Hutter, 2019, §2) with linear warmup and a cosine
(Loshchilov & Hutter, 2017, SGDR §3) / linear / constant schedule, gradient accumulation and
clipping, bf16 autocast on CUDA, DDP under torchrun, crash-safe checkpoints and exact resumption.

A *step* is one optimizer update over ``batch_size`` rows in all (summed over DDP ranks and
``grad_accum`` micro-batches). The logged loss of a step is the mean of the micro-batch losses over
ranks and accumulation, which is also what the gradient follows. Resuming restores the model,
optimizer, scheduler, sampler position and every RNG, so on CPU a resumed run ends bit-identical.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from zoo.checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from zoo.config import to_dict
from zoo.data.sampler import ResumableBatchSampler, check_batch_sampler, keyed_batch_loader
from zoo.device import autocasts_bf16, cpu_has_native_bf16, move_to_device, pick_device
from zoo.hub import CheckpointError
from zoo.train_log import CsvLog, plot_training_curves

__all__ = ["TrainConfig", "Trainer", "lr_lambda", "move_to_device", "plot_training_curves", "seed_everything"]


@dataclass
class TrainConfig:
    steps: int = 1000                    # optimizer updates
    batch_size: int = 32                 # global rows per update (all ranks x all micro-batches)
    grad_accum: int = 1                  # micro-batches per update
    lr: float = 1e-3
    weight_decay: float = 0.01           # on weight matrices only, not biases / norms
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0            # final lr / peak lr for cosine and linear
    clip_norm: float = 1.0               # max global gradient norm; 0 disables clipping
    log_every: int = 10                  # TensorBoard + progress bar; the CSV gets every step
    eval_every: int = 0                  # 0: evaluate only at the end
    checkpoint_every: int = 0            # 0: checkpoint only at the end
    keep_last: int = 3
    out_dir: str = "runs/train"
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also
    #                                                      autocasts on CPU (fast with AVX512-BF16 / AMX)
    device: str = "auto"                 # auto: cuda:LOCAL_RANK when available, else cpu
    num_workers: int = 0
    shuffle: bool = True
    find_unused_parameters: bool | None = None  # None: True when the model has several heads
    num_threads: int = 0                 # torch CPU threads; 0 leaves torch's default
    progress: bool = True
    tensorboard: bool = True


def lr_lambda(step: int, warmup_steps: int, total_steps: int, kind: str, min_ratio: float) -> float:
    """LR multiplier of update ``step`` (0-based): linear warmup to 1, then decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """``Trainer(model, train_dataset, collate_fn, config, eval_fn=None, batch_sampler=None).fit(resume)``.

    model : ``forward(batch)`` returns an object with ``loss`` (and ``losses`` per head), e.g. a ZooModel
    eval_fn : ``eval_fn(model) -> {metric: float}``, run on rank 0 in eval mode without gradients
    batch_sampler : any :class:`~zoo.data.sampler.BatchSamplerProtocol` yielding this rank's micro-batches;
        by default a :class:`ResumableBatchSampler` with global micro-batch ``batch_size / grad_accum``
    """

    def __init__(self, model: nn.Module, train_dataset, collate_fn: Callable, config: TrainConfig,
                 eval_fn: Callable[[nn.Module], dict[str, float]] | None = None, batch_sampler=None):
        self.config, self.dataset, self.collate_fn, self.eval_fn = config, train_dataset, collate_fn, eval_fn
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        self._owns_group = self._init_distributed()
        try:
            self._build(model, train_dataset, batch_sampler)
        except BaseException:
            if self._owns_group:
                dist.destroy_process_group()
            raise

    def _build(self, model: nn.Module, train_dataset, batch_sampler) -> None:
        config = self.config
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if self._distributed else (0, 1)
        self.main = self.rank == 0
        if config.steps <= 0 or config.grad_accum <= 0:
            raise ValueError(f"steps ({config.steps}) and grad_accum ({config.grad_accum}) must be positive")
        if config.batch_size % (config.grad_accum * self.world):
            raise ValueError(
                f"batch_size {config.batch_size} must be divisible by grad_accum x world_size = "
                f"{config.grad_accum} x {self.world}; a rank's micro-batch holds "
                "batch_size / (grad_accum x world_size) rows"
            )
        self.device = pick_device(config.device)
        self.amp = autocasts_bf16(config.precision, self.device)
        if self.amp and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("precision=bf16 on a CPU without native bf16 (oneDNN finds no AVX512 or AMX): autocast "
                          "is emulated and slower than fp32 here; set train.precision=fp32", stacklevel=2)
        seed_everything(config.seed + self.rank)
        self.module = model.to(self.device)
        self.heads = list(getattr(model, "decoders", None) or [])
        if self._distributed:
            unused = config.find_unused_parameters
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.heads) > 1 if unused is None else unused)
        else:
            self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [dict(params=[p for p in params if p.ndim >= 2], weight_decay=config.weight_decay),
                  dict(params=[p for p in params if p.ndim < 2], weight_decay=0.0)]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr,
                                           betas=tuple(config.betas))
        schedule = functools.partial(lr_lambda, warmup_steps=config.warmup_steps, total_steps=config.steps,
                                     kind=config.schedule, min_ratio=config.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        if batch_sampler is None:
            batch_sampler = ResumableBatchSampler(len(train_dataset), config.batch_size // config.grad_accum,
                                                  shuffle=config.shuffle, seed=config.seed, rank=self.rank,
                                                  world_size=self.world)
        check_batch_sampler(batch_sampler)
        self.sampler = batch_sampler
        self.out_dir = Path(config.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.step, self.epoch, self.elapsed = 0, 0, 0.0
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}

    # --- setup ---------------------------------------------------------------------------------
    @property
    def _distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def _init_distributed(self) -> bool:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or self._distributed:
            return False
        cuda = torch.cuda.is_available() and self.config.device != "cpu"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        return True

    def _loader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch * 101 + self.rank)
        return keyed_batch_loader(self.dataset, self.collate_fn, self.sampler, num_workers=self.config.num_workers,
                                  pin_memory=self.device.type == "cuda", generator=g)

    def _stream(self, fresh: bool):
        """Micro-batches across epoch boundaries; the epoch advances when one is exhausted."""
        while True:
            served = 0
            for item in self._loader():
                served += 1
                yield item
            if served == 0 and fresh:
                raise ValueError(f"the batch sampler yielded no batch in epoch {self.epoch}; the dataset "
                                 f"({len(self.dataset)} items) is smaller than one batch?")
            self.epoch, fresh = self.epoch + 1, True
            self.sampler.set_epoch(self.epoch)

    # --- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Every rank calls this (RNG states are gathered); rank 0 writes."""
        rng = capture_rng()
        states = [None] * self.world
        if self._distributed:
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        self._last_checkpoint = self.step
        if not self.main:
            return None
        payload = dict(step=self.step, epoch=self.epoch, elapsed=self.elapsed, world_size=self.world,
                       model=self.module.state_dict(), optimizer=self.optimizer.state_dict(),
                       scheduler=self.scheduler.state_dict(), sampler=self._sampler_state, rng=states,
                       config=to_dict(self.config))
        return save_checkpoint(payload, self.checkpoint_dir, self.step, self.config.keep_last)

    def _resume(self) -> bool:
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            warnings.warn(f"resume requested but {self.checkpoint_dir} has no checkpoint; starting from scratch")
            return False
        payload = load_checkpoint(path, map_location="cpu")
        try:
            self.module.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.sampler.load_state_dict(payload["sampler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {path} does not fit this run (was the model, data or batch size "
                                  f"changed? start a fresh out_dir instead): {error}") from error
        self._sampler_state = payload["sampler"]
        self.step, self.epoch, self.elapsed = payload["step"], payload["epoch"], payload["elapsed"]
        rng = payload["rng"]
        if len(rng) == self.world:
            restore_rng(rng[self.rank])
        else:
            warnings.warn(f"checkpoint from {len(rng)} ranks resumed on {self.world}: RNG streams are re-seeded")
            seed_everything(self.config.seed + 1000 * self.rank + self.step)
        if self.main:
            print(f"resumed from {path} at step {self.step}", flush=True)
        return True

    # --- training ------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Train to ``config.steps``; returns ``{"train": [per-step records], "eval": [...]}``."""
        try:
            return self._fit(resume)
        finally:
            if self._owns_group and self._distributed:
                dist.destroy_process_group()

    def _fit(self, resume: bool) -> dict[str, list[dict[str, Any]]]:
        cfg = self.config
        resumed = resume and self._resume()
        if not resumed:
            self.sampler.set_epoch(0)
            self._sampler_state = self.sampler.state_dict()
        self._last_checkpoint = self._last_eval = self.step if resumed else -1
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            keep = self.step if resumed else None
            self.csv = CsvLog(self.out_dir / "log.csv", keep)
            self.eval_csv = CsvLog(self.out_dir / "eval.csv", keep)
            self.writer = None
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"),
                                            purge_step=self.step + 1 if resumed else None)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.main and cfg.progress), desc="train",
                   dynamic_ncols=True)
        stream, start = self._stream(fresh=not resumed), time.time() - self.elapsed
        try:
            while self.step < cfg.steps:
                record = self._train_step(stream)
                self.step += 1
                self.elapsed = time.time() - start
                record = dict(step=self.step, epoch=self.epoch, **record, elapsed=round(self.elapsed, 3))
                self.history["train"].append(record)
                if self.main:
                    self._log(record, bar)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
            if self._last_eval != self.step:
                self.evaluate()
            if self._last_checkpoint != self.step:
                self.save_checkpoint()
        finally:
            bar.close()
            if self.main and self.writer is not None:
                self.writer.close()
        if self.main:
            if hasattr(self.module, "save_pretrained"):
                self.module.save_pretrained(self.out_dir / "model")
            if self.csv.rows:
                plot_training_curves(self.out_dir / "log.csv", self.out_dir / "training_curves.png")
        if self._distributed:
            dist.barrier()
        return self.history

    def _train_step(self, stream) -> dict[str, float]:
        cfg, heads = self.config, self.heads
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        totals = torch.zeros(1 + 2 * len(heads), dtype=torch.float64)
        for micro in range(cfg.grad_accum):
            (batch, self._sampler_state) = next(stream)
            ids = batch.get("ids") if isinstance(batch, dict) else None
            batch = move_to_device(batch, self.device, non_blocking=True)
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self._distributed else self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    out = self.model(batch)
                loss = out.loss
                if not isinstance(loss, Tensor) or loss.dim() != 0:
                    raise TypeError("the model's forward must return an object whose .loss is a scalar tensor "
                                    f"(e.g. zoo.graph.ModelOutput); got {type(out).__name__}")
                losses = getattr(out, "losses", {}) or {}
                stats = [loss.detach().float()]
                for h in heads:
                    present = h in losses
                    stats += [losses[h].detach().float() if present else loss.new_zeros((), dtype=torch.float32),
                              loss.new_tensor(float(present), dtype=torch.float32)]
                stats = torch.stack(stats)
                local = float(stats[0])
                if self._distributed:
                    dist.all_reduce(stats)
                    stats[0] /= self.world
                stats = stats.double().cpu()
                if not math.isfinite(float(stats[0])):
                    where = f" (rank {self.rank} of {self.world})" if self._distributed else ""
                    whose = "" if not math.isfinite(local) else " on another rank"
                    raise FloatingPointError(
                        f"non-finite loss ({float(stats[0])}{whose}) at step {self.step + 1}, micro-batch "
                        f"{micro + 1}/{cfg.grad_accum}{where}; batch ids: {ids}. Check these inputs, lower lr "
                        "or enable clip_norm")
                (loss / cfg.grad_accum).backward()
            totals += stats
        grad_norm = float("nan")
        if cfg.clip_norm > 0:
            grad_norm = float(nn.utils.clip_grad_norm_(self.module.parameters(), cfg.clip_norm))
        self.optimizer.step()
        self.scheduler.step()
        record = dict(loss=float(totals[0]) / cfg.grad_accum)
        for i, h in enumerate(heads):
            count = float(totals[2 + 2 * i])
            record[f"loss_{h}"] = float(totals[1 + 2 * i]) / count if count else float("nan")
        return dict(record, lr=lr, grad_norm=grad_norm)

    def _log(self, record: dict[str, Any], bar) -> None:
        self.csv.write(record)
        bar.update(1)
        if self.step % self.config.log_every == 0 or self.step == self.config.steps:
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
            if self.writer is not None:
                for key, value in record.items():
                    if key not in ("step", "epoch") and math.isfinite(value):
                        self.writer.add_scalar(f"train/{key}", value, self.step)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """Run ``eval_fn`` on rank 0 without touching any RNG stream the training reads."""
        self._last_eval = self.step
        if self.eval_fn is None or not self.main:
            return None
        rng = capture_rng()
        self.module.eval()
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                metrics = {k: float(v) for k, v in self.eval_fn(self.module).items()}
        finally:
            self.module.train()
            restore_rng(rng)
        record = dict(step=self.step, **metrics)
        self.history["eval"].append(record)
        self.eval_csv.write(record)
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"eval/{key}", value, self.step)
        if self.config.progress:
            print(f"step {self.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
        return metrics
