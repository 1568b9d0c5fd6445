"""``zoo decode-brain MODEL --subject S BETAS.npy --candidates DIR [--top K]``: rank candidate stimuli.

MODEL is a ``save_pretrained`` directory (or a registered ``name.tag`` with weights). BETAS.npy holds
one trial (n_voxels,) or several (R, n_voxels): repeats are averaged unless ``--each`` ranks every
row. DIR holds ``embeddings.npy`` (N, D) in the model's target space (optional ``names.txt``, one name
per line), or images (``*.png``/``*.jpg``) plus a ``target_space.npz`` (in DIR or the model directory)
that maps the frozen vision encoder's features into the target space.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_model(spec: str):
    from zoo.graph import ZooModel
    from zoo.registry import create_model

    if Path(spec).is_dir():
        return ZooModel.from_pretrained(spec)
    return create_model(spec, pretrained=True).eval()


def load_candidates(directory: Path, model_dir: Path | None = None) -> tuple[torch.Tensor, list[str]]:
    """Candidate embeddings (N, D) and names from ``embeddings.npy`` or from images + ``target_space.npz``."""
    if not directory.is_dir():
        raise FileNotFoundError(f"candidate directory {directory} does not exist")
    emb_path = directory / "embeddings.npy"
    if emb_path.is_file():
        emb = np.load(emb_path, allow_pickle=False)
        names_path = directory / "names.txt"
        names = names_path.read_text().splitlines() if names_path.is_file() else [f"candidate {i}" for i in range(len(emb))]
        if len(names) != len(emb):
            raise ValueError(f"{names_path} has {len(names)} names for {len(emb)} embeddings; give one name per line")
        return torch.from_numpy(emb.astype(np.float32)).reshape(len(emb), -1), names
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"{directory} holds neither embeddings.npy nor images ({', '.join(IMAGE_SUFFIXES)})")
    space_path = next((p for p in (directory / "target_space.npz", (model_dir or directory) / "target_space.npz")
                       if p.is_file()), None)
    if space_path is None:
        raise FileNotFoundError(f"images need target_space.npz (the frozen encoder's PCA) in {directory} or the model "
                                "directory; or write embeddings.npy instead")
    from PIL import Image

    from recipes.brain_decoding.data import FrozenVision, TargetSpace

    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])
    emb = TargetSpace.load(space_path)(FrozenVision()(pixels))
    return torch.from_numpy(emb), [p.name for p in images]


def decode_brain(args) -> int:
    model = load_model(args.model)
    enc = next((m for m in model.encoders.values() if hasattr(m, "subjects")), None)
    if enc is None:
        raise ValueError(f"{args.model} is not an fMRI model (no fmri_encoder); decode-brain ranks image candidates")
    betas = np.load(args.betas, allow_pickle=False).astype(np.float32)
    if betas.ndim == 1:
        betas = betas[None]
    if betas.ndim != 2:
        raise ValueError(f"{args.betas} must hold (n_voxels,) or (repeats, n_voxels) betas, got shape {betas.shape}")
    queries = betas if args.each else betas.mean(0, keepdims=True)
    model_dir = Path(args.model) if Path(args.model).is_dir() else None
    candidates, names = load_candidates(Path(args.candidates), model_dir)
    if len(candidates) < args.top:
        raise ValueError(f"the candidate set has {len(candidates)} entries but --top {args.top} was asked for; "
                         f"add candidates to {args.candidates} or lower --top")
    from zoo.metrics_retrieval import rank_candidates

    batch = dict(fmri=torch.from_numpy(queries), fmri_lengths=torch.full((len(queries),), queries.shape[1]),
                 subject_ids=torch.full((len(queries),), args.subject))
    with torch.no_grad():
        emb = model.generate(batch, heads="retrieval")["retrieval"]
    for q, e in enumerate(emb):
        idx, scores = rank_candidates(e, candidates, args.top)
        label = f"trial {q}" if args.each else f"mean of {len(betas)} trial(s)"
        print(f"subject {args.subject}, {label}: top {args.top} of {len(candidates)} candidates")
        for rank, (i, s) in enumerate(zip(idx.tolist(), scores.tolist()), start=1):
            print(f"  {rank:>3}. {names[i]:<40} cosine {s:+.3f}")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("decode-brain", help="rank candidate stimuli for fMRI betas",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", help="a save_pretrained directory or a registered name.tag with weights")
    p.add_argument("betas", help=".npy with (n_voxels,) or (repeats, n_voxels) betas of the subject")
    p.add_argument("--subject", type=int, required=True, help="subject id the model has an adapter for")
    p.add_argument("--candidates", required=True, help="directory with embeddings.npy or images + target_space.npz")
    p.add_argument("--top", type=int, default=5, help="how many candidates to print")
    p.add_argument("--each", action="store_true", help="rank each row of BETAS instead of their mean")
    p.set_defaults(func=decode_brain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
