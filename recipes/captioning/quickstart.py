"""Captioning part of the quickstart.

1. The tiny audio-visual captioner (``configs/tiny.yaml``): trained, scored on unseen colour-shape pairs
   (CIDEr-D, BLEU-4, exact match, audio swap), card written; ``captions.md`` + ``captions.png`` show
   held-out scenes captioned with their sound, with the image alone, and with the sound swapped.
2. The X-Decoder (``configs/xdecoder_tiny.yaml``, shortened to 300 steps of 16): trained on captions +
   referring expressions, scored (mIoU, CIDEr-D), card written; ``masks/*.png`` overlay what it segments
   for a referring expression.

``fast``: a smoke run of both (a few steps on a few hundred scenes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recipes.captioning import evaluate, train
from recipes.captioning.data import SOUNDS, CaptionScenes, collate, synth_sound
from zoo.plots import plot_captioned_images, plot_mask_overlay

XDECODER_CONFIG = Path(train.__file__).parent / "configs" / "xdecoder_tiny.yaml"
FAST = ["train.batch_size=16", "data.n_train=300", "data.n_eval=0", "train.warmup_steps=5",
        "train.tensorboard=false", "train.num_threads=1"]


# the X-Decoder's own config (1200 steps of 32, ~16 min) shows its mIoU; the quickstart's 30-minute budget
# leaves it ~2 minutes: enough for the overlays to show what it has learned, not for its best masks. The
# short run weights grounding 0.3 (the config's 0.1 balances captions and masks over the full 1200 steps).
XDECODER_QUICK = ["model.ground_weight=0.3", "train.steps=300", "train.batch_size=16", "train.warmup_steps=30",
                  "train.checkpoint_every=300"]


def _train(out_dir: Path, fast: bool, config: Path | None = None, extra: list[str] = ()) -> Path:
    steps = ["train.steps=30", "train.checkpoint_every=30", *FAST] if fast else ["train.eval_every=0", *extra]
    train.main((["--config", str(config)] if config else []) + [f"train.out_dir={out_dir}", "train.progress=false",
                                                              *steps])
    return out_dir / "model"


@torch.no_grad()
def show_captions(model, out_dir: Path, n: int = 6) -> dict:
    """Caption ``n`` held-out scenes three ways (their sound, the image alone, another sound) into
    captions.md and captions.png."""
    scenes = CaptionScenes(n, "test", evaluate.HELD_OUT_SEED, group="va").items
    rng = np.random.default_rng(0)
    swapped = [SOUNDS[(SOUNDS.index(it["sound"]) + 1 + int(rng.integers(3))) % len(SOUNDS)] for it in scenes]
    rows = ([dict(it, group="va") for it in scenes] + [dict(it, group="v") for it in scenes]
            + [dict(it, group="va", audio=synth_sound(s, rng)) for it, s in zip(scenes, swapped)])
    model.eval()
    texts = [h.text for h in model.generate(collate(rows), heads="caption")["caption"]]
    lines = ["# Held-out scenes (unseen colour-shape pairs)", "",
             "| scene | reference | with its sound | image only | with another sound |", "|---|---|---|---|---|"]
    for i, it in enumerate(scenes):
        lines.append(f"| {it['id']} | {it['captions'][0]} | {texts[i]} | {texts[n + i]} | "
                     f"({swapped[i]}) {texts[2 * n + i]} |")
    (out_dir / "captions.md").write_text("\n".join(lines) + "\n")
    png = plot_captioned_images(out_dir / "captions.png", [it["image"] for it in scenes], texts[:n])
    return {"captions": str(out_dir / "captions.md"), "captions_plot": str(png)}


def show_masks(model, out_dir: Path, n: int = 4) -> list[str]:
    """Mask overlays of one referring expression in each of ``n`` held-out scenes."""
    scenes = [it for it in CaptionScenes(3 * n, "test", evaluate.HELD_OUT_SEED).items if it["referring"]][:n]
    paths = []
    for k, it in enumerate(scenes):
        expression, _ = it["referring"][0]
        mask, prob = evaluate.ground_mask(model, torch.from_numpy(it["image"]), expression)
        path = plot_mask_overlay(out_dir / "masks" / f"{k}-{expression.replace(' ', '_')}.png", it["image"],
                                 mask.numpy(), title=f"{expression} (p={prob:.2f})")
        paths.append(str(path))
    return paths


def run(out_dir: Path, fast: bool = False) -> dict:
    from zoo.graph import ZooModel

    out_dir = Path(out_dir)
    size = "16" if fast else "300"
    model_dir = _train(out_dir, fast)
    evaluate.main(["--model", str(model_dir), "--size", size])
    result = {"model": str(model_dir), "card": str(model_dir / "README.md"),
              "training_curves": str(out_dir / "training_curves.png"),
              **show_captions(ZooModel.from_pretrained(model_dir), out_dir)}
    xdec_dir = _train(out_dir / "xdecoder", fast, XDECODER_CONFIG, XDECODER_QUICK)
    evaluate.main(["--model", str(xdec_dir), "--size", "16" if fast else "100"])
    result.update(xdecoder=str(xdec_dir), xdecoder_card=str(xdec_dir / "README.md"),
                  masks=show_masks(ZooModel.from_pretrained(xdec_dir), out_dir))
    return result
