"""Write large checkpoints in an endless loop (for tests/test_resume.py to SIGKILL at random).

Usage: python tests/scripts/checkpoint_writer.py DIR. Each payload's tensor is filled with its step,
so a reader can tell a whole checkpoint from a mixed or torn one.
"""
import sys

import torch

from zoo.checkpoint import save_checkpoint

directory = sys.argv[1]
weights = torch.empty(4_000_000)  # 16 MB
step = 0
while True:
    step += 1
    weights.fill_(step)
    save_checkpoint({"step": step, "weights": weights, "meta": {"note": "x" * 100, "ints": [step] * 10}},
                    directory, step, keep_last=2)
