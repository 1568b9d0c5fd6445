"""Seeded synthetic scenes: 2-4 coloured shapes on a varied background, with per-object masks and a
structured description (shape, colour, size, position, bbox) from which captions and referring
expressions can be written (CLEVR-style, Johnson et al., CVPR 2017, §3, but 2-D and tiny).

Everything is numpy on a pixel-centre grid, so one 64x64 scene takes well under a millisecond and a
scene is a pure function of its seed: ``render_scene(seed)`` returns the same pixels every time.

    scene = render_scene(7)                   # or render_scene((dataset_seed, index))
    scene.image                               # (H, W, 3) uint8
    scene.masks                               # (N, H, W) bool: the visible pixels of each object
    scene.objects[0].phrase                   # 'large red circle'
    scene.describe()                          # JSON-able dict
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (45, 85, 225), "yellow": (240, 215, 40),
    "purple": (150, 60, 195), "orange": (250, 140, 25), "cyan": (40, 205, 215), "white": (248, 248, 248),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {  # muted, so every object colour stands out
    "grey": (118, 118, 118), "charcoal": (38, 38, 42), "sand": (178, 160, 120), "slate": (70, 92, 104),
}
TEXTURES = ("plain", "gradient", "noise")
SIZES: dict[str, tuple[float, float]] = {"small": (0.075, 0.10), "large": (0.15, 0.19)}  # radius / side
POSITIONS = (("top left", "top", "top right"), ("left", "centre", "right"),
             ("bottom left", "bottom", "bottom right"))


@dataclass(frozen=True)
class SceneOptions:
    """What a scene may contain. ``size`` is the side in pixels; objects never overlap when
    ``min_gap`` >= 0 (pixels between their bounding circles)."""

    size: int = 64
    min_objects: int = 2
    max_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    textures: tuple[str, ...] = TEXTURES
    min_gap: float = 1.0

    def __post_init__(self):
        if self.size < 24:
            raise ValueError(f"scene size {self.size} is too small to draw shapes; use size >= 24")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        for kind, names, known in (("shape", self.shapes, SHAPES), ("colour", self.colours, COLOURS),
                                   ("background", self.backgrounds, BACKGROUNDS), ("texture", self.textures, TEXTURES)):
            bad = [n for n in names if n not in known]
            if bad or not names:
                raise ValueError(f"unknown {kind}s {bad or '(none given)'}; choose from {list(known)}")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object. ``center`` is (x, y) in pixels, ``bbox`` (x0, y0, x1, y1) with exclusive
    ends over its visible pixels, ``area`` the visible pixel count."""

    shape: str
    colour: str
    size: str
    position: str
    center: tuple[float, float]
    radius: float
    bbox: tuple[int, int, int, int]
    area: int
    rgb: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass
class Scene:
    image: np.ndarray                 # (H, W, 3) uint8
    masks: np.ndarray                 # (N, H, W) bool, visible pixels per object, disjoint
    objects: list[SceneObject]
    background: str
    texture: str
    seed: tuple[int, ...] = field(default=())

    def describe(self) -> dict:
        """JSON-able structured description (objects ordered as drawn)."""
        return dict(size=self.image.shape[0], background=self.background, texture=self.texture,
                    objects=[asdict(o) | {"phrase": o.phrase} for o in self.objects])


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def _polygon(xs: np.ndarray, ys: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of every grid point against vertices (vx, vy)."""
    inside = np.zeros(xs.shape, dtype=bool)
    for i in range(len(vx)):
        x0, y0, x1, y1 = vx[i - 1], vy[i - 1], vx[i], vy[i]
        crosses = (y0 > ys) != (y1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_at)
    return inside


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """(size, size) bool mask of ``shape`` centred at (cx, cy) with bounding radius ``r``."""
    xs, ys = _grid(size)
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= r * 0.8
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        arm = r / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        return _polygon(xs, ys, cx + r * np.cos(angles), cy + r * np.sin(angles) + r * 0.15)
    if shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return _polygon(xs, ys, cx + radii * np.cos(angles), cy + radii * np.sin(angles))
    raise ValueError(f"unknown shape {shape!r}; choose from {list(SHAPES)}")


def _background(rng: np.random.Generator, name: str, texture: str, size: int) -> np.ndarray:
    base = np.asarray(BACKGROUNDS[name], dtype=np.float32)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    if texture == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        xs, ys = _grid(size)
        ramp = ((xs - size / 2) * np.cos(angle) + (ys - size / 2) * np.sin(angle)) / size
        img += 50.0 * ramp[..., None]
    elif texture == "noise":
        coarse = rng.normal(0, 14.0, (size // 8 + 1, size // 8 + 1, 1)).astype(np.float32)
        img += np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:size, :size] + rng.normal(0, 4.0, (size, size, 1))
    return img


def position_name(cx: float, cy: float, size: int) -> str:
    """The 3x3-grid name ('top left', ..., 'centre', ...) of a point."""
    col, row = min(int(3 * cx / size), 2), min(int(3 * cy / size), 2)
    return POSITIONS[row][col]


def render_scene(seed: int | Sequence[int], options: SceneOptions = SceneOptions()) -> Scene:
    """Draw one scene; the same ``seed`` (an int or a tuple such as ``(dataset_seed, index)``) and
    options always give the same pixels, masks and description."""
    key = (int(seed),) if np.isscalar(seed) else tuple(int(s) for s in seed)
    rng = np.random.default_rng(key)
    size = options.size
    background = str(rng.choice(options.backgrounds))
    texture = str(rng.choice(options.textures))
    img = _background(rng, background, texture, size)
    n = int(rng.integers(options.min_objects, options.max_objects + 1))
    placed: list[tuple[str, str, str, float, float, float]] = []
    for _ in range(n):
        for _attempt in range(200):
            size_name = str(rng.choice(list(SIZES)))
            lo, hi = SIZES[size_name]
            r = float(rng.uniform(lo, hi)) * size
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
            if all(np.hypot(cx - px, cy - py) >= r + pr + options.min_gap for *_, px, py, pr in placed):
                break
        else:  # the canvas is full: draw fewer objects rather than overlap them
            continue
        placed.append((str(rng.choice(options.shapes)), str(rng.choice(options.colours)), size_name, cx, cy, r))
    masks, objects = [], []
    occupied = np.zeros((size, size), dtype=bool)
    for shape, colour, size_name, cx, cy, r in reversed(placed):  # later objects on top: paint back to front
        mask = shape_mask(shape, cx, cy, r, size) & ~occupied
        occupied |= mask
        masks.append(mask)
    masks = masks[::-1]
    for (shape, colour, size_name, cx, cy, r), mask in zip(placed, masks):
        rgb = COLOURS[colour]
        shade = rng.uniform(0.9, 1.05)
        img[mask] = np.clip(np.asarray(rgb, np.float32) * shade, 0, 255)
        ys, xs = np.nonzero(mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
        objects.append(SceneObject(shape, colour, size_name, position_name(cx, cy, size), (round(cx, 2), round(cy, 2)),
                                   round(r, 2), bbox, int(mask.sum()), rgb))
    image = np.clip(img, 0, 255).astype(np.uint8)
    stack = np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool)
    return Scene(image, stack, objects, background, texture, key)


def render_scenes(n: int, seed: int = 0, options: SceneOptions = SceneOptions()) -> list[Scene]:
    """``n`` scenes; scene ``i`` is ``render_scene((seed, i), options)``."""
    return [render_scene((seed, i), options) for i in range(n)]


def scene_images(n: int, seed: int = 0, options: SceneOptions = SceneOptions()) -> np.ndarray:
    """(n, H, W, 3) uint8 images of :func:`render_scenes`."""
    return np.stack([s.image for s in render_scenes(n, seed, options)])
