"""mmengine-ready datasets of LiDAR samples (synthetic or nuScenes) and their collate function.

An item is ``{"inputs": {"points": Tensor[N, 5]}, "data_samples": sample}`` with ``sample`` a
plain dict (see the project's data contract). A two-sensor synthetic world (``teacher_lidar``)
adds ``inputs["teacher_points"]``: the richer sensor's scan of the same scene, which a
:class:`~bevdistill.Distiller` feeds to its teacher while the student reads ``points``. Points are cropped to ``point_cloud_range``;
boxes whose BEV centre falls outside it are dropped; boxes hit by fewer than ``min_points``
points are DROPPED too unless ``keep_invisible=True`` (then they stay, ``visible=False``), so
by default every box a model or metric sees is a training target.

Both datasets are registered in mmengine's ``DATASETS`` registry and ``bev_collate`` in its
``FUNCTIONS`` registry, so a config can say::

    train_dataloader = dict(
        dataset=dict(type="SyntheticBEVDataset", split="train", num_samples=2000, augment=True),
        collate_fn=dict(type="bev_collate"), sampler=dict(type="DefaultSampler", shuffle=True),
        batch_size=4)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from mmengine.registry import DATASETS, FUNCTIONS
from torch.utils.data import Dataset

from bevdistill._io import atomic_write_with

from .camera import CameraConfig, CameraRig
from .classes import CLASS_NAMES
from .lidar import LidarSimulator
from .nuscenes import DataSanityWarning, NuScenesReader
from .nuscenes_cameras import load_cameras
from .scene import SceneConfig
from .synthetic import simulate_sample
from .transforms import GlobalAugment

DEFAULT_POINT_CLOUD_RANGE: tuple[float, ...] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
SPLITS: tuple[str, ...] = ("train", "val", "test")
# whose scan is inputs['points']; "deployed": the deployed scan for both models, the rich scan
# only labels the boxes (a teacher that reads the deployed LiDAR plus cameras)
VIEWS: tuple[str, ...] = ("student", "teacher", "deployed")
_AUG_STREAM = 2  # random stream of the augmentation (0: scene, 1: sensor)
_AXES = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]], dtype=np.float32)


def split_world_seed(seed: int, split: str) -> int:
    """World seed of a split: ``3 * seed + k`` (k = 0 train, 1 val, 2 test).

    Distinct splits therefore never share a world, whatever ``seed`` each dataset uses, and a
    sample's ``seed`` field plus its ``sample_idx`` regenerate it with ``simulate_sample``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return 3 * int(seed) + SPLITS.index(split)


def _check_range(point_cloud_range: Sequence[float]) -> tuple[float, ...]:
    pcr = tuple(float(v) for v in point_cloud_range)
    if len(pcr) != 6 or not all(pcr[i] < pcr[i + 3] for i in range(3)):
        raise ValueError(
            "point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, z_max) with each "
            f"min < max, got {point_cloud_range}"
        )
    return pcr


class _LidarBEVDataset(Dataset):
    """Shared item logic: augmentation, range crop, visibility filter, tensors."""

    source = "unknown"

    def __init__(self, point_cloud_range, augment, min_points: int, keep_invisible: bool,
                 aug_seed: int, cache: bool, view: str = "student"):
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS} (whose scan is inputs['points']), "
                             f"got {view!r}")
        self.view = view
        self.point_cloud_range = _check_range(point_cloud_range)
        self.augment = GlobalAugment.from_config(augment)
        if min_points < 0:
            raise ValueError(f"min_points must be >= 0, got {min_points}")
        self.min_points = int(min_points)
        self.keep_invisible = bool(keep_invisible)
        self.aug_seed = int(aug_seed)
        self.epoch = 0
        self.cache = bool(cache)
        self._cache: dict[int, dict] = {}
        self.labelled_samples: int | None = None
        self.empty_scans: set[int] = set()  # scenes whose scan had no point in range
        self.blank_images = False  # see SyntheticBEVDataset

    @property
    def metainfo(self) -> dict:
        """What mmengine hands to the evaluator as ``dataset_meta``."""
        return {"classes": CLASS_NAMES, "point_cloud_range": self.point_cloud_range,
                "source": self.source}

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh augmentation per epoch; the epoch is part of the augmentation seed, so
        a resumed run that calls this with the same epoch sees the same augmented samples.
        Without calls every epoch sees the same augmentation of a given sample."""
        self.epoch = int(epoch)

    def _load(self, index: int) -> dict:
        raise NotImplementedError  # subclasses return the raw sample dict (numpy)

    def raw_sample(self, index: int) -> dict:
        """The un-augmented, uncropped sample (numpy), from the cache where enabled."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        if index in self._cache:
            return self._cache[index]
        sample = self._load(index)
        if self.cache:
            self._cache[index] = sample
        return sample

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        scene = self.scene_of(index)
        return self.make_item(index, scene, self.raw_sample(scene), self.is_labelled(scene))

    def make_item(self, index: int, scene: int, raw: dict, labelled: bool) -> dict:
        """Item ``index`` (scene ``scene``) from its raw sample: augmented, cropped to the range,
        boxes filtered (none when not ``labelled``). A wrapper that brings its own boxes
        (:class:`~bevdistill.data.pseudo_labels.PseudoLabelledDataset`) passes a changed raw."""
        views = {"points": raw["points"]}
        if "teacher_points" in raw:
            if self.view == "teacher":
                views = {"points": raw["teacher_points"]}
            elif self.view == "student":
                views["teacher_points"] = raw["teacher_points"]
        elif self.view == "teacher":
            raise ValueError("view='teacher' needs a second, richer scan: set teacher_lidar")
        boxes = raw["gt_boxes"]
        lo, hi = np.array(self.point_cloud_range[:3]), np.array(self.point_cloud_range[3:])
        augmentation = np.eye(4)  # LiDAR frame -> augmented frame
        if self.augment is not None:  # one transform for every scan: the views stay aligned
            rng = np.random.default_rng([self.aug_seed, index, _AUG_STREAM, self.epoch])
            # The unit axes ride along (the transform is linear), so that the cameras'
            # calibration can follow it.
            views["axes"] = _AXES
            sizes = np.cumsum([len(v) for v in views.values()])[:-1]
            merged, boxes = self.augment(np.concatenate(list(views.values())), boxes, rng)
            views = dict(zip(views, np.split(merged, sizes), strict=True))
            augmentation[:3, :3] = views.pop("axes")[:, :3].T
        inputs = {}
        for key, cloud in views.items():
            inside = np.all((cloud[:, :3] >= lo) & (cloud[:, :3] < hi), axis=1)
            inputs[key] = torch.from_numpy(np.ascontiguousarray(cloud[inside], dtype=np.float32))
        if len(inputs["points"]) == 0:
            self._empty_scan(scene, raw)
        if "imgs" in raw:
            inputs.update(_camera_inputs(raw, augmentation, self.blank_images))
        keep = np.all((boxes[:, :2] >= lo[:2]) & (boxes[:, :2] < hi[:2]), axis=1)
        visible = raw["num_points"] >= self.min_points
        if not self.keep_invisible:
            keep &= visible
        if not labelled:  # an unlabelled scene carries no box at all: nothing can leak
            keep &= False
        sample = {
            "gt_boxes": torch.from_numpy(np.ascontiguousarray(boxes[keep], dtype=np.float32)),
            "gt_labels": torch.from_numpy(raw["gt_labels"][keep].astype(np.int64)),
            "num_points": torch.from_numpy(raw["num_points"][keep].astype(np.int64)),
            "visible": torch.from_numpy(visible[keep]),
            "sample_idx": raw["sample_idx"],
            "source": raw["source"],
            "seed": raw["seed"],
            "labelled": labelled,
        }
        return {"inputs": inputs, "data_samples": sample}

    def _empty_scan(self, scene: int, raw: dict) -> None:
        """Warn (once a scene) and count: a scan with no point in range teaches nothing, and
        many of them mean a wrong point_cloud_range or sensor frame."""
        if scene in self.empty_scans:
            return
        self.empty_scans.add(scene)
        warnings.warn(
            f"{self.source} sample {raw.get('sample_idx', scene)} (scene {scene}) has no LiDAR "
            f"point inside point_cloud_range {list(self.point_cloud_range)}; "
            f"{len(self.empty_scans)} such scan(s) so far in this dataset. Check the range and "
            "the sensor frame (nuScenes: align_forward)", DataSanityWarning, stacklevel=3)

    def is_labelled(self, scene: int) -> bool:
        """Whether ``scene`` comes with its boxes (see ``labelled_samples``)."""
        return self.labelled_samples is None or scene < self.labelled_samples

    def scene_of(self, index: int) -> int:
        """The scene item ``index`` shows. With some scenes unlabelled, even items cycle
        through the labelled scenes and odd items through the unlabelled ones, so that half of
        every batch, on average, has labels however few scenes do."""
        n, m = self.labelled_samples, len(self)
        if n is None or n in (0, m):
            return index
        half = index // 2
        return half % n if index % 2 == 0 else n + half % (m - n)


def _camera_inputs(raw: dict, augmentation: np.ndarray, blank: bool = False
                   ) -> dict[str, torch.Tensor]:
    """``imgs`` uint8 [6, 3, H, W], ``cam2img`` [6, 3, 3] and ``lidar2cam`` [6, 4, 4] of the
    augmented frame: the images stay as rendered, so the augmentation folds into lidar2cam.
    ``blank``: every image black (zeros), the calibration unchanged."""
    lidar2cam = raw["lidar2cam"].astype(np.float64) @ np.linalg.inv(augmentation)
    imgs = np.zeros_like(raw["imgs"]) if blank else np.ascontiguousarray(raw["imgs"])
    return {"imgs": torch.from_numpy(imgs),
            "cam2img": torch.from_numpy(raw["cam2img"].astype(np.float32)),
            "lidar2cam": torch.from_numpy(lidar2cam.astype(np.float32))}


@DATASETS.register_module()
class SyntheticBEVDataset(_LidarBEVDataset):
    """``num_samples`` scenes of the synthetic world of ``seed``, split ``split``.

    Scans are deterministic, so ``cache=True`` keeps generated ones in memory (about 0.5 MB
    each) for later epochs; with DataLoader workers each worker keeps its own cache.
    ``cache_dir`` also keeps them on disk (one ``.npz`` per scan, written atomically, named
    by world seed, index and a hash of every generation setting), so many runs or processes
    on the same world generate each scan once; augmentation is applied after loading, as
    without the cache. ``scene`` and ``lidar`` override :class:`SceneConfig` /
    :class:`LidarConfig` fields. ``world_version`` picks the objects' recipes (the scene
    setting of that name; default 2, objects with a front and a back; 1, the older symmetric
    world that models shipped without a ``world_version`` on their card were trained on).

    ``teacher_lidar`` (LidarConfig fields) adds a second scan of every scene from a richer
    sensor: items then carry ``inputs["teacher_points"]`` and boxes are labelled by what that
    scan sees (see :func:`~bevdistill.data.simulate_sample`). ``view="teacher"`` puts the rich
    scan in ``inputs["points"]`` instead (to train or evaluate the teacher on it), with the
    same labels. ``view="deployed"`` carries the deployed scan only: the rich scan labels the
    boxes, and a distilled teacher reads the same scan as the student (the fusion teacher of
    ``distill_fusion_to_16beam``, whose extra sense is its cameras).

    ``labelled_samples=N`` keeps the boxes of the first N scenes only: the others are
    unlabelled (no boxes, ``labelled=False``), which a detector's loss skips and distillation
    still uses. The first N scenes are the ones a run with ``num_samples=N`` trains on. Items
    alternate between labelled and unlabelled scenes (:meth:`scene_of`).

    ``cameras`` (True, or :class:`~bevdistill.data.camera.CameraConfig` fields) adds the six
    cameras' renders of every scene, cached with the scan: items then carry
    ``inputs["imgs"]`` uint8 [6, 3, H, W], ``inputs["cam2img"]`` [6, 3, 3] and
    ``inputs["lidar2cam"]`` [6, 4, 4], the latter from the augmented LiDAR frame (the images
    are not augmented; the calibration follows the points).

    ``blank_images=True`` (with ``cameras``) makes every image black, zeros in every channel,
    and leaves scans, boxes and calibration as they are: a fusion model scored on it shows how
    much of its score comes from the cameras (``benchmarks/fusion_teacher.py``). Black, not the
    data's mean colour: it is what a failed or covered camera delivers (the camera-failure
    check of BEVFusion's paper) and needs no statistic of the training images; it is further
    from the training images than a mean-colour frame, so the drop it measures may overstate
    what the cameras' information alone is worth. The cache is shared with the rendered
    images (they are blanked after loading).
    """

    source = "synthetic"

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 1000,
        seed: int = 0,
        point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
        augment: bool | dict | GlobalAugment | None = False,
        min_points: int = 5,
        keep_invisible: bool = False,
        cache: bool = True,
        scene: dict | None = None,
        lidar: dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        teacher_lidar: dict | None = None,
        view: str = "student",
        labelled_samples: int | None = None,
        cameras: bool | dict | None = None,
        world_version: int | None = None,
        blank_images: bool = False,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if labelled_samples is not None and not 0 <= labelled_samples <= num_samples:
            raise ValueError(f"labelled_samples must lie in [0, num_samples={num_samples}], "
                             f"got {labelled_samples}")
        self.split = split
        self.world_seed = split_world_seed(seed, split)
        super().__init__(point_cloud_range, augment, min_points, keep_invisible,
                         aug_seed=self.world_seed, cache=cache, view=view)
        self.num_samples = int(num_samples)
        self.labelled_samples = None if labelled_samples is None else int(labelled_samples)
        self.scene_config = SceneConfig.from_dict(_with_world_version(scene, world_version))
        self.simulator = LidarSimulator(lidar)
        self.teacher_simulator = LidarSimulator(teacher_lidar) if teacher_lidar else None
        if view == "teacher" and self.teacher_simulator is None:
            raise ValueError("view='teacher' needs teacher_lidar: the richer sensor whose scan "
                             "the teacher reads")
        self.cameras = (CameraRig(cameras, self.scene_config.sensor_height)
                        if cameras not in (None, False) else None)
        if blank_images and self.cameras is None:
            raise ValueError("blank_images=True blanks the camera images: set cameras too "
                             "(cameras=True), or leave blank_images off")
        self.blank_images = bool(blank_images)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._cache_key = self._settings_hash() if self.cache_dir is not None else ""

    def __len__(self) -> int:
        return self.num_samples

    @property
    def metainfo(self) -> dict:
        return {**super().metainfo, "world_version": self.scene_config.world_version}

    def _settings_hash(self) -> str:
        """Hash of everything a scan depends on besides (world seed, index)."""
        settings = {"scene": asdict(self.scene_config), "lidar": asdict(self.simulator.config),
                    "min_points": self.min_points}
        if self.teacher_simulator is not None:
            settings["teacher_lidar"] = asdict(self.teacher_simulator.config)
        if self.cameras is not None:
            settings["cameras"] = asdict(self.cameras.config)
        text = json.dumps(settings, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def cache_path(self, index: int) -> Path | None:
        """Where scan ``index`` is kept on disk (None without ``cache_dir``)."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"w{self.world_seed}_{self._cache_key}_{index:07d}.npz"

    def _load(self, index: int) -> dict:
        path = self.cache_path(index)
        if path is not None and path.is_file():
            with np.load(path) as f:
                sample = {k: f[k] for k in f.files}
            for key, kind in (("sample_idx", int), ("seed", int), ("source", str)):
                sample[key] = kind(sample[key])
            return sample
        sample = simulate_sample(self.world_seed, index, self.scene_config, self.simulator,
                                 min_points=self.min_points, teacher_lidar=self.teacher_simulator,
                                 cameras=self.cameras)
        if path is not None:  # atomic: a concurrent reader sees all or nothing
            atomic_write_with(path, lambda tmp: _savez(tmp, sample))
        return sample


def world_version_of(dataset_cfg) -> int | None:
    """The world version a dataset config (a dict, as experiments write it) generates scenes
    of: its ``world_version``, else its ``scene``'s, else the default; None for nuScenes."""
    cfg = dict(dataset_cfg)
    if cfg.get("type", "SyntheticBEVDataset") != "SyntheticBEVDataset":
        return None
    version = cfg.get("world_version")
    if version is None:
        version = dict(cfg.get("scene") or {}).get("world_version", SceneConfig.world_version)
    return int(version)


def _with_world_version(scene: dict | SceneConfig | None, version: int | None):
    """The scene settings with ``world_version`` set, refusing two different versions."""
    if version is None:
        return scene
    if isinstance(scene, SceneConfig):
        scene = asdict(scene)
    given = dict(scene or {}).get("world_version", version)
    if given != version:
        raise ValueError(f"world_version={version} but scene sets world_version={given}; "
                         "set it in one place")
    return {**dict(scene or {}), "world_version": int(version)}


def _savez(path: str, arrays: dict) -> None:
    # Through an open file: given a name, np.savez appends ".npz" to the temporary name.
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@DATASETS.register_module()
class NuScenesBEVDataset(_LidarBEVDataset):
    """Samples of an mmdet3d 1.x nuScenes info file through :class:`NuScenesReader`.

    ``num_points`` comes from the annotations' ``num_lidar_pts``. ``seed`` only seeds the
    augmentation. ``cameras`` (True or CameraConfig fields) adds the six camera images, resized
    and cropped as the synthetic cameras are rendered, with their calibration
    (:func:`~bevdistill.data.nuscenes_cameras.load_cameras`): the same camera inputs as
    :class:`SyntheticBEVDataset` gives.
    """

    source = "nuscenes"

    def __init__(
        self,
        info_path: str,
        data_root: str | None = None,
        point_cloud_range: Sequence[float] = DEFAULT_POINT_CLOUD_RANGE,
        augment: bool | dict | GlobalAugment | None = False,
        min_points: int = 5,
        keep_invisible: bool = False,
        cache: bool = False,
        class_map: dict | None = None,
        lidar_prefix: str | None = None,
        align_forward: bool = True,
        seed: int = 0,
        cameras: bool | dict | None = None,
    ):
        super().__init__(point_cloud_range, augment, min_points, keep_invisible,
                         aug_seed=int(seed), cache=cache)
        self.cameras = None if cameras in (None, False) else CameraConfig.from_dict(cameras)
        self.reader = NuScenesReader(info_path, data_root=data_root, class_map=class_map,
                                     lidar_prefix=lidar_prefix, min_points=min_points,
                                     align_forward=align_forward)

    def __len__(self) -> int:
        return len(self.reader)

    def _load(self, index: int) -> dict:
        sample = self.reader[index]
        if self.cameras is not None:
            sample.update(load_cameras(self.reader, index, self.cameras))
        return sample


@FUNCTIONS.register_module(name="bev_collate")
def bev_collate(batch: Sequence[dict]) -> dict:
    """Batch items as lists: ``{"inputs": {"points": [Tensor[N_i, 5], ...]},
    "data_samples": [sample, ...]}``; camera inputs, where items have them, are stacked.

    Point clouds differ in size, so they are not stacked; unlike mmengine's pseudo_collate the
    samples stay a list of dicts.
    """
    if not isinstance(batch, Sequence) or len(batch) == 0:
        raise ValueError("bev_collate needs a non-empty list of dataset items")
    points, samples, teacher_points = [], [], []
    for i, item in enumerate(batch):
        if not isinstance(item, dict) or "inputs" not in item or "data_samples" not in item:
            raise TypeError(
                f"item {i} is not a dataset item: expected a dict with 'inputs' and "
                f"'data_samples', got {type(item).__name__}"
            )
        pts = item["inputs"].get("points") if isinstance(item["inputs"], dict) else None
        if not isinstance(pts, torch.Tensor) or pts.ndim != 2 or pts.shape[1] != 5:
            raise ValueError(
                f"item {i}: inputs['points'] must be a Tensor [N, 5] (x, y, z, intensity, ring), "
                f"got {getattr(pts, 'shape', type(pts).__name__)}"
            )
        points.append(pts)
        samples.append(item["data_samples"])
        if "teacher_points" in item["inputs"]:
            teacher_points.append(item["inputs"]["teacher_points"])
    inputs = {"points": points}
    if teacher_points:
        if len(teacher_points) != len(points):
            raise ValueError("some items carry inputs['teacher_points'] and some do not: build "
                             "every dataset of a run with the same teacher_lidar setting")
        inputs["teacher_points"] = teacher_points
    inputs.update(_collate_cameras(batch))
    return {"inputs": inputs, "data_samples": samples}


CAMERA_INPUTS: tuple[str, ...] = ("imgs", "cam2img", "lidar2cam")


def _collate_cameras(batch: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack the camera inputs (same rig, same size in every item): ``imgs`` [B, 6, 3, H, W],
    ``cam2img`` [B, 6, 3, 3], ``lidar2cam`` [B, 6, 4, 4]; nothing when no item has cameras."""
    has = [all(k in item["inputs"] for k in CAMERA_INPUTS) for item in batch]
    if not any(has):
        return {}
    if not all(has):
        raise ValueError("some items carry camera inputs (imgs, cam2img, lidar2cam) and some do "
                         "not: build every dataset of a run with the same cameras setting")
    shapes = {tuple(item["inputs"]["imgs"].shape) for item in batch}
    if len(shapes) > 1:
        raise ValueError(f"camera images differ in shape across the batch ({sorted(shapes)}): "
                         "build every dataset of a run with the same cameras setting")
    return {k: torch.stack([item["inputs"][k] for item in batch]) for k in CAMERA_INPUTS}
