"""Reader for nuScenes-format data: mmdet3d 1.x info ``.pkl`` (v1.1) plus ``.pcd.bin`` sweeps.

It yields the same sample structure as the synthetic world, so a real frame (or a user's full
nuScenes) flows through the same datasets, models and metric. Class mapping: ``car`` ->
car, ``pedestrian`` -> pedestrian, ``bicycle`` and ``motorcycle`` -> cyclist; every other
category (truck, bus, trailer, construction vehicle, barrier, traffic cone) and label -1 is
DROPPED, i.e. it becomes unlabelled scenery, like the synthetic world's trucks and barriers.

Only the key-frame sweep is read (no multi-sweep accumulation). Boxes are the infos'
``bbox_3d`` (gravity centre, l along the heading, yaw from +x towards +y), which the point
counts confirm: counting the demo frame's points in these boxes reproduces ``num_lidar_pts``.

The one real frame used by tests is found through ONE setting, :func:`demo_frame_dir`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .classes import LABEL_OF
from .geometry import count_points_in_boxes
from .transforms import rotate_z

DEMO_ENV_VAR = "BEVDISTILL_NUSCENES_DEMO"
DEMO_INFO_NAME = "nuscenes_demo_infos.pkl"

DEFAULT_CLASS_MAP: dict[str, str] = {
    "car": "car",
    "pedestrian": "pedestrian",
    "bicycle": "cyclist",
    "motorcycle": "cyclist",
}


def demo_frame_dir() -> Path:
    """Folder of the real nuScenes demo frame: ``$BEVDISTILL_NUSCENES_DEMO``, else
    ``<repository root>/../shared/data/nuscenes_demo``. It may not exist (a fresh clone)."""
    env = os.environ.get(DEMO_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nuscenes_demo"


def demo_info_path() -> Path | None:
    """The demo frame's info file, or None where it is absent."""
    path = demo_frame_dir() / DEMO_INFO_NAME
    return path if path.is_file() else None


def demo_missing_message() -> str:
    """Why the real frame is unavailable and how to point at it (for skips and errors)."""
    return (
        f"real nuScenes frame not found at {demo_frame_dir()}: set the environment variable "
        f"{DEMO_ENV_VAR} to a folder holding {DEMO_INFO_NAME} and samples/*.pcd.bin "
        "(e.g. mmdetection3d's demo/data/nuscenes converted to v1.1 infos)"
    )


def _resolve_lidar_path(name: str, roots: list[Path], prefix: str | None) -> Path:
    path = Path(name)
    if path.is_absolute():
        candidates = [path]
    else:
        subdirs = ([prefix] if prefix else []) + ["", "samples/LIDAR_TOP", "samples"]
        candidates = [root / sub / path for root in roots for sub in subdirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"LiDAR file {name!r} not found; tried:\n  {tried}\n"
        "Pass data_root= (the folder that holds samples/) or lidar_prefix= "
        "(e.g. 'samples/LIDAR_TOP') to NuScenesReader."
    )


class NuScenesReader:
    """Samples of an mmdet3d 1.x nuScenes info file, as the project's sample dicts.

    ``align_forward=True`` turns points and boxes about z so that +x points where the ego car
    drives, as in the synthetic world (nuScenes' LiDAR frame has +y forward); the sensor stays
    at the origin and its height is unchanged. ``False`` keeps nuScenes' LiDAR frame.
    """

    def __init__(
        self,
        info_path: str | os.PathLike,
        data_root: str | os.PathLike | None = None,
        class_map: dict[str, str] | None = None,
        lidar_prefix: str | None = None,
        min_points: int = 5,
        align_forward: bool = True,
    ):
        self.info_path = Path(info_path)
        if not self.info_path.is_file():
            raise FileNotFoundError(
                f"info file {self.info_path} does not exist; pass the path of an mmdet3d 1.x "
                "nuScenes info .pkl (e.g. nuscenes_infos_val.pkl)"
            )
        with open(self.info_path, "rb") as f:
            infos = pickle.load(f)
        if not isinstance(infos, dict) or "data_list" not in infos or "metainfo" not in infos:
            raise ValueError(
                f"{self.info_path} is not an mmdet3d 1.x info file (expected a dict with "
                "'metainfo' and 'data_list'); convert old infos with mmdet3d's "
                "tools/dataset_converters/update_infos_to_v2.py"
            )
        self.metainfo = infos["metainfo"]
        self.data_list = infos["data_list"]
        self.roots = [Path(data_root)] if data_root is not None else [self.info_path.parent]
        self.lidar_prefix = lidar_prefix
        self.min_points = int(min_points)
        self.align_forward = align_forward
        self.class_map = dict(DEFAULT_CLASS_MAP if class_map is None else class_map)
        bad = {v for v in self.class_map.values() if v not in LABEL_OF}
        if bad:
            raise ValueError(
                f"class_map targets {sorted(bad)} are not project classes {list(LABEL_OF)}"
            )
        categories = self.metainfo.get("categories")
        if not isinstance(categories, dict):
            raise KeyError(
                f"{self.info_path}: metainfo has no 'categories' dict (name -> label id); "
                "it is needed to map nuScenes labels to project classes"
            )
        # nuScenes label id -> project label (-1: dropped).
        self._label_of_id = {
            int(i): LABEL_OF[self.class_map[name]] if name in self.class_map else -1
            for name, i in categories.items()
        }

    def __len__(self) -> int:
        return len(self.data_list)

    def lidar_path(self, index: int) -> Path:
        info = self.data_list[index]
        return _resolve_lidar_path(info["lidar_points"]["lidar_path"], self.roots,
                                   self.lidar_prefix)

    def _forward_yaw(self, info: dict) -> float:
        """Heading of the ego car's +x axis in the LiDAR frame (about +90 deg in nuScenes)."""
        lidar2ego = info["lidar_points"].get("lidar2ego")
        if lidar2ego is None:
            raise KeyError(
                f"sample {info.get('sample_idx')} has no lidar_points.lidar2ego; "
                "pass align_forward=False to keep nuScenes' LiDAR frame"
            )
        rot = np.asarray(lidar2ego, dtype=np.float64)[:3, :3]
        forward = rot.T @ np.array([1.0, 0.0, 0.0])  # ego +x seen from the LiDAR
        return float(np.arctan2(forward[1], forward[0]))

    def load_points(self, index: int) -> np.ndarray:
        """The key-frame sweep as float32 ``[N, 5]`` (x, y, z, intensity, ring), LiDAR frame."""
        info = self.data_list[index]
        feats = int(info["lidar_points"].get("num_pts_feats", 5))
        if feats < 5:
            raise ValueError(
                f"{self.lidar_path(index)} stores {feats} values a point; the project needs 5 "
                "(x, y, z, intensity, ring) as nuScenes' .pcd.bin files do"
            )
        raw = np.fromfile(self.lidar_path(index), dtype=np.float32)
        if raw.size % feats:
            raise ValueError(
                f"{self.lidar_path(index)} holds {raw.size} floats, not a multiple of "
                f"num_pts_feats={feats}: the file is truncated or not a .pcd.bin sweep"
            )
        return np.ascontiguousarray(raw.reshape(-1, feats)[:, :5])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range: the info file has {len(self)}")
        info = self.data_list[index]
        points = self.load_points(index)
        boxes, labels, counts = [], [], []
        for inst in info.get("instances", []):
            label = self._label_of_id.get(int(inst["bbox_label_3d"]), -1)
            if label < 0:
                continue
            boxes.append(np.asarray(inst["bbox_3d"], dtype=np.float64)[:7])
            labels.append(label)
            counts.append(int(inst.get("num_lidar_pts", -1)))
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 7)
        num_points = np.array(counts, dtype=np.int64)
        missing = num_points < 0  # infos without num_lidar_pts: count them here
        if missing.any():
            num_points[missing] = count_points_in_boxes(points, boxes[missing])
        if self.align_forward:
            points, boxes = rotate_z(points, boxes, -self._forward_yaw(info))
        return {
            "points": points.astype(np.float32),
            "gt_boxes": boxes.astype(np.float32),
            "gt_labels": np.array(labels, dtype=np.int64),
            "num_points": num_points,
            "visible": num_points >= self.min_points,
            "sample_idx": int(info.get("sample_idx", index)),
            "source": "nuscenes",
            "seed": None,
        }
