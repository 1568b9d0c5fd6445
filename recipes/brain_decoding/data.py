"""A simulated fMRI cohort (NSD-like) and its batches.

Stimuli are scenes from :mod:`zoo.data.scenes`. The *target space* is a frozen, seeded random-weights
``timm`` ResNet-18 (``pretrained=False``; stage-3 features average-pooled to 2x2, 1,024 values)
followed by a PCA whitening to ``embed_dim`` fitted on training images only. The "brain" encodes a
shared low-dimensional latent ``z = tanh(gain * W e + b)`` of the target embedding ``e``; subject s
(800-1,500 voxels) sees it through its voxel tuning ``A_s``, plus low-rank structured trial noise and
white noise: ``v = gain_v * (A_s z + nuisance * B_s f + noise * eps) + offset_v``. ``A_s`` mixes a
cortical map shared by all subjects, sampled at the subject's own voxel positions along a 1-D sheet
(voxels are ordered along it, slightly warped per subject), with an idiosyncratic random part
(``topography`` sets the shares). That shared topography is the premise of MindBridge's aggregation
(adaptive pooling along the voxel order); real ``nsdgeneral`` voxel order is only partly topographic.
As in NSD (Allen et al., Nat. Neurosci. 2022), every image is shown ``repeats`` times; each subject
has its own training images (trained on as single trials) and all subjects share the test images,
whose trials are averaged; voxels are z-scored with training statistics only.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data import data_root
from zoo.data.scenes import SceneOptions, render_scene

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def cache_root() -> Path:
    """``brain_decoding`` under the recipes' data root (``zoo.data.data_root``: ``$ZOO_DATA_DIR``)."""
    return data_root() / "brain_decoding"


@dataclass(frozen=True)
class FMRIConfig:
    voxels: tuple[int, ...] = (1024, 1310, 870, 1480, 1150, 940, 1200, 1390)  # subject s has voxels[s - 1]
    n_train: int = 200           # training images per subject (its own images), ``repeats`` single trials each
    n_test: int = 300            # shared test images, ``repeats`` trials averaged
    repeats: int = 3
    embed_dim: int = 64          # target space (whitened PCA of the frozen vision features)
    latent_dim: int = 16         # shared brain latent
    gain: float = 2.0            # nonlinearity of the latent code
    noise: float = 3.0           # white voxel noise (signal variance per voxel ~ 1)
    nuisance: float = 1.0        # structured (rank ``nuisance_rank``) trial noise
    nuisance_rank: int = 8
    topography: float = 0.8      # share of voxel tuning from the cortical map common to all subjects
    map_frequencies: int = 8     # smoothness of that map along the voxel order (cycles over the sheet)
    warp: float = 0.01           # subject-specific warp of voxel positions on the sheet
    image_size: int = 64
    seed: int = 0


class FrozenVision:
    """The frozen stimulus encoder: seeded random-weights ResNet-18, stage-3 features pooled to 2x2."""

    def __init__(self, seed: int = 0):
        import timm

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(3,)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 200) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 1024) float32."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8 RGB, got shape {images.shape}")
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        out = []
        for i in range(0, len(images), batch):
            x = (torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 255 - mean) / std
            f = torch.nn.functional.adaptive_avg_pool2d(self.net(x)[0], 2)
            out.append(f.flatten(1).numpy())
        return np.concatenate(out).astype(np.float32)


@dataclass
class TargetSpace:
    """Standardise + PCA-whiten frozen vision features into the ``embed_dim`` target space."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray       # (D, F), rows already divided by the component's std

    @classmethod
    def fit(cls, features: np.ndarray, dim: int) -> TargetSpace:
        mean, scale = features.mean(0), features.std(0) + 1e-3
        z = (features - mean) / scale
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        std = s[:dim] / np.sqrt(len(z) - 1)
        return cls(mean, scale, (vt[:dim] / std[:, None]).astype(np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (((features - self.mean) / self.scale) @ self.components.T).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        np.savez(path, mean=self.mean, scale=self.scale, components=self.components)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> TargetSpace:
        with np.load(path) as f:
            return cls(f["mean"], f["scale"], f["components"])


@dataclass
class SubjectData:
    subject: int
    train_voxels: np.ndarray     # (n_train * repeats, n_vox) z-scored single trials, image-major
    train_images: np.ndarray     # (n_train * repeats,) index into the cohort's image table
    test_voxels: np.ndarray      # (n_test, n_vox) repeats averaged, z-scored with training statistics
    test_images: np.ndarray

    @property
    def n_voxels(self) -> int:
        return self.train_voxels.shape[1]


@dataclass
class FMRICohort:
    config: FMRIConfig
    image_seeds: np.ndarray      # (n_images, 3) scene seeds: render_scene(tuple(row))
    embeddings: np.ndarray       # (n_images, D) target embedding of every image
    subjects: dict[int, SubjectData] = field(default_factory=dict)
    space: TargetSpace | None = None

    def image(self, index: int) -> np.ndarray:
        return render_scene(tuple(int(s) for s in self.image_seeds[index]), SceneOptions(size=self.config.image_size)).image

    def voxel_counts(self) -> dict[str, int]:
        return {str(s): d.n_voxels for s, d in self.subjects.items()}


def stimuli(cfg: FMRIConfig, cache: bool = True) -> tuple[np.ndarray, np.ndarray, TargetSpace]:
    """Scene seeds, target embeddings and the fitted target space of every image (test images first).

    The frozen-encoder pass is the slow part, so it is cached under ``$ZOO_DATA_DIR/brain_decoding``
    (default ~/.cache/encdec-zoo), keyed by everything it depends on.
    """
    n_sub = len(cfg.voxels)
    seeds = [(cfg.seed, 0, i) for i in range(cfg.n_test)]
    seeds += [(cfg.seed, s, i) for s in range(1, n_sub + 1) for i in range(cfg.n_train)]
    key = hashlib.sha1(json.dumps([seeds[-1], cfg.n_test, cfg.n_train, n_sub, cfg.embed_dim, cfg.image_size,
                                   cfg.seed]).encode()).hexdigest()[:12]
    path = cache_root() / f"stimuli-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            return f["seeds"], f["embeddings"], TargetSpace(f["mean"], f["scale"], f["components"])
    opts = SceneOptions(size=cfg.image_size)
    feats = FrozenVision(cfg.seed)(np.stack([render_scene(k, opts).image for k in seeds]))
    space = TargetSpace.fit(feats[cfg.n_test:], cfg.embed_dim)          # training images only
    seeds, emb = np.asarray(seeds, dtype=np.int64), space(feats)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, seeds=seeds, embeddings=emb, mean=space.mean, scale=space.scale, components=space.components)
        tmp.replace(path)  # atomic: concurrent runs never read half a file
    return seeds, emb, space


def _voxel_tuning(cfg: FMRIConfig, r: np.random.Generator, n_vox: int) -> np.ndarray:
    """(n_vox, latent_dim) tuning of one subject's voxels: the shared cortical map sampled at the subject's
    (sorted, slightly warped) voxel positions, mixed with an idiosyncratic random part."""
    k = np.arange(1, cfg.map_frequencies + 1)
    shared = np.random.default_rng([cfg.seed, 3])
    a, b = (shared.normal(size=(cfg.latent_dim, len(k))) / np.sqrt(k) for _ in range(2))
    x = np.sort(r.uniform(0, 1, n_vox))
    x = x + cfg.warp * np.sin(2 * np.pi * x + r.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * x[:, None] * k[None, :]
    topo = np.cos(phase) @ a.T + np.sin(phase) @ b.T
    topo /= topo.std()
    own = r.normal(size=(n_vox, cfg.latent_dim))
    t = cfg.topography
    return (np.sqrt(t) * topo + np.sqrt(1 - t) * own) / np.sqrt(cfg.latent_dim)


def fmri_cohort(cfg: FMRIConfig = FMRIConfig(), cache: bool = True) -> FMRICohort:
    """Simulate the cohort for ``cfg`` (deterministic; only the stimulus embeddings are cached)."""
    seeds, emb, space = stimuli(cfg, cache)
    rng = np.random.default_rng([cfg.seed, 1])
    w = rng.normal(size=(cfg.latent_dim, cfg.embed_dim)) / np.sqrt(cfg.embed_dim)
    b = rng.normal(0, 0.5, cfg.latent_dim)
    latent = np.tanh(cfg.gain * emb @ w.T + b)
    latent = (latent - latent[cfg.n_test:].mean(0)) / latent[cfg.n_test:].std(0)
    cohort = FMRICohort(cfg, seeds, emb, space=space)
    test_idx = np.arange(cfg.n_test)
    for s, n_vox in enumerate(cfg.voxels, start=1):
        r = np.random.default_rng([cfg.seed, 2, s])
        mixing = _voxel_tuning(cfg, r, n_vox)
        nuisance = r.normal(size=(n_vox, cfg.nuisance_rank)) / np.sqrt(cfg.nuisance_rank)
        gain, offset = r.lognormal(0, 0.3, n_vox), r.normal(0, 1, n_vox)

        def trials(idx: np.ndarray) -> np.ndarray:
            clean = latent[idx] @ mixing.T
            structured = r.normal(size=(len(idx), cfg.nuisance_rank)) @ nuisance.T
            return gain * (clean + cfg.nuisance * structured + cfg.noise * r.normal(size=clean.shape)) + offset

        train_idx = np.repeat(cfg.n_test + (s - 1) * cfg.n_train + np.arange(cfg.n_train), cfg.repeats)
        train = trials(train_idx)                  # image-major: the repeats of an image are adjacent
        test = np.mean([trials(test_idx) for _ in range(cfg.repeats)], axis=0)
        mu, sd = train.mean(0), train.std(0)
        cohort.subjects[s] = SubjectData(s, ((train - mu) / sd).astype(np.float32), train_idx,
                                         ((test - mu) / sd).astype(np.float32), test_idx)
    return cohort


class FMRITrials(Dataset):
    """Trials of ``subjects`` from one split; ``start``/``fraction`` select a contiguous part of each subject's
    images (all repeats of an image stay together)."""

    def __init__(self, cohort: FMRICohort, subjects: list[int] | None = None, split: str = "train",
                 fraction: float = 1.0, start: float = 0.0):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        subjects = list(cohort.subjects) if subjects is None else list(subjects)
        missing = [s for s in subjects if s not in cohort.subjects]
        if missing:
            raise ValueError(f"subjects {missing} are not in the cohort (it has {sorted(cohort.subjects)})")
        self.cohort, self.items = cohort, []
        for s in subjects:
            d = cohort.subjects[s]
            voxels, images = (d.train_voxels, d.train_images) if split == "train" else (d.test_voxels, d.test_images)
            r = cohort.config.repeats if split == "train" else 1   # whole images: never split an image's repeats
            n_img = len(images) // r
            lo, hi = r * int(round(start * n_img)), r * int(round((start + fraction) * n_img))
            self.items += [(s, voxels, images, i) for i in range(lo, min(hi, len(images)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        s, voxels, images, j = self.items[i]
        return dict(id=f"sub{s:02d}-img{int(images[j]):06d}", subject=s, voxels=torch.from_numpy(voxels[j]),
                    embedding=torch.from_numpy(self.cohort.embeddings[images[j]]), image=int(images[j]))


def collate_fmri(items: list[dict]) -> dict:
    """Pad voxels to the widest subject; ``fmri_lengths`` = each row's voxel count."""
    lengths = torch.tensor([len(it["voxels"]) for it in items])
    fmri = torch.zeros(len(items), int(lengths.max()))
    for row, it in enumerate(items):
        fmri[row, : len(it["voxels"])] = it["voxels"]
    subject_ids = torch.tensor([it["subject"] for it in items])
    return dict(ids=[it["id"] for it in items], fmri=fmri, fmri_lengths=lengths, subject_ids=subject_ids,
                images=torch.tensor([it["image"] for it in items]),
                targets=dict(retrieval=dict(embedding=torch.stack([it["embedding"] for it in items])),
                             cycle=dict(subject_ids=subject_ids)))
