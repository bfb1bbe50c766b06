"""``PillarBEVDetector``: BEVFusion's LiDAR branch (pillars -> BEV -> SECOND -> FPN -> CenterPoint head).

Attribute names and output types follow BEVFusion so that distillation code written for it
runs here unchanged: ``pts_voxel_layer`` (voxeliser), ``pts_voxel_encoder`` (pillar feature
net), ``pts_middle_encoder`` (dense ``[B, C, H, W]``), ``pts_backbone`` (tuple of scales),
``pts_neck`` (list with one tensor) and ``bbox_head`` (with ``bbox_head.heatmap_head``).

The grid (``point_cloud_range``, ``voxel_size``) is given once; every part that needs it, and
every channel count and the head's output stride, is derived here. A sub-config may still
state them (as BEVFusion configs do), but must then agree with the derived value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from bevdistill._warnings import warn_once
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.models import centerpoint_head, pillar_encoder, scatter, second  # noqa: F401 (registers)
from bevdistill.models.geometry import BEVGrid, as_int_stride
from bevdistill.models.voxelize import PillarVoxelizer, check_points

MODES = ("loss", "predict", "tensor")
NO_GRAD_HINT = (
    "the detector's losses were computed under torch.no_grad() (or with gradients off) in train "
    "mode: they have no gradient, so backward() fails and nothing trains. Compute the loss of "
    "the model you train with gradients on (only a frozen teacher runs under no_grad)"
)


def _fill(cfg: Mapping, what: str, **derived: Any) -> dict:
    """Copy ``cfg`` and set each derived key; a key already given must equal the derived value."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what} must be a config dict, got {type(cfg).__name__}")
    out = copy.deepcopy(dict(cfg))
    for key, value in derived.items():
        if key in out:
            given = list(out[key]) if isinstance(out[key], (list, tuple)) else out[key]
            want = list(value) if isinstance(value, (list, tuple)) else value
            if given != want:
                raise ValueError(
                    f"{what}.{key} = {out[key]!r} disagrees with the value derived from the rest of "
                    f"the model ({value!r}); remove it from the config or make it match"
                )
        out[key] = value
    return out


@MODELS.register_module()
class PillarBEVDetector(BaseModel):
    """A pillar-based BEV detector with the mmengine model API.

    ``inputs = {'points': [Tensor[N_i, >=4], ...]}``; ``data_samples`` are dicts with
    ``gt_boxes`` [M, 7], ``gt_labels`` [M] and optionally ``visible`` [M] (only visible boxes
    become targets).
    """

    def __init__(
        self,
        point_cloud_range: Sequence[float],
        voxel_size: Sequence[float],
        pts_voxel_encoder: Mapping,
        pts_middle_encoder: Mapping,
        pts_backbone: Mapping,
        pts_neck: Mapping,
        bbox_head: Mapping,
        pts_voxel_layer: Mapping | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        data_preprocessor: Mapping | None = None,
        init_cfg: Mapping | None = None,
    ):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.grid = BEVGrid.from_config(point_cloud_range, voxel_size)
        self.class_names = tuple(class_names)
        geometry = dict(point_cloud_range=list(self.grid.point_cloud_range),
                        voxel_size=list(self.grid.voxel_size))

        self.pts_voxel_layer = PillarVoxelizer(self.grid, **dict(pts_voxel_layer or {}))
        self.pts_voxel_encoder = MODELS.build(_fill(pts_voxel_encoder, "pts_voxel_encoder", **geometry))
        self.pts_middle_encoder = MODELS.build(_fill(
            pts_middle_encoder, "pts_middle_encoder",
            in_channels=self.pts_voxel_encoder.out_channels, output_shape=list(self.grid.bev_shape),
        ))
        self.pts_backbone = MODELS.build(_fill(
            pts_backbone, "pts_backbone", in_channels=self.pts_middle_encoder.out_channels
        ))
        self.pts_neck = MODELS.build(_fill(pts_neck, "pts_neck", in_channels=self.pts_backbone.out_channels))
        self.out_size_factor = self._output_stride()
        for stride in (*self.pts_backbone.strides, self.out_size_factor):
            self.grid.feature_shape(stride)  # raises unless every scale tiles the grid exactly
        self.bbox_head = MODELS.build(_fill(
            bbox_head, "bbox_head", in_channels=self.pts_neck.out_channels,
            out_size_factor=self.out_size_factor, num_classes=len(self.class_names), **geometry,
        ))

    def _output_stride(self) -> int:
        """Stride of the neck's output relative to the pillar grid; every scale must agree."""
        strides = [
            s / u for s, u in zip(self.pts_backbone.strides, self.pts_neck.upsample_strides, strict=True)
        ]
        if max(strides) - min(strides) > 1e-6:
            raise ValueError(
                f"backbone strides {self.pts_backbone.strides} divided by the neck's upsample_strides "
                f"{self.pts_neck.upsample_strides} give different output strides {strides}; every "
                "scale must reach the same stride"
            )
        return as_int_stride(strides[0], "the output stride (backbone stride / upsample stride)")

    # ------------------------------------------------------------------ features
    @staticmethod
    def _points(inputs: Mapping) -> list[torch.Tensor]:
        if not isinstance(inputs, Mapping) or "points" not in inputs:
            raise KeyError(
                "inputs must be a dict with 'points': a list of [N_i, 5] tensors, one per sample "
                "(what bevdistill.data.bev_collate produces)"
            )
        points = inputs["points"]
        if not isinstance(points, (list, tuple)) or not points:
            raise TypeError(
                f"inputs['points'] must be a non-empty list of [N_i, 5] tensors, got {type(points).__name__}; "
                "wrap a single cloud as [points]"
            )
        for i, p in enumerate(points):
            check_points(p, f"inputs['points'][{i}]")
        return list(points)

    def _param_dtype(self) -> torch.dtype:
        return self.bbox_head.shared_conv[0].weight.dtype

    def extract_feat(self, inputs: Mapping) -> torch.Tensor:
        """The neck's BEV feature map ``[B, C, H, W]``, the input of ``bbox_head``."""
        return self.pts_neck(self.pts_backbone(self.bev_features(inputs)))[0]

    def bev_features(self, inputs: Mapping) -> torch.Tensor:
        """The BEV map ``pts_backbone`` reads: here ``pts_middle_encoder``'s LiDAR map (a
        fusion detector fuses a camera map into it)."""
        dtype = self._param_dtype()  # float64 clouds (e.g. from numpy) meet float32 weights
        points = [p.to(dtype) for p in self._points(inputs)]
        voxels, num_points, coors = self.pts_voxel_layer(points)
        pillar_feats = self.pts_voxel_encoder(voxels, num_points, coors)
        return self.pts_middle_encoder(pillar_feats, coors, len(points))

    # ------------------------------------------------------------------ mmengine API
    def loss(self, inputs: Mapping, data_samples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """``{'loss_heatmap', 'loss_bbox'}`` for the batch."""
        if self.training and not torch.is_grad_enabled():
            warn_once("detector.no-grad", NO_GRAD_HINT, UserWarning)
        return self.bbox_head.loss(self.bbox_head(self.extract_feat(inputs)), data_samples)

    def predict(self, inputs: Mapping, data_samples: Sequence[Mapping] | None = None) -> list[dict]:
        """One ``{'boxes' [K, 7], 'scores' [K], 'labels' [K] int64}`` per sample."""
        return self.bbox_head.predict(self.bbox_head(self.extract_feat(inputs)))

    def forward(self, inputs: Mapping, data_samples: Sequence[Mapping] | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.bbox_head(self.extract_feat(inputs))
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
