"""The street-scene generator: determinism, labels and sizes, placement rules, clutter."""

from __future__ import annotations

import numpy as np
import pytest

from bevdistill.data import CLASS_NAMES, CLUTTER_KINDS, SIZE_RANGES, SceneConfig, generate_scene
from bevdistill.data.geometry import bev_corners, corners_overlap, points_in_boxes
from bevdistill.data.scene import custom_scene

SCENES = [generate_scene(11, i) for i in range(12)]


def _rect(box) -> np.ndarray:
    return np.array([box[0], box[1], box[3], box[4], box[6]], dtype=np.float64)


def rects_overlap(rect, rects) -> np.ndarray:
    """``[K]`` bool: does the BEV rectangle ``rect`` (x, y, l, w, yaw) overlap each of ``rects``?"""
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 5)
    return corners_overlap(bev_corners(np.asarray(rect, dtype=np.float64))[0], bev_corners(rects))


def _road_frame(scene, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yaw = scene.ground.layout.yaw
    c, s = np.cos(yaw), np.sin(yaw)
    return c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]


def test_same_seed_and_index_give_identical_scenes():
    a, b = generate_scene(5, 3), generate_scene(5, 3)
    for name in ("boxes", "labels", "box_prims", "cyl_prims", "clutter_boxes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.clutter_kinds == b.clutter_kinds


@pytest.mark.parametrize("other", [(5, 4), (6, 3)])
def test_other_seed_or_index_gives_another_scene(other):
    a, b = generate_scene(5, 3), generate_scene(*other)
    assert a.boxes.shape != b.boxes.shape or not np.allclose(a.boxes, b.boxes)


def test_labels_are_the_three_classes_and_all_occur():
    labels = np.concatenate([s.labels for s in SCENES])
    assert labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(len(CLASS_NAMES)))


def test_box_sizes_stay_in_class_ranges_and_yaw_is_wrapped():
    for scene in SCENES:
        assert scene.boxes.dtype == np.float32 and scene.boxes.shape[1] == 7
        for box, label in zip(scene.boxes, scene.labels, strict=True):
            for value, (lo, hi) in zip(box[3:6], SIZE_RANGES[CLASS_NAMES[label]], strict=True):
                assert lo - 1e-5 <= value <= hi + 1e-5, (CLASS_NAMES[label], box)
        assert np.all(np.abs(scene.boxes[:, 6]) <= np.pi + 1e-6)


def test_cars_are_aligned_with_the_streets():
    for scene in SCENES:
        cars = scene.boxes[scene.labels == 0]
        rel = cars[:, 6] - scene.ground.layout.yaw
        # Main street (0 or pi) or cross street (+-pi/2): within a few degrees of a lane.
        off = np.abs((rel + np.pi / 4) % (np.pi / 2) - np.pi / 4)
        assert np.all(off < np.radians(15)), np.degrees(off.max())


def test_both_driving_directions_occur():
    rel = np.concatenate(
        [s.boxes[s.labels == 0, 6] - s.ground.layout.yaw for s in SCENES]
    )
    assert (np.cos(rel) > 0.9).sum() > 10 and (np.cos(rel) < -0.9).sum() > 10


def test_pedestrians_mostly_on_sidewalks_standing_on_them():
    on, total = 0, 0
    for scene in SCENES:
        peds = scene.boxes[scene.labels == 1]
        xr, yr = _road_frame(scene, peds[:, :2].astype(np.float64))
        walk = scene.ground.layout.is_sidewalk(xr, yr)
        bottom = peds[:, 2] - peds[:, 5] / 2
        ground = scene.ground.z_at(peds[:, 0], peds[:, 1])
        # On a sidewalk the feet are a kerb height above the road plane.
        np.testing.assert_allclose(bottom[walk] - ground[walk], scene.ground.layout.kerb, atol=1e-4)
        on += walk.sum()
        total += len(peds)
    assert on / total >= 0.6, f"only {on}/{total} pedestrians on sidewalks"


def test_cyclists_ride_near_lane_edges_or_on_sidewalks():
    near = total = 0
    for scene in SCENES:
        lay = scene.ground.layout
        cyc = scene.boxes[scene.labels == 2]
        xr, yr = _road_frame(scene, cyc[:, :2].astype(np.float64))
        edge = np.abs(np.abs(yr - lay.centre_y) - lay.lanes * lay.lane_width) < 1.5
        near += (edge | lay.is_sidewalk(xr, yr)).sum()
        total += len(cyc)
    assert total > 0 and near == total


def test_nothing_overlaps_a_labelled_object():
    for scene in SCENES:
        labelled = np.stack([_rect(b) for b in scene.boxes])
        others = np.stack([_rect(b) for b in scene.clutter_boxes])
        for k, rect in enumerate(labelled):
            rest = np.delete(labelled, k, axis=0)
            assert not rects_overlap(rect, rest).any(), f"labelled box {k} overlaps another"
            assert not rects_overlap(rect, others).any(), f"labelled box {k} overlaps clutter"
        # Nothing stands on the ego car (footprint around the sensor).
        assert not rects_overlap((0.45, 0.0, 4.9, 2.0, 0.0), labelled).any()


def test_clutter_is_present_varied_and_unlabelled():
    kinds = set()
    for scene in SCENES:
        assert len(scene.clutter_kinds) == len(scene.clutter_boxes) > 0
        kinds.update(scene.clutter_kinds)
    assert kinds <= set(CLUTTER_KINDS)
    must = {"facade", "tree", "pole", "bin", "bollard", "cabinet", "bench"}
    assert must <= kinds, f"missing clutter kinds {must - kinds}"
    # Clutter is not among the labels: the label array only holds the three classes, and
    # some clutter is pedestrian-sized on purpose (the detector must tell them apart).
    small = [k for s in SCENES for k, b in zip(s.clutter_kinds, s.clutter_boxes, strict=True)
             if b[3] < 1.0 and b[4] < 1.0 and 0.8 < b[5] < 2.0]
    assert len(small) > 10


def test_clutter_can_be_switched_off():
    scene = generate_scene(11, 0, {"clutter": False})
    assert scene.clutter_kinds == [] and len(scene.boxes) > 0


@pytest.mark.parametrize("name", ["car", "pedestrian", "cyclist"])
def test_object_parts_lie_inside_their_label_box(name):
    rng = np.random.default_rng(0)
    for seed in range(20):
        dims = [rng.uniform(lo, hi) for lo, hi in SIZE_RANGES[name]]
        box = [3.0, -2.0, -1.84 + dims[2] / 2, *dims, rng.uniform(-np.pi, np.pi)]
        scene = custom_scene([(name, box)], seed=seed)
        corners = []
        for p in scene.box_prims:
            ring = bev_corners(np.array([p[0], p[1], p[3], p[4], p[6]]))[0]
            for z in (p[2] - p[5] / 2, p[2] + p[5] / 2):
                corners.append(np.c_[ring, np.full(4, z)])
        for cx, cy, z0, z1, r, *_ in scene.cyl_prims:
            ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            ring = np.c_[cx + r * np.cos(ang), cy + r * np.sin(ang)]
            for z in (z0, z1):
                corners.append(np.c_[ring, np.full(16, z)])
        corners = np.concatenate(corners)
        grown = scene.boxes.astype(np.float64)
        grown[:, 3:6] += 2e-3  # feet and wheels touch the bottom face; allow float32 rounding
        inside = points_in_boxes(corners, grown)[:, 0]
        assert inside.all(), f"{name} part outside its box: {corners[~inside][:3]}"
        # The parts are not just the box: a plain box would fill its corners.
        assert len(scene.box_prims) + len(scene.cyl_prims) >= 3


def test_bad_settings_are_reported():
    with pytest.raises(KeyError, match="valid settings"):
        SceneConfig.from_dict({"pedestrain": (1, 2)})
    with pytest.raises(ValueError, match="low <= high"):
        SceneConfig(pedestrians=(5, 2))
    with pytest.raises(ValueError, match="seed and index"):
        generate_scene(-1, 0)
    with pytest.raises(ValueError, match="unknown class"):
        custom_scene([("truck", [0, 0, 0, 1, 1, 1, 0])])
