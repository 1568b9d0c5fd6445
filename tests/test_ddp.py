"""Data parallelism: the sampler's per-rank slices rebuild the global batch, and ``torchrun`` with two
gloo ranks on CPU logs the same per-step losses as one process with the same global batch."""
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.toy.train import main
from zoo.checkpoint import load_checkpoint
from zoo.data.sampler import ResumableBatchSampler

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size, batch, world, drop_last", [(40, 8, 2, True), (41, 12, 4, True), (10, 4, 2, False),
                                                           (11, 4, 2, False), (9, 6, 3, False)])
def test_rank_slices_union_to_the_single_process_global_batch(size, batch, world, drop_last):
    single = ResumableBatchSampler(size, batch, seed=7, drop_last=drop_last, rank=0, world_size=1)
    ranks = [ResumableBatchSampler(size, batch, seed=7, drop_last=drop_last, rank=r, world_size=world)
             for r in range(world)]
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        expected = list(single)
        assert all(len(p) == len(expected) == len(single) for p in per_rank)
        for step, global_batch in enumerate(expected):
            sizes = {len(p[step]) for p in per_rank}
            assert len(sizes) == 1  # every rank gets the same number of rows
            union = [i for p in per_rank for i in p[step]]
            if len(global_batch) % world == 0:
                assert union == global_batch
            else:  # the short last batch is padded by wrapping around the epoch's order
                assert union[: len(global_batch)] == global_batch and len(union) % world == 0
        seen = sorted(i for b in expected for i in b)
        assert len(set(seen)) == len(seen) == (size // batch * batch if drop_last else size)  # each row once
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert first != list(single)  # the order depends on the epoch


def test_batch_size_must_split_over_ranks():
    with pytest.raises(ValueError, match="multiple of world_size 4"):
        ResumableBatchSampler(100, 10, rank=0, world_size=4)
    with pytest.raises(ValueError, match="no full batch"):
        ResumableBatchSampler(5, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run: Path) -> list[list[float]]:
    with (run / "log.csv").open() as handle:
        return [[float(r[k]) for k in ("loss", "loss_tags", "loss_majority")] for r in csv.DictReader(handle)]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")
def test_torchrun_two_ranks_match_one_process(tmp_path):
    # equal lengths and full labels: a mean of two half-batch means is the full-batch mean
    common = ["train.steps=6", "train.batch_size=16", "train.lr=3e-3", "train.progress=false",
              "train.tensorboard=false", "data.min_len=12", "data.max_len=12", "data.missing_fraction=0",
              "data.train_size=64", "data.eval_size=16", "model.dim=16"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "recipes.toy.train", f"train.out_dir={tmp_path / 'ddp'}",
           *common]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([f"train.out_dir={tmp_path / 'single'}", *common]) == 0
    finally:
        torch.set_num_threads(threads)
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step-00000006.pt")["world_size"] == 2
    ddp, single = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert len(ddp) == len(single) == 6
    for step, (a, b) in enumerate(zip(ddp, single), 1):
        assert a == pytest.approx(b, rel=1e-5), f"step {step}"
    assert len({round(row[0], 6) for row in single}) == 6  # the model trained between steps
