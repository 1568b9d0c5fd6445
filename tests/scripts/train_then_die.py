"""Run ``recipes.toy.train.main(argv)`` and SIGKILL this very process right after optimizer update N.

Usage: python tests/scripts/train_then_die.py N [train args ...]. Used by tests/test_resume.py to
simulate a crash (no cleanup, no atexit, no flush) between two checkpoints.
"""
import os
import signal
import sys

import torch

die_after, argv = int(sys.argv[1]), sys.argv[2:]
original_step = torch.optim.AdamW.step
calls = 0


def step_then_maybe_die(self, *args, **kwargs):
    global calls
    out = original_step(self, *args, **kwargs)
    calls += 1
    if calls == die_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


torch.optim.AdamW.step = step_then_maybe_die
from recipes.toy.train import main

sys.exit(main(argv))
