"""Validation of what the detection metric is given: boxes, scores, labels and settings.

Every check raises where the bad value enters, with an error that names the sample and key and
says how to fix it, so a broken model output fails at its batch rather than deep in matching.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bevdistill._warnings import warn_once


def _to_numpy(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; duck-typed so numpy callers need no torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{what} must be a numeric tensor or array, got dtype {array.dtype}; "
            "pass a torch.Tensor or numpy array of numbers"
        )
    return array


def _boxes(value: Any, what: str) -> np.ndarray:
    boxes = _to_numpy(value, what).astype(np.float64)
    if boxes.size == 0:
        return np.zeros((0, 7))
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(
            f"{what} must have shape [K, 7] = (x, y, z, l, w, h, yaw), got {tuple(boxes.shape)}"
        )
    boxes = boxes[:, :7]
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what} holds NaN or inf; check the box decoding of the model")
    if (boxes[:, 3:6] <= 0).any():
        raise ValueError(
            f"{what} has a non-positive size (l, w, h); decode sizes with exp() or clamp them "
            "to a small positive value"
        )
    return boxes


def _vector(value: Any, what: str, length: int) -> np.ndarray:
    vector = _to_numpy(value, what)
    if vector.size == 0 and length == 0:
        return vector.reshape(0)
    if vector.shape != (length,):
        raise ValueError(f"{what} must have shape [{length}] (one per box), got {vector.shape}")
    return vector


def _labels(value: Any, what: str, length: int, num_classes: int) -> np.ndarray:
    labels = _vector(value, what, length)
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{what} must hold integer class indices, got fractional values")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{what} must lie in [0, {num_classes}) (one per class name), got values "
            f"{labels.min()}..{labels.max()}; pass class_names matching the model's classes"
        )
    return labels


def require_keys(item: Any, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(item, Mapping):
        raise TypeError(f"{what} must be a dict with keys {keys}, got {type(item).__name__}")
    missing = [key for key in keys if key not in item]
    if missing:
        raise KeyError(f"{what} lacks key(s) {missing}; expected a dict with keys {keys}")


def parse_prediction(
    prediction: Any, index: int, num_classes: int, max_boxes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(boxes [K,7] float64, scores [K] float64, labels [K] int64)``."""
    what = f"predictions[{index}]"
    require_keys(prediction, ("boxes", "scores", "labels"), what)
    boxes = _boxes(prediction["boxes"], f"{what}['boxes']")
    scores = _vector(prediction["scores"], f"{what}['scores']", len(boxes)).astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{what}['scores'] holds NaN or inf; scores must be finite")
    labels = _labels(prediction["labels"], f"{what}['labels']", len(boxes), num_classes)
    if max_boxes is not None and len(boxes) > max_boxes:
        warn_once(
            "metric-max-boxes",
            f"a sample has {len(boxes)} predictions, more than max_boxes_per_sample="
            f"{max_boxes} (nuScenes' limit is 500); only the top-scoring ones are evaluated",
        )
        keep = np.sort(np.argsort(-scores, kind="stable")[:max_boxes])
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return boxes, scores, labels


def parse_ground_truth(
    ground_truth: Any, index: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated visible ``(boxes [M,7] float64, labels [M] int64)``."""
    what = f"ground_truths[{index}]"
    require_keys(ground_truth, ("gt_boxes", "gt_labels"), what)
    boxes = _boxes(ground_truth["gt_boxes"], f"{what}['gt_boxes']")
    labels = _labels(ground_truth["gt_labels"], f"{what}['gt_labels']", len(boxes), num_classes)
    if ground_truth.get("visible") is not None:
        visible = _vector(ground_truth["visible"], f"{what}['visible']", len(boxes))
        visible = visible.astype(bool)
        boxes, labels = boxes[visible], labels[visible]
    return boxes, labels


def check_settings(
    class_names: Sequence[str],
    dist_thresholds: Sequence[float],
    tp_threshold: float,
    min_recall: float,
    min_precision: float,
    max_boxes_per_sample: int | None,
) -> None:
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty sequence of names, got {class_names!r}")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be unique, got {class_names!r}")
    thresholds = [*dist_thresholds, tp_threshold]
    if len(dist_thresholds) == 0 or not all(math.isfinite(t) and t > 0 for t in thresholds):
        raise ValueError(
            "dist_thresholds and tp_threshold must be positive distances in metres, got "
            f"{tuple(dist_thresholds)} and {tp_threshold}"
        )
    if not 0.0 <= min_recall < 1.0 or not 0.0 <= min_precision < 1.0:
        raise ValueError(
            f"min_recall and min_precision must lie in [0, 1), got {min_recall}, {min_precision}"
        )
    if max_boxes_per_sample is not None and max_boxes_per_sample < 1:
        raise ValueError(f"max_boxes_per_sample must be >= 1 or None, got {max_boxes_per_sample}")


def per_class(value: float | Mapping[str, float] | None, class_names: Sequence[str], what: str,
               default: float) -> np.ndarray:
    """One number per class from a scalar, a {name: value} mapping or None (``default``)."""
    if value is None:
        return np.full(len(class_names), default)
    if isinstance(value, Mapping):
        missing = [name for name in class_names if name not in value]
        if missing:
            raise KeyError(f"{what} lacks class(es) {missing}; give a value for every class")
        return np.array([float(value[name]) for name in class_names])
    return np.full(len(class_names), float(value))
