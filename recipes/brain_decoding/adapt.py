"""Reset-tuning for a new subject (MindBridge, Wang et al., CVPR 2024, §3.4; MindEye2's fine-tuning,
Scotti et al., ICML 2024, §2.4): load a model trained on other subjects, give the new subject fresh
adapter layers (and a fresh voxel builder where the model has a cycle head), and train them on a
fraction of that subject's data, with the shared trunk frozen (default) or tuned as well:

``python -m recipes.brain_decoding.adapt --model DIR --subject 5 --fraction 0.1 --out DIR2 [--train-trunk]``
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from torch import nn

from recipes.brain_decoding.data import FMRICohort, FMRIConfig, FMRITrials, collate_fmri, fmri_cohort
from recipes.brain_decoding.evaluate import evaluate_fmri
from zoo.train import TrainConfig, seed_everything


def add_subject(model, subject_id: int | str, n_voxels: int) -> list[nn.Module]:
    """Give ``subject_id`` fresh adapters (and builders) in every fMRI node of a ZooModel, and record the
    subject in the model's config so ``save_pretrained``/``from_pretrained`` round-trip."""
    key, new = str(int(subject_id)), []
    configs = [model.spec_encoders, model.spec_decoders]
    mixin = getattr(model, "_hub_mixin_config", None) or {}
    configs += [mixin.get("encoders", {}), mixin.get("decoders", {})]
    for name, module in [*model.encoders.items(), *model.decoders.items()]:
        if hasattr(module, "add_subject") and hasattr(module, "adapters" if name in model.encoders else "builders"):
            new.append(module.add_subject(key, n_voxels))
            for spec in configs:
                if name in spec and "subjects" in spec[name]:
                    spec[name]["subjects"] = {**spec[name]["subjects"], key: int(n_voxels)}
    if not new:
        raise ValueError("this model has no fMRI subject adapters (fmri_encoder); add_subject needs an fMRI preset")
    return new


def freeze_for_adaptation(model, new_modules: list[nn.Module], train_trunk: bool = False) -> list[nn.Parameter]:
    """Only the new subject's modules train (plus everything else when ``train_trunk``); returns trainables."""
    for p in model.parameters():
        p.requires_grad_(train_trunk)
    for module in new_modules:
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def reset_tune(model, cohort: FMRICohort, subject: int, fraction: float, config: TrainConfig,
               train_trunk: bool = False, eval_n: int = 100):
    """Reset-tune ``model`` for ``subject`` on the first ``fraction`` of its training trials; returns the report."""
    from recipes.brain_decoding.train import fit

    if subject not in cohort.subjects:
        raise ValueError(f"subject {subject} is not in the cohort (it has {sorted(cohort.subjects)})")
    seed_everything(config.seed)                      # the fresh adapter's initialisation is reproducible
    new = add_subject(model, subject, cohort.subjects[subject].n_voxels)
    freeze_for_adaptation(model, new, train_trunk)
    data = FMRITrials(cohort, [subject], "train", fraction)
    fit(model, data, collate_fmri, replace(config, batch_size=min(config.batch_size, len(data))))
    for p in model.parameters():
        p.requires_grad_(True)
    return evaluate_fmri(model, cohort, [subject], n=eval_n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.brain_decoding.adapt", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a directory written by save_pretrained (trained on other subjects)")
    parser.add_argument("--subject", type=int, default=8, help="the new subject of the simulated cohort")
    parser.add_argument("--fraction", type=float, default=0.1, help="fraction of its training trials to use")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-trunk", action="store_true", help="tune the shared trunk too (default: frozen)")
    parser.add_argument("--noise", type=float, default=FMRIConfig.noise, help="simulated cohort noise")
    parser.add_argument("--out", required=True, help="where to save the adapted model")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
    from zoo.graph import ZooModel

    seed_everything(0)
    model = ZooModel.from_pretrained(args.model)
    cohort = fmri_cohort(FMRIConfig(noise=args.noise))
    config = TrainConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, out_dir=args.out, warmup_steps=0,
                         tensorboard=False, progress=False)
    report = reset_tune(model, cohort, args.subject, args.fraction, config, args.train_trunk)
    print(report.table(f"reset-tuned on {args.fraction:.0%} of subject {args.subject}'s trials"))
    print(f"adapted model saved to {Path(args.out) / 'model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
