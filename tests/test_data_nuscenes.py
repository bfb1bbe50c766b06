"""The nuScenes-format reader, on the real demo frame (skipped, with a how-to, where absent)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bevdistill.data import NuScenesBEVDataset, NuScenesReader, count_points_in_boxes, rotate_z
from bevdistill.data.nuscenes import (
    DEMO_ENV_VAR,
    demo_frame_dir,
    demo_info_path,
    demo_missing_message,
)

INFO = demo_info_path()
needs_demo = pytest.mark.skipif(INFO is None, reason=demo_missing_message())


def _infos() -> dict:
    with open(INFO, "rb") as f:
        return pickle.load(f)


def _write_infos(path: Path, infos: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump(infos, f)
    return path


def test_demo_setting_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DEMO_ENV_VAR, str(tmp_path))
    assert demo_frame_dir() == tmp_path
    assert demo_info_path() is None  # empty folder: no frame
    assert DEMO_ENV_VAR in demo_missing_message() and str(tmp_path) in demo_missing_message()
    monkeypatch.delenv(DEMO_ENV_VAR)
    # The default is the copy shipped in the repository, never a folder outside it.
    repo = Path(__file__).resolve().parents[1]
    assert demo_frame_dir() == repo / "book" / "data" / "nuscenes_frame"
    assert "shared" not in demo_frame_dir().relative_to(repo).parts


def test_the_repository_ships_the_frame_with_its_notice(monkeypatch):
    # A reader's clone has no ../shared: the frame, its six camera images and the NOTICE
    # naming source and licence must be in the repository itself.
    monkeypatch.delenv(DEMO_ENV_VAR, raising=False)
    folder = demo_frame_dir()
    assert demo_info_path() == folder / "nuscenes_demo_infos.pkl"
    assert len(list((folder / "samples").glob("*__LIDAR_TOP__*.pcd.bin"))) == 1
    assert len(list((folder / "samples").glob("*__CAM_*.jpg"))) == 6
    notice = (folder / "NOTICE").read_text()
    assert "nuScenes" in notice and "CC BY-NC-SA 4.0" in notice and "Caesar" in notice


@needs_demo
def test_real_frame_flows_through_the_reader():
    sample = NuScenesReader(INFO)[0]
    pts = sample["points"]
    assert pts.dtype == np.float32 and pts.shape == (34_688, 5)
    assert np.array_equal(np.unique(pts[:, 4]), np.arange(32))
    assert sample["source"] == "nuscenes" and sample["seed"] is None
    assert sample["gt_boxes"].dtype == np.float32 and sample["gt_boxes"].shape == (39, 7)
    # 8 cars, 30 pedestrians, 1 bicycle -> cyclist; trucks, buses, barriers, cones dropped.
    assert np.bincount(sample["gt_labels"], minlength=3).tolist() == [8, 30, 1]
    np.testing.assert_array_equal(sample["visible"], sample["num_points"] >= 5)
    assert sample["visible"].sum() == 13


@needs_demo
def test_boxes_convention_reproduces_annotated_point_counts():
    # Counting the frame's points in the boxes (gravity centre, l along yaw) gives back
    # num_lidar_pts: a wrong centre or yaw convention would not.
    sample = NuScenesReader(INFO)[0]
    counted = count_points_in_boxes(sample["points"], sample["gt_boxes"])
    assert np.abs(counted - sample["num_points"]).sum() <= 10
    shifted = sample["gt_boxes"].copy()
    shifted[:, 2] += shifted[:, 5] / 2  # as if z were the bottom centre
    assert np.abs(count_points_in_boxes(sample["points"], shifted) - sample["num_points"]).sum() > 50


@needs_demo
def test_align_forward_turns_the_lidar_frame_so_x_points_ahead():
    raw = NuScenesReader(INFO, align_forward=False)[0]
    aligned = NuScenesReader(INFO)[0]
    lidar2ego = np.array(_infos()["data_list"][0]["lidar_points"]["lidar2ego"])
    yaw = np.arctan2(lidar2ego[0, 1], lidar2ego[0, 0])  # ego +x in the LiDAR frame
    assert abs(yaw - np.pi / 2) < 0.01  # nuScenes' LiDAR has +y forward
    pts, boxes = rotate_z(raw["points"], raw["gt_boxes"], -yaw)
    np.testing.assert_allclose(aligned["points"], pts, atol=1e-4)
    np.testing.assert_allclose(aligned["gt_boxes"], boxes, atol=1e-4)
    np.testing.assert_array_equal(aligned["num_points"], raw["num_points"])


@needs_demo
def test_class_map_is_configurable_and_checked():
    only_cars = NuScenesReader(INFO, class_map={"car": "car", "truck": "car"})[0]
    assert set(only_cars["gt_labels"].tolist()) == {0} and len(only_cars["gt_labels"]) == 10
    with pytest.raises(ValueError, match="not project classes"):
        NuScenesReader(INFO, class_map={"truck": "lorry"})


@needs_demo
def test_lidar_path_resolution_and_errors(tmp_path):
    infos = _infos()
    moved = _write_infos(tmp_path / "infos.pkl", infos)  # info elsewhere, data in the demo dir
    with pytest.raises(FileNotFoundError, match="data_root"):
        NuScenesReader(moved)[0]
    sample = NuScenesReader(moved, data_root=INFO.parent)[0]
    assert sample["points"].shape == (34_688, 5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NuScenesReader(tmp_path / "missing.pkl")
    with pytest.raises(IndexError):
        NuScenesReader(INFO)[1]


@needs_demo
def test_bad_files_are_reported(tmp_path):
    infos = _infos()
    with pytest.raises(ValueError, match="mmdet3d 1.x"):
        NuScenesReader(_write_infos(tmp_path / "list.pkl", infos["data_list"]))
    truncated = tmp_path / "short.pcd.bin"
    np.arange(7, dtype=np.float32).tofile(truncated)
    infos["data_list"][0]["lidar_points"]["lidar_path"] = str(truncated)
    with pytest.raises(ValueError, match="multiple of"):
        NuScenesReader(_write_infos(tmp_path / "a.pkl", infos))[0]
    infos["data_list"][0]["lidar_points"]["num_pts_feats"] = 4
    with pytest.raises(ValueError, match="needs 5"):
        NuScenesReader(_write_infos(tmp_path / "b.pkl", infos))[0]


@needs_demo
def test_missing_point_counts_are_computed(tmp_path):
    infos = _infos()
    for inst in infos["data_list"][0]["instances"]:
        del inst["num_lidar_pts"]
    sample = NuScenesReader(_write_infos(tmp_path / "c.pkl", infos), data_root=INFO.parent)[0]
    reference = NuScenesReader(INFO)[0]
    assert np.abs(sample["num_points"] - reference["num_points"]).sum() <= 10


@needs_demo
def test_dataset_item_from_the_real_frame():
    ds = NuScenesBEVDataset(str(INFO))
    item = ds[0]
    pts, sample = item["inputs"]["points"], item["data_samples"]
    assert pts.dtype == torch.float32 and pts.shape[1] == 5
    lo, hi = torch.tensor(ds.point_cloud_range[:3]), torch.tensor(ds.point_cloud_range[3:])
    assert ((pts[:, :3] >= lo) & (pts[:, :3] < hi)).all()
    assert sample["visible"].all() and len(sample["gt_boxes"]) == 12  # visible, in range
    assert sample["gt_labels"].dtype == torch.int64 and sample["source"] == "nuscenes"
    kept = NuScenesBEVDataset(str(INFO), keep_invisible=True)[0]["data_samples"]
    assert (~kept["visible"]).sum() > 0
