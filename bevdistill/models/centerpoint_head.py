"""A CenterPoint-style dense head: class heatmaps plus box regression at object centres.

``heatmap_head`` outputs the class logits ``[B, num_classes, H, W]`` (the map that response
distillation reads); ``reg_head`` (centre offset in cells, 2), ``height_head`` (z of the
centre, 1), ``dim_head`` (log l, w, h, 3) and ``rot_head`` (sin, cos of yaw, 2) regress boxes.
With ``dir_classifier=True`` a ``dir_head`` (2 logits) also classifies each object's direction
bin, as SECOND and PointPillars do; decoding then takes the heading's direction from it (see
:mod:`bevdistill.models.box_ops`). Off by default, so models saved without it load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill.models._layers import conv_bn_relu
from bevdistill.models.box_ops import (
    REG_LAYOUT,
    aabb_nms,
    circle_nms,
    decode_single,
    direction_bin,
    encode_targets,
    gaussian_focal_loss,
)
from bevdistill.models.geometry import BEVGrid

HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~ 0.1: CenterPoint's prior for a rare foreground
NMS_TYPES = (None, "circle", "aabb")
DEFAULT_TRAIN_CFG = dict(gaussian_overlap=0.1, min_radius=2, code_weights=(1.0,) * 8)
DEFAULT_TEST_CFG = dict(
    max_num=100, score_threshold=0.1, peak_kernel=3,
    nms_type=None, nms_radius=1.0, nms_iou_threshold=0.2, post_max_size=83,
)


def _branch(cin: int, head_channels: int, num_convs: int, cout: int) -> nn.Sequential:
    layers = [conv_bn_relu(cin if i == 0 else head_channels, head_channels) for i in range(num_convs)]
    layers.append(nn.Conv2d(head_channels if num_convs else cin, cout, 3, padding=1))
    return nn.Sequential(*layers)


def _merge(defaults: dict, given: Mapping | None, what: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise KeyError(f"unknown {what} keys {unknown}; valid keys are {sorted(defaults)}")
    return {**defaults, **given}


@MODELS.register_module()
class CenterPointHead(nn.Module):
    """Shared conv, then one branch per output; ``loss`` and ``predict`` take the head's outputs.

    The geometry (``voxel_size``, ``point_cloud_range``, ``out_size_factor``) is filled in by
    :class:`PillarBEVDetector` from its own grid and its backbone/neck strides.
    """

    def __init__(
        self,
        in_channels: int,
        voxel_size: Sequence[float],
        point_cloud_range: Sequence[float],
        out_size_factor: int,
        num_classes: int = 3,
        shared_channels: int = 64,
        head_channels: int = 64,
        num_head_convs: int = 1,
        loss_heatmap_weight: float = 1.0,
        loss_bbox_weight: float = 0.25,
        train_cfg: Mapping | None = None,
        test_cfg: Mapping | None = None,
        dir_classifier: bool = False,
        dir_offset: float = math.pi / 4,
        loss_dir_weight: float = 0.2,
    ):
        super().__init__()
        self.grid = BEVGrid.from_config(point_cloud_range, voxel_size)
        self.out_size_factor = int(out_size_factor)
        self.feature_shape = self.grid.feature_shape(self.out_size_factor)
        self.num_classes = int(num_classes)
        self.train_cfg = _merge(DEFAULT_TRAIN_CFG, train_cfg, "bbox_head.train_cfg")
        self.test_cfg = _merge(DEFAULT_TEST_CFG, test_cfg, "bbox_head.test_cfg")
        if len(self.train_cfg["code_weights"]) != 8:
            raise ValueError("train_cfg.code_weights needs 8 weights: dx, dy, z, log l, w, h, sin, cos")
        if self.test_cfg["nms_type"] not in NMS_TYPES:
            raise ValueError(f"test_cfg.nms_type must be one of {NMS_TYPES}, got {self.test_cfg['nms_type']!r}")
        self.loss_heatmap_weight = float(loss_heatmap_weight)
        self.loss_bbox_weight = float(loss_bbox_weight)

        self.shared_conv = conv_bn_relu(int(in_channels), shared_channels)
        self.heatmap_head = _branch(shared_channels, head_channels, num_head_convs, self.num_classes)
        nn.init.constant_(self.heatmap_head[-1].bias, HEATMAP_PRIOR_BIAS)
        for name, channels in REG_LAYOUT:
            setattr(self, f"{name}_head", _branch(shared_channels, head_channels, num_head_convs, channels))
        # The direction bin's boundary sits at dir_offset and dir_offset + pi: pi/4 keeps it
        # away from the world's usual headings (along and across its streets).
        self.dir_classifier = bool(dir_classifier)
        self.dir_offset = float(dir_offset)
        self.loss_dir_weight = float(loss_dir_weight)
        if self.dir_classifier:
            self.dir_head = _branch(shared_channels, head_channels, num_head_convs, 2)
        self.register_buffer(
            "code_weights", torch.tensor(self.train_cfg["code_weights"], dtype=torch.float32), persistent=False
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{'heatmap': [B, K, H, W] logits, 'reg', 'height', 'dim', 'rot'}``, and ``'dir'``
        ``[B, 2, H, W]`` (direction-bin logits) with the direction classifier."""
        shared = self.shared_conv(x)
        out = {"heatmap": self.heatmap_head(shared)}
        for name, _ in REG_LAYOUT:
            out[name] = getattr(self, f"{name}_head")(shared)
        if self.dir_classifier:
            out["dir"] = self.dir_head(shared)
        return out

    # ------------------------------------------------------------------ training
    def _training_boxes(self, sample: Mapping, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible boxes and labels of one data sample, validated."""
        if not isinstance(sample, Mapping) or "gt_boxes" not in sample or "gt_labels" not in sample:
            raise KeyError(
                f"data_samples[{i}] must be a dict with 'gt_boxes' [M, 7] and 'gt_labels' [M] "
                "(see bevdistill.data's sample layout)"
            )
        boxes, labels = sample["gt_boxes"], sample["gt_labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 7 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"data_samples[{i}]: gt_boxes must be [M, 7] and gt_labels [M], got "
                f"{tuple(boxes.shape)} and {tuple(labels.shape)}"
            )
        if "visible" in sample:
            boxes, labels = boxes[sample["visible"]], labels[sample["visible"]]
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"data_samples[{i}]: gt_labels must lie in [0, {self.num_classes}), got "
                f"{sorted(set(labels.tolist()))}; drop ignored objects before the model"
            )
        if boxes.numel() and bool((boxes[:, 3:6] <= 0).any()):
            raise ValueError(f"data_samples[{i}]: box sizes l, w, h must be positive")
        return boxes, labels

    def get_targets(self, data_samples: Sequence[Mapping], device: torch.device):
        cfg = self.train_cfg
        return [
            encode_targets(
                *(t.to(device) for t in self._training_boxes(s, i)), self.grid, self.out_size_factor,
                self.num_classes, cfg["gaussian_overlap"], cfg["min_radius"],
            )
            for i, s in enumerate(data_samples)
        ]

    def loss(self, preds: Mapping[str, torch.Tensor], data_samples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """Focal loss on heatmaps (per peak) and weighted L1 on box codes (per object), as
        CenterPoint; with the direction classifier also ``loss_dir``, cross-entropy of the
        direction bin per object, as SECOND."""
        heatmap = preds["heatmap"]
        if data_samples is None or len(data_samples) != heatmap.shape[0]:
            raise ValueError(
                f"loss needs one data sample per input ({heatmap.shape[0]}), got "
                f"{None if data_samples is None else len(data_samples)}"
            )
        labelled = [not isinstance(s, Mapping) or bool(s.get("labelled", True)) for s in data_samples]
        if not all(labelled):  # unlabelled scenes (distillation only) add no detection loss
            if not any(labelled):
                zero = sum(p.sum() for p in preds.values()) * 0.0  # keeps the graph connected
                losses = {"loss_heatmap": zero, "loss_bbox": zero}
                return {**losses, "loss_dir": zero} if self.dir_classifier else losses
            keep = torch.tensor([i for i, x in enumerate(labelled) if x], device=heatmap.device)
            preds = {k: v.index_select(0, keep) for k, v in preds.items()}
            heatmap = preds["heatmap"]
            data_samples = [s for s, x in zip(data_samples, labelled, strict=True) if x]
        targets = self.get_targets(data_samples, heatmap.device)
        focal, num_peaks = gaussian_focal_loss(heatmap, torch.stack([t.heatmap for t in targets]))
        loss_heatmap = focal / num_peaks.clamp_min(1.0)

        codes = torch.cat([preds[name] for name, _ in REG_LAYOUT], dim=1).flatten(2).float()
        batch = torch.cat([torch.full_like(t.inds, b) for b, t in enumerate(targets)])
        inds = torch.cat([t.inds for t in targets])
        pred_codes = codes[batch, :, inds]  # [num_objects, 8]
        target_codes = torch.cat([t.codes for t in targets])
        l1 = ((pred_codes - target_codes).abs() * self.code_weights).sum()
        loss_bbox = l1 / (inds.numel() + 1e-4)
        losses = {
            "loss_heatmap": self.loss_heatmap_weight * loss_heatmap,
            "loss_bbox": self.loss_bbox_weight * loss_bbox,
        }
        if self.dir_classifier:
            logits = preds["dir"].flatten(2).float()[batch, :, inds]  # [num_objects, 2]
            yaw = torch.atan2(target_codes[:, 6], target_codes[:, 7])
            ce = F.cross_entropy(logits, direction_bin(yaw, self.dir_offset), reduction="sum")
            losses["loss_dir"] = self.loss_dir_weight * ce / (inds.numel() + 1e-4)
        return losses

    # ------------------------------------------------------------------ inference
    def _nms(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.test_cfg
        keep = []
        for k in range(self.num_classes):
            idx = torch.nonzero(labels == k).flatten()
            if cfg["nms_type"] == "circle":
                radius = cfg["nms_radius"]
                radius = radius[k] if isinstance(radius, Sequence) else radius
                keep.append(idx[circle_nms(boxes[idx, :2], scores[idx], float(radius))])
            else:
                keep.append(idx[aabb_nms(boxes[idx], scores[idx], cfg["nms_iou_threshold"])])
        keep = torch.cat(keep)
        return keep[torch.argsort(scores[keep], descending=True, stable=True)]

    def predict(self, preds: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """One ``{'boxes' [K, 7], 'scores' [K], 'labels' [K]}`` per sample, best first."""
        cfg = self.test_cfg
        results = []
        for b in range(preds["heatmap"].shape[0]):
            reg = {name: preds[name][b] for name, _ in REG_LAYOUT}
            boxes, scores, labels = decode_single(
                preds["heatmap"][b], reg, self.grid, self.out_size_factor,
                cfg["max_num"], cfg["score_threshold"], cfg["peak_kernel"],
                dir_logits=preds["dir"][b] if self.dir_classifier else None,
                dir_offset=self.dir_offset,
            )
            if cfg["nms_type"] is not None:
                keep = self._nms(boxes, scores, labels)
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            n = cfg["post_max_size"]
            results.append({"boxes": boxes[:n], "scores": scores[:n], "labels": labels[:n]})
        return results
