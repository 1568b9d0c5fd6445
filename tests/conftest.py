"""Test-wide settings: one intra-op thread per process (the suite also runs multi-process tests such as
DDP on 2 cores, where more threads only oversubscribe), offline hub, headless plots."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
