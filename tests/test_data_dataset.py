"""Datasets, splits, cropping, augmentation consistency and the collate function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.registry import DATASETS, FUNCTIONS
from mmengine.runner import Runner

from bevdistill.data import (
    CLASS_NAMES,
    GlobalAugment,
    SyntheticBEVDataset,
    bev_collate,
    count_points_in_boxes,
    flip,
    rotate_z,
    scale,
    split_world_seed,
)
from bevdistill.data.geometry import bev_corners

WIDE = (-80.0, -80.0, -30.0, 80.0, 80.0, 30.0)  # nothing cropped


def _corners3d(boxes: np.ndarray) -> np.ndarray:
    """[M, 8, 3] corners of boxes, for comparing boxes without trusting yaw conventions."""
    ring = bev_corners(boxes[:, [0, 1, 3, 4, 6]])
    lo = np.repeat((boxes[:, 2] - boxes[:, 5] / 2)[:, None, None], 4, axis=1)
    hi = np.repeat((boxes[:, 2] + boxes[:, 5] / 2)[:, None, None], 4, axis=1)
    return np.concatenate([np.concatenate([ring, lo], 2), np.concatenate([ring, hi], 2)], 1)


def test_item_follows_the_data_contract():
    ds = SyntheticBEVDataset("train", num_samples=3, seed=0)
    item = ds[1]
    assert set(item) == {"inputs", "data_samples"}
    pts, s = item["inputs"]["points"], item["data_samples"]
    assert isinstance(pts, torch.Tensor) and pts.dtype == torch.float32 and pts.shape[1] == 5
    m = len(s["gt_boxes"])
    assert m > 0
    assert s["gt_boxes"].dtype == torch.float32 and s["gt_boxes"].shape == (m, 7)
    assert s["gt_labels"].dtype == torch.int64 and s["gt_labels"].shape == (m,)
    assert s["num_points"].dtype == torch.int64 and s["visible"].dtype == torch.bool
    assert s["visible"].all() and (s["num_points"] >= 5).all()  # invisible boxes dropped
    assert s["sample_idx"] == 1 and s["source"] == "synthetic"
    assert s["seed"] == split_world_seed(0, "train")
    assert ds.metainfo["classes"] == CLASS_NAMES


def test_points_and_boxes_are_cropped_to_the_range():
    pcr = (-20.0, -10.0, -3.0, 30.0, 10.0, 1.0)
    item = SyntheticBEVDataset("val", num_samples=2, seed=0, point_cloud_range=pcr)[0]
    pts, boxes = item["inputs"]["points"], item["data_samples"]["gt_boxes"]
    lo, hi = torch.tensor(pcr[:3]), torch.tensor(pcr[3:])
    assert ((pts[:, :3] >= lo) & (pts[:, :3] < hi)).all()
    assert ((boxes[:, :2] >= lo[:2]) & (boxes[:, :2] < hi[:2])).all()
    full = SyntheticBEVDataset("val", num_samples=2, seed=0, point_cloud_range=WIDE)[0]
    assert len(full["inputs"]["points"]) > len(pts)
    assert len(full["data_samples"]["gt_boxes"]) > len(boxes)


def test_keep_invisible_keeps_flagged_boxes():
    ds = SyntheticBEVDataset("train", num_samples=2, seed=0, keep_invisible=True)
    s = ds[0]["data_samples"]
    assert (~s["visible"]).any()
    np.testing.assert_array_equal(s["visible"].numpy(), s["num_points"].numpy() >= 5)
    strict = SyntheticBEVDataset("train", num_samples=2, seed=0, min_points=30)[0]
    assert (strict["data_samples"]["num_points"] >= 30).all()


def test_splits_use_disjoint_worlds():
    worlds = {split_world_seed(s, k) for s in range(200) for k in ("train", "val", "test")}
    assert len(worlds) == 600
    train = SyntheticBEVDataset("train", num_samples=2, seed=0)[0]
    val = SyntheticBEVDataset("val", num_samples=2, seed=0)[0]
    assert not torch.equal(train["data_samples"]["gt_boxes"][:1], val["data_samples"]["gt_boxes"][:1])
    again = SyntheticBEVDataset("train", num_samples=2, seed=0, cache=False)[0]
    assert torch.equal(train["inputs"]["points"], again["inputs"]["points"])


def test_cache_keeps_generated_scans():
    ds = SyntheticBEVDataset("train", num_samples=2, seed=0)
    first = ds[0]
    assert set(ds._cache) == {0}
    assert torch.equal(ds[0]["inputs"]["points"], first["inputs"]["points"])
    uncached = SyntheticBEVDataset("train", num_samples=2, seed=0, cache=False)
    uncached[0]
    assert uncached._cache == {}


def test_augmentation_keeps_points_in_their_boxes():
    plain = SyntheticBEVDataset("train", num_samples=2, seed=3, point_cloud_range=WIDE)
    aug = SyntheticBEVDataset("train", num_samples=2, seed=3, point_cloud_range=WIDE,
                              augment={"rotation": [-3.1, 3.1], "scale": [0.9, 1.1]})
    for epoch in range(3):
        aug.set_epoch(epoch)
        for i in range(2):
            a, p = aug[i], plain[i]
            boxes = a["data_samples"]["gt_boxes"].numpy()
            counts = count_points_in_boxes(a["inputs"]["points"].numpy(), boxes)
            np.testing.assert_array_equal(counts, a["data_samples"]["num_points"].numpy())
            np.testing.assert_array_equal(a["data_samples"]["num_points"],
                                          p["data_samples"]["num_points"])
            assert (boxes[:, 3:6] > 0).all() and (np.abs(boxes[:, 6]) <= np.pi).all()
            assert not torch.allclose(a["inputs"]["points"], p["inputs"]["points"])


def test_augmentation_is_seeded_per_epoch():
    ds = SyntheticBEVDataset("train", num_samples=1, seed=0, augment=True)
    first = ds[0]["inputs"]["points"]
    assert torch.equal(ds[0]["inputs"]["points"], first)
    ds.set_epoch(1)
    other = ds[0]["inputs"]["points"]
    assert other.shape != first.shape or not torch.equal(other, first)
    ds.set_epoch(0)
    assert torch.equal(ds[0]["inputs"]["points"], first)


@pytest.mark.parametrize("transform", [
    lambda p, b: flip(p, b, "x"),
    lambda p, b: flip(p, b, "y"),
    lambda p, b: rotate_z(p, b, 0.7),
    lambda p, b: rotate_z(p, b, -2.9),
    lambda p, b: scale(p, b, 1.1),
])
def test_transforms_move_box_corners_like_points(transform):
    rng = np.random.default_rng(0)
    boxes = np.c_[rng.uniform(-20, 20, (30, 3)), rng.uniform(0.5, 5, (30, 3)),
                  rng.uniform(-np.pi, np.pi, 30)]
    corners = _corners3d(boxes).reshape(-1, 3)
    moved_pts, moved_boxes = transform(np.c_[corners, np.zeros((len(corners), 2))], boxes)
    # The transformed boxes have exactly the transformed corners (so yaw updated correctly).
    expected = moved_pts[:, :3].reshape(-1, 8, 3)
    for got, want in zip(_corners3d(moved_boxes), expected, strict=True):
        dist = np.linalg.norm(got[:, None] - want[None], axis=2)
        assert dist.min(1).max() < 1e-6
    assert (np.abs(moved_boxes[:, 6]) <= np.pi).all()


def test_flip_yaw_rules():
    box = np.array([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    _, fx = flip(np.zeros((0, 5)), box, "x")
    _, fy = flip(np.zeros((0, 5)), box, "y")
    assert fx[0, 6] == pytest.approx(-0.3) and fx[0, 1] == -2.0
    assert fy[0, 6] == pytest.approx(np.pi - 0.3) and fy[0, 0] == -1.0


def test_augment_settings_are_checked():
    with pytest.raises(ValueError, match="probability"):
        GlobalAugment(flip_x=1.5)
    with pytest.raises(KeyError, match="valid"):
        GlobalAugment.from_config({"rotate": [0, 1]})
    with pytest.raises(ValueError, match="flip axis"):
        flip(np.zeros((1, 5)), np.zeros((1, 7)), "z")
    with pytest.raises(ValueError, match="split"):
        SyntheticBEVDataset("training")
    with pytest.raises(ValueError, match="point_cloud_range"):
        SyntheticBEVDataset(point_cloud_range=(0, 0, 0, 1, 1))
    with pytest.raises(IndexError):
        SyntheticBEVDataset(num_samples=2)[2]


def test_bev_collate_keeps_lists():
    ds = SyntheticBEVDataset("val", num_samples=2, seed=1)
    batch = bev_collate([ds[0], ds[1]])
    assert isinstance(batch["inputs"]["points"], list) and len(batch["inputs"]["points"]) == 2
    assert isinstance(batch["data_samples"], list) and isinstance(batch["data_samples"][0], dict)
    assert FUNCTIONS.get("bev_collate") is bev_collate
    with pytest.raises(ValueError, match="non-empty"):
        bev_collate([])
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        bev_collate([{"inputs": {"points": torch.zeros(3, 4)}, "data_samples": {}}])
    with pytest.raises(TypeError, match="dataset item"):
        bev_collate([torch.zeros(3, 5)])


def test_mmengine_builds_the_dataset_and_loader():
    cfg = dict(type="SyntheticBEVDataset", split="val", num_samples=4, seed=2)
    assert isinstance(DATASETS.build(cfg), SyntheticBEVDataset)
    loader = Runner.build_dataloader(dict(
        dataset=cfg, batch_size=2, num_workers=0,
        sampler=dict(type="DefaultSampler", shuffle=False),
        collate_fn=dict(type="bev_collate")))
    batch = next(iter(loader))
    assert len(batch["inputs"]["points"]) == 2
    assert [s["sample_idx"] for s in batch["data_samples"]] == [0, 1]


# --- the two-sensor world: one scene, two scans ------------------------------------------------

SPARSE, DENSE = dict(n_rings=16, n_azimuth=360), dict(n_rings=64, n_azimuth=360)


def test_two_sensor_items_carry_both_scans_of_one_scene():
    single = SyntheticBEVDataset(num_samples=2, point_cloud_range=WIDE, lidar=SPARSE)
    both = SyntheticBEVDataset(num_samples=2, point_cloud_range=WIDE, lidar=SPARSE,
                               teacher_lidar=DENSE, keep_invisible=True)
    item = both[0]
    sparse, dense = item["inputs"]["points"], item["inputs"]["teacher_points"]
    assert len(dense) > 3 * len(sparse)  # 64 rings against 16
    # the student's scan is the one a single-sensor world makes: only the teacher gets more
    assert torch.equal(sparse, single[0]["inputs"]["points"])
    raw = both.raw_sample(0)
    boxes = raw["gt_boxes"]
    # labels come from the richer scan; the deployed sensor's counts are kept beside them
    assert np.array_equal(raw["num_points"], count_points_in_boxes(raw["teacher_points"], boxes))
    assert np.array_equal(raw["num_points_student"], count_points_in_boxes(raw["points"], boxes))
    assert (raw["num_points"] >= raw["num_points_student"]).mean() > 0.9


def test_two_sensor_views_are_augmented_together():
    ds = SyntheticBEVDataset(num_samples=1, point_cloud_range=WIDE, lidar=SPARSE,
                             teacher_lidar=DENSE, augment=True)
    item = ds[0]
    boxes = item["data_samples"]["gt_boxes"].numpy()
    for key in ("points", "teacher_points"):
        pts = item["inputs"][key].numpy()
        counts = count_points_in_boxes(pts, boxes)
        # same transform for boxes and both scans: the boxes still hold the scans' object points
        assert counts.sum() > 0.5 * count_points_in_boxes(
            ds.raw_sample(0)[key], ds.raw_sample(0)["gt_boxes"]).sum()


def test_teacher_view_reads_the_rich_scan_with_the_same_labels():
    kwargs = dict(num_samples=1, point_cloud_range=WIDE, lidar=SPARSE, teacher_lidar=DENSE)
    student, teacher = SyntheticBEVDataset(**kwargs), SyntheticBEVDataset(**kwargs, view="teacher")
    assert torch.equal(teacher[0]["inputs"]["points"], student[0]["inputs"]["teacher_points"])
    assert "teacher_points" not in teacher[0]["inputs"]
    assert torch.equal(teacher[0]["data_samples"]["gt_boxes"], student[0]["data_samples"]["gt_boxes"])
    with pytest.raises(ValueError, match="teacher_lidar"):
        SyntheticBEVDataset(num_samples=1, view="teacher")
    with pytest.raises(ValueError, match="view must be one of"):
        SyntheticBEVDataset(num_samples=1, view="both")


def test_deployed_view_keeps_the_rich_scan_for_the_labels_only():
    """view='deployed': both models read the deployed scan; the boxes are still the ones the
    rich scan labels (the fusion teacher's scenario)."""
    kwargs = dict(num_samples=1, point_cloud_range=WIDE, lidar=SPARSE, teacher_lidar=DENSE)
    student, deployed = SyntheticBEVDataset(**kwargs), SyntheticBEVDataset(**kwargs, view="deployed")
    assert set(deployed[0]["inputs"]) == {"points"}
    assert torch.equal(deployed[0]["inputs"]["points"], student[0]["inputs"]["points"])
    assert torch.equal(deployed[0]["data_samples"]["gt_boxes"], student[0]["data_samples"]["gt_boxes"])


def test_collate_keeps_the_teacher_scans_and_refuses_a_mix():
    both = SyntheticBEVDataset(num_samples=2, point_cloud_range=WIDE, lidar=SPARSE,
                               teacher_lidar=DENSE)
    batch = bev_collate([both[0], both[1]])
    assert len(batch["inputs"]["teacher_points"]) == 2
    single = SyntheticBEVDataset(num_samples=1, point_cloud_range=WIDE, lidar=SPARSE)
    with pytest.raises(ValueError, match="teacher_lidar"):
        bev_collate([both[0], single[0]])


def test_labelled_samples_keeps_the_boxes_of_the_first_scenes_only():
    full = SyntheticBEVDataset("train", num_samples=6, seed=0)
    few = SyntheticBEVDataset("train", num_samples=6, seed=0, labelled_samples=2)
    # items alternate labelled and unlabelled scenes: half of every epoch has labels
    assert [few.scene_of(i) for i in range(6)] == [0, 2, 1, 3, 0, 4]
    assert [full.scene_of(i) for i in range(6)] == list(range(6))
    for i in range(6):
        scene = few.scene_of(i)
        a, b = full[scene], few[i]
        assert torch.equal(a["inputs"]["points"], b["inputs"]["points"])  # the same scan
        assert b["data_samples"]["sample_idx"] == scene and a["data_samples"]["labelled"] is True
        if scene < 2:
            assert b["data_samples"]["labelled"] is True
            assert len(b["data_samples"]["gt_boxes"]) > 0
        else:
            assert b["data_samples"]["labelled"] is False
            assert len(a["data_samples"]["gt_boxes"]) > 0 == len(b["data_samples"]["gt_boxes"])
    with pytest.raises(ValueError, match="labelled_samples must lie in"):
        SyntheticBEVDataset("train", num_samples=4, labelled_samples=5)
