"""Train an audio-visual captioner on rendered scenes.

    zoo train captioning [--config FILE] [key=value ...] [--resume]
    python -m recipes.captioning.train --config recipes/captioning/configs/tiny.yaml train.steps=200

A word tokenizer is trained on the training captions and stored in config.json; every row draws a
modality group (va / v / a, VALOR's grouping captioning) and the ``align`` head adds the contrastive
group alignment. The eval scores held-out scenes (unseen colour-shape pairs) with both modalities.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recipes.captioning.data import CaptionScenes, tokenizer_texts, train_caption_tokenizer
from recipes.captioning.evaluate import HELD_OUT_SEED, make_eval_fn
from zoo.config import parse_train_args, save_config
from zoo.registry import create_model
from zoo.train import TrainConfig, Trainer, seed_everything

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"


@dataclass
class ModelConfig:
    name: str = "caption_av_tiny"     # caption_av_tiny | caption_av_tiny_resnet | xdecoder_scenes_tiny
    align_weight: float = 0.1         # caption_av_*: weight of the MGA contrastive head
    ground_weight: float = 1.0        # xdecoder_*: weight of the grounding loss (0 = caption-only baseline)
    parallel_head: bool = False       # caption_av_tiny: add a Mask-Predict caption head ``caption_nar``


@dataclass
class DataConfig:
    n_train: int = 4000
    n_eval: int = 200
    seed: int = 0
    group: str = "sample"             # sample | va | v | a
    group_weights: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])


@dataclass
class CaptionConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/caption-tiny"))


def build(cfg: CaptionConfig):
    train_set = CaptionScenes(cfg.data.n_train, "train", cfg.data.seed, group=cfg.data.group,
                              group_weights=tuple(cfg.data.group_weights))
    tokenizer = train_caption_tokenizer(tokenizer_texts(train_set.items))
    train_set.tokenizer = tokenizer
    if cfg.model.name.startswith("caption_av"):
        extra = {"align_weight": cfg.model.align_weight}
        if cfg.model.parallel_head:
            extra["parallel_head"] = True
    else:
        extra = {"ground_weight": cfg.model.ground_weight}
    model = create_model(cfg.model.name, vocab_size=tokenizer.vocab_size,
                         tokenizers={h: tokenizer.to_dict() for h in ("caption", "caption_nar", "xdec")}, **extra)
    return model, train_set, tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    cfg, resume = parse_train_args(argv, CaptionConfig, DEFAULT_CONFIG, prog="zoo train captioning")
    seed_everything(cfg.train.seed)
    model, train_set, _ = build(cfg)
    eval_fn = None
    if cfg.data.n_eval > 0:
        eval_fn = make_eval_fn(CaptionScenes(cfg.data.n_eval, "test", HELD_OUT_SEED, group="va"))
    from recipes.captioning.data import collate

    trainer = Trainer(model, train_set, collate, cfg.train, eval_fn=eval_fn)
    if trainer.main:
        out = Path(cfg.train.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        print(f"{model.name}: {sum(p.numel() for p in model.parameters()):,} parameters; "
              f"{len(train_set)} training scenes", flush=True)
    history = trainer.fit(resume=resume)
    if trainer.main and history["eval"]:
        print("final eval:", history["eval"][-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
