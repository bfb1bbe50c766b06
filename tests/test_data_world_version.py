"""World versions: version 2's objects have a front and a back, version 1 stays as it was, and a
scan says which class and part each point hit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bevdistill.data import (
    WORLD_VERSION,
    LidarSimulator,
    SceneConfig,
    SyntheticBEVDataset,
    custom_scene,
    generate_scene,
    world_version_of,
)
from bevdistill.data.classes import LABEL_OF
from bevdistill.data.geometry import points_in_boxes
from bevdistill.data.parts import PART_ID, SIZE_RANGES
from bevdistill.data.placement import recipes_of_world
from bevdistill.data.scene import scene_rng

# generate_scene(5, i, world 1) for i < 3, as the code before world versions made it (the
# world of every model shipped with a card that names no world_version).
WORLD_1_DIGEST = "445e2ff4884f14f6"
# The default LiDAR's scans of those scenes (sensor stream), as the code before world versions
# and before the cameras shared its ray caster made them (points rounded to 0.1 mm).
WORLD_1_SCAN_DIGEST = "33b26056a6174dbe"


def _digest(scenes) -> str:
    h = hashlib.sha256()
    for s in scenes:
        for a in (s.boxes, s.labels, s.box_prims, s.cyl_prims):
            h.update(np.round(np.asarray(a, np.float64), 5).tobytes())
    return h.hexdigest()[:16]


def test_world_1_is_the_world_the_old_models_were_trained_on():
    assert _digest(generate_scene(5, i, {"world_version": 1}) for i in range(3)) == WORLD_1_DIGEST
    assert _digest(generate_scene(5, i) for i in range(3)) != WORLD_1_DIGEST  # default: 2
    assert WORLD_VERSION == 2 and SceneConfig().world_version == 2
    h = hashlib.sha256()
    sim = LidarSimulator()
    for i in range(3):
        points = sim.scan(generate_scene(5, i, {"world_version": 1}), scene_rng(5, i, 1))
        h.update(np.round(points.astype(np.float64), 4).tobytes())
    assert h.hexdigest()[:16] == WORLD_1_SCAN_DIGEST


# --- each class's front/back cue, on the parts in the object's frame (u forward) --------------
def _boxes(parts, name=None):
    return [p for p in parts if p[0] == "b" and (name is None or p[-1] == name)]


def car_cue(parts, length, width, height) -> bool:
    """The front quarter is lower than the roof by 0.25 m or more: bonnet, not cabin."""
    top_front = max(p[3] + p[6] for p in _boxes(parts) if p[1] + p[4] / 2 > length / 4)
    top = max(p[3] + p[6] for p in _boxes(parts))
    return top - top_front >= 0.25


def pedestrian_cue(parts, length, width, height) -> bool:
    """What touches the ground reaches further ahead than behind (the feet point forward)."""
    low = [(p[1] - p[4] / 2, p[1] + p[4] / 2) for p in _boxes(parts) if p[3] < 0.05]
    low += [(p[1] - p[5], p[1] + p[5]) for p in parts if p[0] == "c" and p[3] < 0.05]
    return max(b for _, b in low) + min(a for a, _ in low) >= 0.08


def cyclist_cue(parts, length, width, height) -> bool:
    """The rider's highest part (the head) is ahead of the middle: leaning forward."""
    tops = [(p[3] + p[6], p[1]) for p in _boxes(parts)]
    tops += [(p[4], p[1]) for p in parts if p[0] == "c"]
    return max(tops)[1] > 0.03 * length


CUES = {"car": car_cue, "pedestrian": pedestrian_cue, "cyclist": cyclist_cue}


@pytest.mark.parametrize("name", sorted(CUES))
def test_world_2_objects_show_which_way_they_face(name):
    rng = np.random.default_rng(1)
    shown = {1: 0, 2: 0}
    for _ in range(40):
        dims = [rng.uniform(lo, hi) for lo, hi in SIZE_RANGES[name]]
        for version in (1, 2):
            parts = recipes_of_world(version)[name](rng, *dims)
            shown[version] += CUES[name](parts, *dims)
    assert shown[2] == 40, f"{name}: only {shown[2]} of 40 world-2 objects show their front"
    assert shown[1] < 40, f"{name}: the cue check cannot tell world 1 apart"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", sorted(CUES))
def test_parts_of_both_worlds_lie_inside_their_label_box(name, version):
    rng = np.random.default_rng(version)
    for seed in range(15):
        dims = [rng.uniform(lo, hi) for lo, hi in SIZE_RANGES[name]]
        box = [3.0, -2.0, -1.84 + dims[2] / 2, *dims, rng.uniform(-np.pi, np.pi)]
        scene = custom_scene([(name, box)], seed=seed, world_version=version)
        sim = LidarSimulator(dict(n_rings=64, range_noise=0.0, dropout=0.0))
        points, hits = sim.scan(scene, np.random.default_rng(0), return_hits=True)
        on_object = hits >= 0
        assert on_object.sum() > 20
        grown = scene.boxes.astype(np.float64)
        grown[:, 3:6] += 2e-3
        assert points_in_boxes(points[on_object], grown)[:, 0].all()


# --- which class and part a point hit ------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2])
def test_a_scan_names_the_class_and_part_each_point_hit(version):
    car = [8.0, 0.0, -1.84 + 0.8, 4.5, 1.8, 1.6, 0.3]
    walker = [6.0, -5.0, -1.84 + 0.85, 0.7, 0.7, 1.7, 1.0]
    wall = [[-8.0, 0.0, -1.0, 0.3, 6.0, 2.0, 0.0]]
    scene = custom_scene([("car", car), ("pedestrian", walker)], obstacles=wall,
                         world_version=version)
    sim = LidarSimulator(dict(n_rings=64))
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    points, hits = sim.scan(scene, rng_a, return_hits=True)
    np.testing.assert_array_equal(points, sim.scan(scene, rng_b))  # same points either way
    ids = scene.prim_ids()
    assert ids.shape == (len(scene.box_prims) + len(scene.cyl_prims), 3)
    label = np.where(hits >= 0, ids[np.maximum(hits, 0), 0], -2)  # -2: the ground
    inside = points_in_boxes(points, scene.boxes)
    assert (label[inside[:, 0]] == LABEL_OF["car"]).mean() > 0.9  # the rest: road under it
    assert (label[inside[:, 1]] == LABEL_OF["pedestrian"]).mean() > 0.8
    assert (label[points[:, 0] < -7.5] == -1).any()  # the wall: hit, unlabelled
    assert (points[label == -2, 2] < -1.7).all()  # ground hits lie on the ground
    parts = set(ids[hits[label == LABEL_OF["car"]], 1].tolist())
    assert {PART_ID["body"], PART_ID["cabin"], PART_ID["wheel"]} <= parts
    parts = set(ids[hits[label == LABEL_OF["pedestrian"]], 1].tolist())
    assert {PART_ID["torso"], PART_ID["head"], PART_ID["leg"]} <= parts
    assert (ids[hits[label == -1], 1] == PART_ID["unnamed"]).all()  # the wall has no parts
    # ... and which object: the car is box 0, the walker box 1, the wall clutter box 0
    assert (ids[hits[label == LABEL_OF["car"]], 2] == 0).all()
    assert (ids[hits[label == LABEL_OF["pedestrian"]], 2] == 1).all()
    assert (ids[hits[label == -1], 2] == 0).all()


def test_generated_scenes_carry_one_id_row_per_primitive():
    scene = generate_scene(3, 0)
    ids = scene.prim_ids()
    assert len(ids) == len(scene.box_prims) + len(scene.cyl_prims)
    assert set(np.unique(ids[:, 0])) <= {-1, 0, 1, 2}
    assert set(np.unique(ids[:, 0])) >= {-1, 0}  # clutter and cars in every busy street


# --- settings ------------------------------------------------------------------------------
def test_unknown_world_version_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"world_version must be one of \[1, 2\]"):
        SceneConfig(world_version=3)
    with pytest.raises(ValueError, match="world_version must be one of"):
        custom_scene([], world_version=0)


def test_dataset_world_version_reaches_the_scenes_and_the_cache_key(tmp_path):
    old = SyntheticBEVDataset("val", 1, world_version=1, cache_dir=tmp_path)
    new = SyntheticBEVDataset("val", 1, cache_dir=tmp_path)
    assert old.scene_config.world_version == 1 and new.scene_config.world_version == 2
    assert old.metainfo["world_version"] == 1
    assert old.cache_path(0) != new.cache_path(0)
    same = SyntheticBEVDataset("val", 1, world_version=1, scene={"world_version": 1})
    assert same.scene_config.world_version == 1
    with pytest.raises(ValueError, match="set it in one place"):
        SyntheticBEVDataset("val", 1, world_version=1, scene={"world_version": 2})


def test_world_version_of_a_dataset_config():
    assert world_version_of(dict(type="SyntheticBEVDataset", world_version=1)) == 1
    assert world_version_of(dict(type="SyntheticBEVDataset", scene=dict(world_version=1))) == 1
    assert world_version_of(dict(type="SyntheticBEVDataset")) == WORLD_VERSION
    assert world_version_of(dict(type="NuScenesBEVDataset")) is None
