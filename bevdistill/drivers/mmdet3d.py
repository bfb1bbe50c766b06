"""The driver of mmdet3d detectors (``Base3DDetector``: CenterPoint, BEVFusion, ...).

mmdet3d models differ from the package's own in three ways, and this driver handles only these:

* Each model preprocesses the batch itself: a voxel 0.1 m teacher and a pillar 0.2 m student
  voxelize the same points differently (the voxel layer lives in each model's
  ``Det3DDataPreprocessor``). The distiller's own preprocessor only moves data to the device.
* The teacher runs through the real API, ``extract_feat(batch_inputs_dict, batch_input_metas)``,
  then its head's ``forward`` when a hooked layer sits in the head. ``mode='tensor'`` cannot be
  relied on: BEVFusion's ``_forward`` returns nothing. The student runs ``loss(inputs, samples)``.
* The dry forward that reads channel sizes needs inputs the models accept: random points with
  the models' point dimension inside their point-cloud range (LiDAR-only models), or one real
  sample of a dataset config (``probe=dict(dataset=...)``, required for camera models).

The dry forward runs on the GPU when there is one (these models' ops have no CPU kernels) and
the models go back to where they were built: they move to a device when the Runner moves them.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import pseudo_collate
from mmengine.model import BaseDataPreprocessor
from mmengine.registry import DefaultScope
from torch import nn

from bevdistill.drivers.pillar import PillarDriver
from bevdistill.drivers.requirements import require_mmdet3d
from bevdistill.engine.checkpoint import allow_mmengine_checkpoint_globals
from bevdistill.example_inputs import random_points
from bevdistill.probe import DistillerBuildError

require_mmdet3d()

SCOPE = "mmdet3d"
HEADS = ("pts_bbox_head", "bbox_head")  # CenterPoint / MVX-style, BEVFusion / TransFusion
KD_HOOKS = {"pts_bbox_head": "pts_bbox_head", "bbox_head": "bbox_head.heatmap_head"}


def _registry():
    from mmdet3d.registry import MODELS
    from mmdet3d.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    return MODELS


def mmdet3d_model_config(spec: Any, role: str) -> ConfigDict:
    """The model dict of ``spec``: a dict, an mmengine Config, a config file or a package config
    (``'mmdet3d::centerpoint/....py'``), the last two read for their ``model``."""
    if isinstance(spec, str) and "::" in spec:  # a config shipped in a package: 'mmdet3d::...'
        from mmengine.hub import get_config

        spec = get_config(spec).model
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{role} config {str(path)!r} does not exist")
        cfg = Config.fromfile(str(path))
        if "model" not in cfg:
            raise DistillerBuildError(f"{role} config {path} has no `model` entry")
        spec = cfg.model
    if isinstance(spec, Config):
        spec = spec.model if "model" in spec else spec
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise TypeError(
            f"{role} must be an mmdet3d model config (a dict with 'type', a Config or a config "
            f"file path) or an nn.Module; got {type(spec).__name__}"
        )
    # mmdet3d reads nested settings as attributes (train_cfg.pts): a ConfigDict, not a dict
    return ConfigDict(copy.deepcopy(dict(spec)))


def build_mmdet3d_model(spec: Any, role: str = "model") -> nn.Module:
    """An mmdet3d detector from a module, a model dict, a Config or a config file path."""
    if isinstance(spec, nn.Module):
        model = spec
    else:
        cfg = mmdet3d_model_config(spec, role)
        registry = _registry()
        with DefaultScope.overwrite_default_scope(SCOPE):
            model = registry.build(cfg)
    missing = [m for m in ("extract_feat", "loss", "predict", "data_preprocessor")
               if not hasattr(model, m)]
    if missing:
        raise DistillerBuildError(
            f"the {role} ({type(model).__name__}) lacks {missing}: BEVDistiller drives mmdet3d "
            "detectors (Base3DDetector: extract_feat, loss, predict, data_preprocessor)"
        )
    return model


def head_name(model: nn.Module) -> str | None:
    """``'pts_bbox_head'`` (CenterPoint) or ``'bbox_head'`` (BEVFusion), whichever is built."""
    return next((h for h in HEADS if isinstance(getattr(model, h, None), nn.Module)), None)


def _positional_arity(fn: Any) -> int:
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is p.empty for p in params)


def run_head(model: nn.Module, feats: Any, metas: list[dict]) -> Any:
    """The head's forward on ``extract_feat``'s output, as the model's own ``loss`` calls it."""
    name = head_name(model)
    if name is None:
        raise DistillerBuildError(f"{type(model).__name__} has no detection head to hook")
    head = getattr(model, name)
    if name == "pts_bbox_head" and isinstance(feats, tuple) and len(feats) == 2:
        feats = feats[1]  # MVXTwoStageDetector.extract_feat returns (img_feats, pts_feats)
    return head(feats, metas) if _positional_arity(head.forward) >= 2 else head(feats)


def _point_dim(spec: Any) -> int | None:
    """Point features the model reads (``pts_voxel_encoder.in_channels``/``num_features``)."""
    if not isinstance(spec, Mapping):
        return None
    encoder = spec.get("pts_voxel_encoder") or {}
    return encoder.get("in_channels", encoder.get("num_features"))


def _point_cloud_range(model: nn.Module) -> Sequence[float] | None:
    """From the preprocessor's voxel layer (CenterPoint) or the model's own (BEVFusion)."""
    layers = (getattr(getattr(model, "data_preprocessor", None), "voxel_layer", None),
              getattr(model, "pts_voxel_layer", None))
    return next((layer.point_cloud_range for layer in layers
                 if getattr(layer, "point_cloud_range", None) is not None), None)


class MMDet3DDriver(PillarDriver):
    """Runs mmdet3d detectors for the Distiller (see the module docstring).

    Args (the others are :class:`~bevdistill.drivers.pillar.PillarDriver`'s):
        probe: inputs of the dry forward. ``dict(dataset=<dataset config>, index=0)`` takes one
            real sample; otherwise ``dict(num_points=4096, point_dim=None)`` makes random
            points (``point_dim`` read from the student's ``pts_voxel_encoder`` config when None).
    """

    def __init__(self, probe: Mapping[str, Any] | None = None, **settings: Any):
        super().__init__(**settings)
        self.probe_cfg = dict(probe or {})
        self.student_point_dim: int | None = None

    # --- building -------------------------------------------------------------------------

    def build(self, spec: Any, role: str) -> nn.Module:
        if role == "student" and not isinstance(spec, nn.Module):
            self.student_point_dim = _point_dim(mmdet3d_model_config(spec, role))
        return build_mmdet3d_model(spec, role)

    def describe(self, spec: Any, role: str) -> Any:
        return spec if isinstance(spec, nn.Module) else mmdet3d_model_config(spec, role)

    def load_teacher(self, teacher: nn.Module, checkpoint: Any) -> Any:
        allow_mmengine_checkpoint_globals()  # Runner checkpoints: message hub, numpy scalars
        return super().load_teacher(teacher, checkpoint)

    def preprocessor(self, student: nn.Module) -> Any:
        """Each model preprocesses for itself; the Distiller's only moves data to the device."""
        return self.data_preprocessor if self.data_preprocessor is not None else BaseDataPreprocessor()

    def heatmap_layer(self, model: nn.Module) -> str:
        """CenterHead's per-task outputs (``pts_bbox_head``) or TransFusion's class heatmap."""
        name = head_name(model)
        if name is None:
            raise DistillerBuildError(f"{type(model).__name__} has no detection head whose "
                                      "heatmaps a term could read")
        return KD_HOOKS[name]

    # --- the dry forward ------------------------------------------------------------------

    def dry_inputs(self, student: nn.Module, teacher: nn.Module) -> dict:
        """One batch for the dry forward: the given one, a real dataset sample, or random points."""
        if self.example_inputs is not None:
            return self.example_inputs
        if "dataset" in self.probe_cfg:
            return self._dataset_probe()
        for role, model in (("student", student), ("teacher", teacher)):
            if getattr(model, "img_backbone", None) is not None:
                raise DistillerBuildError(
                    f"the {role} has a camera branch; random points cannot feed it. Pass one "
                    "real sample for the dry forward: driver=dict(type='mmdet3d', probe=dict("
                    "dataset=<your train dataset config>))"
                )
        return self._random_points(student, teacher)

    def probe(self, model: nn.Module, batch: Any, hooks: Sequence[str]) -> None:
        """extract_feat (+ head if hooked), on the GPU when there is one, then back."""
        home = next(model.parameters()).device
        device = torch.device("cuda") if torch.cuda.is_available() else home
        model.to(device)
        try:
            if device.type != "cpu":
                batch = model.data_preprocessor.cast_data(batch)
            self._extract(model, batch["inputs"], batch["data_samples"], hooks)
        except RuntimeError as exc:
            if device.type == "cpu" and "not implemented on CPU" in str(exc):
                raise DistillerBuildError(
                    f"the dry forward of {type(model).__name__} failed on the CPU ({exc}): "
                    "its ops (sparse convolution, BEVFusion's voxelization and bev_pool) run "
                    "only on a GPU. Build it where CUDA is available, with mmcv compiled with "
                    "CUDA ops (see the book's set-up page)."
                ) from exc
            raise
        finally:
            model.to(home)

    def batch_size(self, batch: Any) -> int | None:
        return len(batch["data_samples"])

    # --- one step -------------------------------------------------------------------------

    def teacher_forward(self, teacher: nn.Module, inputs: Any, data_samples: Any,
                        hooks: Sequence[str]) -> None:
        self._extract(teacher, self.view_of(inputs, "teacher"), data_samples, hooks)

    def student_loss(self, student: nn.Module, inputs: Any, data_samples: Any,
                     ) -> dict[str, torch.Tensor]:
        data = student.data_preprocessor(
            {"inputs": self.view_of(inputs, "student"), "data_samples": data_samples}, True)
        return student.loss(data["inputs"], data["data_samples"])

    def student_predict(self, student: nn.Module, inputs: Any, data_samples: Any) -> list:
        data = student.data_preprocessor(
            {"inputs": self.view_of(inputs, "student"), "data_samples": data_samples}, False)
        return student.predict(data["inputs"], data["data_samples"])

    def student_tensor(self, student: nn.Module, inputs: Any, data_samples: Any,
                       hooks: Sequence[str]) -> Any:
        """The student's features (BEVFusion's ``_forward`` returns None)."""
        return self._extract(student, self.view_of(inputs, "student"), data_samples, hooks)

    # --- helpers ----------------------------------------------------------------------------

    def _extract(self, model: nn.Module, inputs: Any, data_samples: Any,
                 hooks: Sequence[str]) -> Any:
        """Preprocess with the model's own preprocessor, then extract_feat (+ head if hooked)."""
        samples = [s.clone() for s in data_samples] if data_samples is not None else None
        data = model.data_preprocessor({"inputs": inputs, "data_samples": samples}, False)
        metas = [s.metainfo for s in data["data_samples"]]
        feats = model.extract_feat(data["inputs"], metas)
        name = head_name(model)
        if name is not None and any(h == name or h.startswith(name + ".") for h in hooks):
            run_head(model, feats, metas)
        return feats

    def _dataset_probe(self) -> dict:
        from mmdet3d.registry import DATASETS

        cfg = copy.deepcopy(dict(self.probe_cfg["dataset"]))
        index = int(self.probe_cfg.get("index", 0))
        with DefaultScope.overwrite_default_scope(SCOPE):
            dataset = DATASETS.build(cfg)
        if len(dataset) <= index:
            raise DistillerBuildError(
                f"probe dataset has {len(dataset)} samples; probe index {index} is out of range"
            )
        return pseudo_collate([dataset[index]])

    def _random_points(self, student: nn.Module, teacher: nn.Module) -> dict:
        from mmdet3d.structures import Det3DDataSample

        pc_range = _point_cloud_range(student) or _point_cloud_range(teacher)
        point_dim = self.probe_cfg.get("point_dim") or self.student_point_dim
        if pc_range is None or point_dim is None:
            raise DistillerBuildError(
                "cannot make random points for the dry forward: "
                + ("the models have no voxel_layer.point_cloud_range in their data "
                   "preprocessor" if pc_range is None else
                   "the student config does not give pts_voxel_encoder.in_channels")
                + ". Pass driver=dict(type='mmdet3d', probe=dict(point_dim=D)) and a voxelizing "
                "preprocessor, or probe=dict(dataset=<dataset config>)."
            )
        num_points = int(self.probe_cfg.get("num_points", 4096))
        # two samples: global InfoNCE needs a batch
        points = random_points(pc_range, 2, num_points, seed=0, point_dim=int(point_dim))
        return {"inputs": {"points": points}, "data_samples": [Det3DDataSample() for _ in points]}
