"""Train a brain-decoding preset on the simulated cohort:
``python -m recipes.brain_decoding.train [--config FILE] [key=value ...] [--resume]``.

fMRI presets train on ``subjects`` (cross-subject: one model, batches mixing subjects with different
voxel counts); MEG presets train on every subject of the MEG cohort. The evaluation is retrieval on
the held-out test stimuli: top-1/top-5 among ``eval_n`` candidates (fMRI) and top-1/top-10 among all
test segments (MEG); the step fraction for BiMixCo is fed to the model through :func:`set_progress`.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from decoders.retrieval import set_progress
from recipes.brain_decoding.data import FMRIConfig, FMRITrials, collate_fmri, fmri_cohort
from recipes.brain_decoding.evaluate import evaluate_fmri, evaluate_meg
from recipes.brain_decoding.meg_data import MEGConfig, MEGSegments, collate_meg, meg_cohort
from zoo.config import parse_train_args, save_config
from zoo.registry import MODELS, create_model
from zoo.train import TrainConfig, Trainer, seed_everything

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"


@dataclass
class BrainConfig:
    model: str = "brain_mindeye2_tiny"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    subjects: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])   # fMRI training subjects
    fraction: float = 1.0                                              # of each subject's training trials
    eval_n: int = 100
    fmri: FMRIConfig = field(default_factory=FMRIConfig)
    meg: MEGConfig = field(default_factory=MEGConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/brain-tiny"))


def modality(model_name: str) -> str:
    return MODELS.get(model_name).modality or "fmri"


def make_data(cfg: BrainConfig):
    """(cohort, train dataset, collate, eval_fn) for the preset's modality."""
    if modality(cfg.model) == "meg":
        cohort = meg_cohort(cfg.meg)
        return cohort, MEGSegments(cohort, None, "train"), collate_meg, lambda m: evaluate_meg(m, cohort)
    cohort = fmri_cohort(cfg.fmri)
    train = FMRITrials(cohort, cfg.subjects, "train", cfg.fraction)
    return cohort, train, collate_fmri, lambda m: evaluate_fmri(m, cohort, cfg.subjects, n=cfg.eval_n).summary()


def build_model(cfg: BrainConfig, cohort) -> torch.nn.Module:
    kwargs = dict(cfg.model_kwargs)
    if modality(cfg.model) == "meg":
        kwargs.setdefault("n_subjects", len(cohort.subjects))
        kwargs.setdefault("target_dim", cohort.config.speech_dim)
    else:
        kwargs.setdefault("subjects", {str(s): cohort.subjects[s].n_voxels for s in cfg.subjects})
        kwargs.setdefault("embed_dim", cohort.config.embed_dim)
    return create_model(cfg.model, **kwargs)


def install_progress(model: torch.nn.Module, trainer: Trainer) -> None:
    """Before every training forward, tell the BiMixCo schedule how far training has come."""
    total = trainer.config.steps
    model.register_forward_pre_hook(lambda m, args: set_progress(m, trainer.step / total) if m.training else None)


def fit(model, dataset, collate, config: TrainConfig, eval_fn=None, resume: bool = False) -> dict:
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(model, dataset, collate, config, eval_fn=eval_fn)
        install_progress(model, trainer)
        return trainer.fit(resume=resume)
    finally:
        torch.set_num_threads(threads)      # config.num_threads applies to this run only


def quick_config(out_dir: str | Path, steps: int, batch_size: int, lr: float = 1e-3, seed: int = 0) -> TrainConfig:
    """A TrainConfig for scripted runs (quickstart, benchmark): quiet, final checkpoint only, one CPU thread
    (these models are tiny; a second intra-op thread costs more in synchronisation than it gains)."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(50, steps // 10), out_dir=str(out_dir),
                       log_every=max(1, steps // 5), progress=False, tensorboard=False, keep_last=1, seed=seed,
                       num_threads=1)


def train_fmri(cohort, subjects: list[int], out_dir: str | Path, steps: int, model: str = "brain_mindbridge_tiny",
               fraction: float = 1.0, seed: int = 0, **model_kwargs) -> torch.nn.Module:
    """Train ``model`` across ``subjects`` (the first ``fraction`` of each one's trials); saved under out_dir/model."""
    seed_everything(seed)
    data = FMRITrials(cohort, subjects, "train", fraction)
    net = build_model(BrainConfig(model=model, model_kwargs=model_kwargs, subjects=subjects, fmri=cohort.config), cohort)
    fit(net, data, collate_fmri, quick_config(out_dir, steps, min(128, len(data)), seed=seed))
    return net.eval()


def train_meg(cohort, out_dir: str | Path, steps: int, model: str = "meg_clip_tiny", seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    net = build_model(BrainConfig(model=model, meg=cohort.config), cohort)
    fit(net, MEGSegments(cohort, None, "train"), collate_meg, quick_config(out_dir, steps, 64, seed=seed))
    return net.eval()


def main(argv: Sequence[str] | None = None) -> int:
    cfg, resume = parse_train_args(argv, BrainConfig, DEFAULT_CONFIG, prog="python -m recipes.brain_decoding.train")
    seed_everything(cfg.train.seed)
    cohort, dataset, collate, eval_fn = make_data(cfg)
    model = build_model(cfg, cohort)
    print(model.describe(), flush=True)
    Path(cfg.train.out_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.train.out_dir) / "config.yaml")
    history = fit(model, dataset, collate, cfg.train, eval_fn, resume)
    if history["eval"]:
        print("final eval:", history["eval"][-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
