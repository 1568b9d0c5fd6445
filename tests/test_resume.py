"""Crash safety: a SIGKILLed run resumes bit-identically; a kill mid-write never corrupts the newest
checkpoint; torn or unsafe files are refused; the sampler resumes at the exact batch."""
import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipes.toy.train import main
from zoo.checkpoint import (
    checkpoint_name,
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from zoo.data.sampler import ResumableBatchSampler
from zoo.hub import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "scripts"


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")



def _args(out: Path) -> list[str]:
    # 96 rows / micro-batch 8 = 12 micro-batches = 6 updates per epoch: checkpoints fall mid-epoch;
    # a worker process prefetches batches, so the sampler runs ahead of the consumed position
    return [f"train.out_dir={out}", "train.steps=30", "train.batch_size=16", "train.grad_accum=2",
            "train.checkpoint_every=10", "train.eval_every=10", "train.keep_last=2", "train.num_workers=1",
            "train.num_threads=1", "train.progress=false", "train.tensorboard=false", "train.warmup_steps=5",
            "data.train_size=96", "data.eval_size=32", "model.dim=16"]


def _csv(path: Path, columns: list[str]) -> list[list[str]]:
    with path.open() as handle:
        return [[row[c] for c in columns] for row in csv.DictReader(handle)]


def test_sigkilled_run_resumes_bit_identically(tmp_path):
    crashed, reference = tmp_path / "crashed", tmp_path / "reference"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "train_then_die.py"), "25", *_args(crashed)],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = [p.name for p in list_checkpoints(crashed / "checkpoints")]
    assert names == [checkpoint_name(10), checkpoint_name(20)]
    assert not (crashed / "model").exists()
    assert len(_csv(crashed / "log.csv", ["step"])) == 24  # logged past the last checkpoint; died in update 25

    assert main([*_args(crashed), "--resume"]) == 0
    assert main(_args(reference)) == 0

    final, expected = (load_file(d / "model" / "model.safetensors") for d in (crashed, reference))
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final), "resumed weights differ from an uninterrupted run"
    a, b = (load_checkpoint(d / "checkpoints" / checkpoint_name(30)) for d in (crashed, reference))
    assert a["sampler"] == b["sampler"] and a["sampler"]["served"] == 12 and a["epoch"] == b["epoch"] == 4
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    columns = ["step", "epoch", "loss", "loss_tags", "loss_majority", "lr", "grad_norm"]
    assert _csv(crashed / "log.csv", columns) == _csv(reference / "log.csv", columns)  # rows 21-25 replaced
    assert (crashed / "eval.csv").read_text() == (reference / "eval.csv").read_text()


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_latest(tmp_path):
    rng = random.Random(0)
    caught_mid_write = 0
    for attempt in range(6):
        directory = tmp_path / f"try{attempt}"
        proc = subprocess.Popen([sys.executable, str(SCRIPTS / "checkpoint_writer.py"), str(directory)],
                                env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not list_checkpoints(directory) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        leftovers = [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
        caught_mid_write += bool(leftovers)
        found = list_checkpoints(directory)
        assert found and all(p.name.startswith("step-") for p in found) and len(found) <= 3
        latest = latest_checkpoint(directory)
        payload = load_checkpoint(latest)
        step = payload["step"]
        assert latest.name == checkpoint_name(step) and latest == found[-1]
        assert torch.equal(payload["weights"], torch.full((4_000_000,), float(step)))
        assert payload["meta"]["ints"] == [step] * 10
        if caught_mid_write:
            break
    assert caught_mid_write, "no kill landed inside a write; the test did not exercise a torn write"


def test_torn_and_unsafe_files_are_never_used(tmp_path):
    for step in (1, 2):
        save_checkpoint({"step": step, "w": torch.ones(1000) * step}, tmp_path, step)
    good = (tmp_path / checkpoint_name(2)).read_bytes()
    (tmp_path / checkpoint_name(3)).write_bytes(good[: len(good) // 2])  # a torn copy, not an atomic write
    assert not is_complete(tmp_path / checkpoint_name(3))
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(2)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / checkpoint_name(3))
    torch.save({"step": 4, "payload": _Evil()}, tmp_path / checkpoint_name(4))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(latest_checkpoint(tmp_path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_keep_last_prunes_oldest(tmp_path):
    for step in range(1, 6):
        save_checkpoint({"step": step}, tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [checkpoint_name(4), checkpoint_name(5)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_sampler_resumes_at_the_exact_batch_across_epochs():
    full = ResumableBatchSampler(20, 6, seed=3)  # 3 batches per epoch (drop_last)
    expected = []
    for epoch in range(3):
        full.set_epoch(epoch)
        expected += list(full)
    for consumed in (1, 3, 4, 7):  # mid-epoch and exactly at an epoch's end
        s = ResumableBatchSampler(20, 6, seed=3)
        got, epoch = [], 0
        s.set_epoch(0)
        while len(got) < consumed:
            for batch in s:
                got.append(batch)
                if len(got) == consumed:
                    break
            else:
                epoch += 1
                s.set_epoch(epoch)
        state = s.state_dict()
        resumed = ResumableBatchSampler(20, 6, seed=3)
        resumed.load_state_dict(state)
        epoch = state["epoch"]
        while len(got) < len(expected):
            got += list(resumed)
            epoch += 1
            resumed.set_epoch(epoch)
        assert got == expected, consumed
    with pytest.raises(ValueError, match="batch_size=6 but this sampler has batch_size=4"):
        ResumableBatchSampler(20, 4, seed=3).load_state_dict(state)
