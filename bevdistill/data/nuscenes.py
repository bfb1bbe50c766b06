"""Reader for nuScenes-format data: mmdet3d 1.x info ``.pkl`` (v1.1) plus ``.pcd.bin`` sweeps.

It yields the same sample structure as the synthetic world, so a real frame (or a user's full
nuScenes) flows through the same datasets, models and metric. Class mapping: ``car`` ->
car, ``pedestrian`` -> pedestrian, ``bicycle`` and ``motorcycle`` -> cyclist; every other
category (truck, bus, trailer, construction vehicle, barrier, traffic cone) and label -1 is
DROPPED, i.e. it becomes unlabelled scenery, like the synthetic world's trucks and barriers.

Only the key-frame sweep is read (no multi-sweep accumulation). Boxes are the infos'
``bbox_3d`` (gravity centre, l along the heading, yaw from +x towards +y), which the point
counts confirm: counting the demo frame's points in these boxes reproduces ``num_lidar_pts``.

Nothing read is trusted. Info files are unpickled by :class:`InfoUnpickler` (builtins and
numpy only: a plain ``pickle.load`` of an untrusted file can run code). A sweep's size must be
a whole number of float32 points, its rings whole numbers below ``num_rings`` and its intensity
within ``intensity_range``; and the points counted in each labelled box must agree with the
info's ``num_lidar_pts`` (within ``max(5, 25%)``: the annotation's own counting differs a
little). A float64 file, 4 values a point or a truncated file fails one of these checks with
:class:`PointFileError` instead of being read as garbage or as fewer points.

What is wrong with the data itself follows one rule. A fault that makes a whole sample or file
meaningless is an error (:class:`InfoFileError`, naming the file, the sample and the key): a
sample without ``lidar_points.lidar_path``, an instance without ``bbox_3d``/``bbox_label_3d``,
a box with fewer than 7 numbers or a NaN/inf in one (corruption, not an annotation), and a
``lidar2ego`` that is not a finite 4 x 4 rigid transform (all zeros, a rotation that is not
orthonormal with determinant +1), since it would turn every box wrongly. A fault of one object
is not: a box with a zero or negative size is dropped with a :class:`DataSanityWarning` naming
the sample, and counted in ``NuScenesReader.dropped_boxes`` (sample index -> boxes dropped).
A scan with no point inside ``point_cloud_range`` is warned about and counted the same way by
the dataset (:attr:`~bevdistill.data.dataset.NuScenesBEVDataset.empty_scans`).

The one real frame used by tests is found through ONE setting, :func:`demo_frame_dir`.
"""

from __future__ import annotations

import builtins
import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from bevdistill.errors import UserError

from .classes import LABEL_OF
from .geometry import count_points_in_boxes
from .transforms import rotate_z

DEMO_ENV_VAR = "BEVDISTILL_NUSCENES_DEMO"
DEMO_INFO_NAME = "nuscenes_demo_infos.pkl"

COUNT_TOLERANCE = (5, 0.25)  # |counted - num_lidar_pts| allowed: max(5 points, 25 %)
POINT_BYTES = 4  # float32, the only dtype of nuScenes .pcd.bin sweeps


class InfoFileError(UserError, ValueError):
    """An info file cannot be read safely: corrupt, not a pickle, or it asks for other objects."""


class PointFileError(UserError, ValueError):
    """A LiDAR sweep does not hold what its info declares (size, rings, intensity, counts)."""


class DataSanityWarning(UserWarning):
    """A sample was used with a fault of one object dropped, or holds no point in range."""


ROTATION_TOLERANCE = 1e-3  # |R^T R - I| and |det R - 1| allowed in lidar2ego


def check_lidar2ego(matrix: object, where: str) -> np.ndarray:
    """``lidar2ego`` as a float 4 x 4 rigid transform; :class:`InfoFileError` otherwise."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InfoFileError(f"{where}: lidar_points.lidar2ego is not a 4 x 4 matrix of numbers "
                            f"({exc})") from exc
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise InfoFileError(f"{where}: lidar_points.lidar2ego must be a finite 4 x 4 matrix, got "
                            f"shape {m.shape}" + ("" if m.shape != (4, 4) else " with NaN or inf"))
    rot = m[:3, :3]
    off = max(np.abs(rot.T @ rot - np.eye(3)).max(), abs(np.linalg.det(rot) - 1.0))
    if off > ROTATION_TOLERANCE:
        raise InfoFileError(
            f"{where}: lidar_points.lidar2ego's rotation is not a rotation (R^T R or det R off "
            f"by {off:.3g}; all zeros, a scale or a mirror?), so it would turn every box wrongly. "
            "Regenerate the infos, or pass align_forward=False to keep nuScenes' LiDAR frame")
    return m


_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                            "str", "bytes", "bytearray", "bool", "slice", "range"})
_NUMPY_GLOBALS = frozenset(
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                         ("numeric", "_frombuffer"))
) | {("numpy", "ndarray"), ("numpy", "dtype"),
     ("_codecs", "encode")}  # protocol-2 pickles store an array's bytes as encode(str, 'latin1')


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class InfoUnpickler(pickle.Unpickler):
    """Unpickles data only: plain builtins and numpy arrays, dtypes and scalars."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        if (module, name) in _NUMPY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise _ForbiddenGlobal(f"{module}.{name}")


def load_infos(path: str | os.PathLike) -> object:
    """Unpickle an info file with :class:`InfoUnpickler`; errors name the file."""
    try:
        with open(path, "rb") as f:
            return InfoUnpickler(f).load()
    except _ForbiddenGlobal as exc:
        raise InfoFileError(
            f"info file {path} asks to load {exc}, but info files may hold only builtins and "
            "numpy objects (anything else can run code when unpickled). Regenerate it with "
            "mmdet3d's tools/create_data.py, or convert it to plain dicts, lists and arrays"
        ) from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as exc:
        raise InfoFileError(
            f"info file {path} cannot be read ({type(exc).__name__}: {exc}): it is truncated, "
            "corrupt or not a pickle. Regenerate it with mmdet3d's tools/create_data.py"
        ) from exc


def check_points(path: Path, points: np.ndarray, num_rings: int,
                 intensity_range: tuple[float, float]) -> None:
    """Raise :class:`PointFileError` unless ``points`` ``[N, 5]`` look like a LiDAR sweep."""
    hint = ("the file is not a float32 sweep of (x, y, z, intensity, ring): a float64 file, "
            "another number of values a point, or the wrong num_pts_feats in the info")
    finite = np.isfinite(points).all(axis=0)
    if not finite.all():
        columns = [c for c, ok in zip(("x", "y", "z", "intensity", "ring"), finite, strict=True) if not ok]
        raise PointFileError(f"{path}: NaN or inf in {columns}; {hint}")
    ring, intensity = points[:, 4], points[:, 3]
    bad_ring = (ring != np.round(ring)) | (ring < 0) | (ring >= num_rings)
    if bad_ring.any():
        raise PointFileError(
            f"{path}: {int(bad_ring.sum())} of {len(ring)} ring values are not whole numbers in "
            f"[0, {num_rings}) (seen {ring.min():.4g} to {ring.max():.4g}); {hint}. For a sensor "
            "with more rings pass num_rings="
        )
    low, high = intensity_range
    bad = (intensity < low) | (intensity > high)
    if bad.any():
        raise PointFileError(
            f"{path}: {int(bad.sum())} of {len(intensity)} intensities lie outside "
            f"[{low:g}, {high:g}] (seen {intensity.min():.4g} to {intensity.max():.4g}); {hint}. "
            "For another sensor pass intensity_range="
        )


DEFAULT_CLASS_MAP: dict[str, str] = {
    "car": "car",
    "pedestrian": "pedestrian",
    "bicycle": "cyclist",
    "motorcycle": "cyclist",
}


#: Where a clone of the repository keeps the real frame (with its NOTICE: nuScenes data,
#: CC BY-NC-SA 4.0), relative to the repository root. Outside the package: the wheel does not
#: carry it, so an installed package finds it only through the environment variable.
DEMO_REPO_PATH = Path("book") / "data" / "nuscenes_frame"


def demo_frame_dir() -> Path:
    """Folder of the real nuScenes demo frame: ``$BEVDISTILL_NUSCENES_DEMO``, else the copy
    shipped in the repository, ``<repository root>/book/data/nuscenes_frame``. It may not exist
    (an installed wheel without the repository)."""
    env = os.environ.get(DEMO_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / DEMO_REPO_PATH


def demo_info_path() -> Path | None:
    """The demo frame's info file, or None where it is absent."""
    path = demo_frame_dir() / DEMO_INFO_NAME
    return path if path.is_file() else None


def demo_missing_message() -> str:
    """Why the real frame is unavailable and how to point at it (for skips and errors)."""
    return (
        f"real nuScenes frame not found at {demo_frame_dir()}: a clone of the repository ships "
        f"it in {DEMO_REPO_PATH.as_posix()}/; otherwise set the environment variable "
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
        num_rings: int = 32,
        intensity_range: tuple[float, float] = (0.0, 255.0),
    ):
        self.info_path = Path(info_path)
        if not self.info_path.is_file():
            raise FileNotFoundError(
                f"info file {self.info_path} does not exist; pass the path of an mmdet3d 1.x "
                "nuScenes info .pkl (e.g. nuscenes_infos_val.pkl)"
            )
        infos = load_infos(self.info_path)
        self.num_rings = int(num_rings)
        self.intensity_range = (float(intensity_range[0]), float(intensity_range[1]))
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
        self.dropped_boxes: dict[int, int] = {}  # sample index -> degenerate boxes dropped
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

    def _where(self, index: int) -> str:
        info = self.data_list[index]
        name = info.get("sample_idx", index) if isinstance(info, dict) else index
        return f"{self.info_path}, sample {index} (sample_idx {name})"

    def _info(self, index: int) -> dict:
        """Sample ``index``'s info, with the keys this reader needs (else InfoFileError)."""
        info = self.data_list[index]
        if not isinstance(info, dict):
            raise InfoFileError(f"{self._where(index)}: data_list entries must be dicts, got "
                                f"{type(info).__name__}")
        lidar = info.get("lidar_points")
        if not isinstance(lidar, dict) or not isinstance(lidar.get("lidar_path"), str):
            raise InfoFileError(
                f"{self._where(index)}: no lidar_points.lidar_path (the sweep file); an mmdet3d "
                "1.x info has lidar_points=dict(lidar_path=..., num_pts_feats=5, lidar2ego=...)")
        return info

    def lidar_path(self, index: int) -> Path:
        info = self._info(index)
        return _resolve_lidar_path(info["lidar_points"]["lidar_path"], self.roots,
                                   self.lidar_prefix)

    def _boxes(self, index: int, instances: list) -> np.ndarray:
        """The instances' boxes ``[M, 7]``; corrupt ones raise (see the module docstring)."""
        if not isinstance(instances, (list, tuple)):
            raise InfoFileError(f"{self._where(index)}: instances must be a list of dicts, got "
                                f"{type(instances).__name__}")
        boxes = []
        for k, inst in enumerate(instances):
            where = f"{self._where(index)}, instance {k}"
            if not isinstance(inst, dict) or "bbox_3d" not in inst or "bbox_label_3d" not in inst:
                raise InfoFileError(f"{where}: an instance needs bbox_3d and bbox_label_3d")
            try:
                box = np.asarray(inst["bbox_3d"], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise InfoFileError(f"{where}: bbox_3d is not a list of numbers ({exc})") from exc
            if box.size < 7:
                raise InfoFileError(f"{where}: bbox_3d has {box.size} numbers, not 7 "
                                    "(x, y, z, l, w, h, yaw)")
            if not np.isfinite(box[:7]).all():
                raise InfoFileError(f"{where}: bbox_3d holds NaN or inf ({box[:7].tolist()}); the "
                                    "info file is corrupt: regenerate it")
            boxes.append(box[:7])
        return np.array(boxes, dtype=np.float64).reshape(-1, 7)

    def _forward_yaw(self, index: int, info: dict) -> float:
        """Heading of the ego car's +x axis in the LiDAR frame (about +90 deg in nuScenes)."""
        lidar2ego = info["lidar_points"].get("lidar2ego")
        if lidar2ego is None:
            raise InfoFileError(
                f"{self._where(index)}: no lidar_points.lidar2ego; "
                "pass align_forward=False to keep nuScenes' LiDAR frame"
            )
        rot = check_lidar2ego(lidar2ego, self._where(index))[:3, :3]
        forward = rot.T @ np.array([1.0, 0.0, 0.0])  # ego +x seen from the LiDAR
        return float(np.arctan2(forward[1], forward[0]))

    def load_points(self, index: int) -> np.ndarray:
        """The key-frame sweep as float32 ``[N, 5]`` (x, y, z, intensity, ring), LiDAR frame."""
        info = self._info(index)
        feats = int(info["lidar_points"].get("num_pts_feats", 5))
        if feats < 5:
            raise ValueError(
                f"{self.lidar_path(index)} stores {feats} values a point; the project needs 5 "
                "(x, y, z, intensity, ring) as nuScenes' .pcd.bin files do"
            )
        path = self.lidar_path(index)
        size, record = path.stat().st_size, feats * POINT_BYTES
        if size == 0 or size % record:
            raise PointFileError(
                f"{path} holds {size} bytes, not a positive multiple of {record} (num_pts_feats="
                f"{feats} float32 values a point): the file is truncated or not a .pcd.bin sweep"
            )
        raw = np.fromfile(path, dtype=np.float32)
        points = np.ascontiguousarray(raw.reshape(-1, feats)[:, :5])
        check_points(path, points, self.num_rings, self.intensity_range)
        return points

    def _check_counts(self, index: int, annotated: np.ndarray, counted: np.ndarray) -> None:
        """The sweep must hold the points the annotation saw in each box (see module doc)."""
        known = annotated >= 0
        allowed = np.maximum(COUNT_TOLERANCE[0], COUNT_TOLERANCE[1] * annotated)
        off = np.flatnonzero(known & (np.abs(counted - annotated) > allowed))
        if off.size:
            examples = ", ".join(f"box {k}: {annotated[k]} annotated, {counted[k]} counted"
                                 for k in off[:3])
            raise PointFileError(
                f"{self.lidar_path(index)}: the points in {off.size} of {int(known.sum())} "
                f"labelled boxes do not match the info's num_lidar_pts ({examples}): the sweep "
                "is truncated, belongs to another sample, or the boxes are in another frame"
            )

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range: the info file has {len(self)}")
        info = self._info(index)
        points = self.load_points(index)
        instances = info.get("instances", [])
        all_boxes = self._boxes(index, instances)
        degenerate = (all_boxes[:, 3:6] <= 0).any(axis=1)
        if degenerate.any():
            self.dropped_boxes[index] = int(degenerate.sum())
            warnings.warn(
                f"{self._where(index)}: dropped {int(degenerate.sum())} box(es) with a zero or "
                f"negative size (instances {np.flatnonzero(degenerate)[:5].tolist()}); "
                f"{len(self.dropped_boxes)} sample(s) of this info file had boxes dropped so far",
                DataSanityWarning, stacklevel=2)
        annotated = np.array([int(i.get("num_lidar_pts", -1)) for i in instances],
                             dtype=np.int64).reshape(-1)
        counted = count_points_in_boxes(points, all_boxes)
        annotated[degenerate] = -1  # nothing to count in a box without volume
        self._check_counts(index, annotated, counted)
        kept = [k for k, i in enumerate(instances) if not degenerate[k]
                and self._label_of_id.get(int(i["bbox_label_3d"]), -1) >= 0]
        boxes = all_boxes[kept]
        labels = [self._label_of_id[int(instances[k]["bbox_label_3d"])] for k in kept]
        num_points = annotated[kept]
        missing = num_points < 0  # infos without num_lidar_pts: the counts from the sweep
        num_points[missing] = counted[kept][missing]
        if self.align_forward:
            points, boxes = rotate_z(points, boxes, -self._forward_yaw(index, info))
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
