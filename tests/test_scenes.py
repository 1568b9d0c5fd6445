"""The seeded scene renderer: determinism, masks that match the pixels, descriptions that match the masks."""
import json
import time

import numpy as np
import pytest

from zoo.data.scenes import (
    COLOURS,
    SHAPES,
    SceneOptions,
    position_name,
    render_scene,
    render_scenes,
    shape_mask,
)


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = render_scene((3, 17)), render_scene((3, 17))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.describe() == b.describe()
    assert not np.array_equal(a.image, render_scene((3, 18)).image)


def test_masks_are_disjoint_and_painted_in_the_object_colour():
    for scene in render_scenes(50, seed=1):
        assert scene.masks.sum(0).max() <= 1                      # no pixel belongs to two objects
        for obj, mask in zip(scene.objects, scene.masks):
            assert mask.sum() == obj.area > 0
            pixels = scene.image[mask].astype(float)
            expected = np.asarray(COLOURS[obj.colour], float)
            # every visible pixel has the object's colour up to the +-10% shading of that object
            ratio = pixels[:, expected > 60] / expected[expected > 60]
            assert ratio.min() > 0.85 and ratio.max() < 1.1
            ys, xs = np.nonzero(mask)
            assert obj.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert obj.position == position_name(*obj.center, scene.image.shape[0])


def test_counts_attributes_and_json_description():
    scenes = render_scenes(300, seed=2, options=SceneOptions(size=64))
    counts = {len(s.objects) for s in scenes}
    assert counts == {2, 3, 4}
    shapes = {o.shape for s in scenes for o in s.objects}
    colours = {o.colour for s in scenes for o in s.objects}
    assert shapes == set(SHAPES) and len(colours) >= 6
    assert {o.size for s in scenes for o in s.objects} == {"small", "large"}
    assert len({s.background for s in scenes}) >= 3
    small = [o.area for s in scenes for o in s.objects if o.size == "small"]
    large = [o.area for s in scenes for o in s.objects if o.size == "large"]
    assert np.median(large) > 2.5 * np.median(small)
    json.dumps(scenes[0].describe())                                # JSON-able
    assert scenes[0].describe()["objects"][0]["phrase"].count(" ") == 2


def test_shape_masks_have_the_expected_geometry():
    circle = shape_mask("circle", 32, 32, 10, 64)
    assert abs(circle.sum() - np.pi * 100) < 0.05 * np.pi * 100
    square = shape_mask("square", 32, 32, 10, 64)
    assert abs(square.sum() - 16 * 16) <= 40
    star, diamond = shape_mask("star", 32, 32, 10, 64), shape_mask("diamond", 32, 32, 10, 64)
    assert star.sum() < diamond.sum() < square.sum() < circle.sum()
    assert np.array_equal(shape_mask("triangle", 32, 32, 10, 64), shape_mask("triangle", 32, 32, 10, 64)[:, ::-1])


def test_fast_enough_and_options_are_checked():
    start = time.perf_counter()
    render_scenes(200, seed=4)
    assert time.perf_counter() - start < 2.0                      # hundreds of scenes per second
    with pytest.raises(ValueError, match="unknown shapes"):
        SceneOptions(shapes=("hexagon",))
    with pytest.raises(ValueError, match="size >= 24"):
        SceneOptions(size=8)
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("blob", 1, 1, 1, 32)
