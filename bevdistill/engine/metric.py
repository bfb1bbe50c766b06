"""nuScenes-style BEV detection metric: mAP by centre-distance matching plus TP errors.

Why our own code rather than nuscenes-devkit: the devkit pins numpy<2 and its evaluator class
needs the nuScenes database. Its definitions (``accumulate``, ``calc_ap``, ``calc_tp``) are
re-implemented here on plain arrays, and ``tests/test_metric.py`` checks the numbers against
the devkit wherever it is installed.

Conventions (nuScenes' unless marked *ours*):

- Matching, per class and distance threshold: predictions of the class from all samples are
  ranked by score; each one in turn takes the nearest not yet matched ground truth (GT) of the
  class in the SAME sample, by BEV centre distance (x, y), if that distance is strictly below
  the threshold (a box exactly 0.5 m away is not a match at 0.5 m). Equal scores are ranked as
  the devkit ranks them: the later box (sample order, then box order) first.
- AP: precision interpolated at 101 recall points (no monotone envelope); the points at recall
  <= ``min_recall`` are dropped, ``min_precision`` is subtracted (clipped at 0) and the mean is
  normalised by ``1 - min_precision``. mAP is the mean over classes and thresholds.
- TP errors, from the matches at ``tp_threshold`` (2 m): ATE = BEV centre distance (m),
  ASE = 1 - IoU of the two boxes after aligning centres and yaw, AOE = smallest yaw difference
  (rad). Cumulative means along the ranking are interpolated on the recall grid and averaged
  from just above ``min_recall`` up to the highest recall reached; 1.0 where that range is
  empty (no match). AOE uses period 2*pi for every class, as the devkit does for all but
  ``barrier`` (period pi); ``yaw_periods`` can set another period per class.
- Invisible GTs (``visible`` False) are removed before matching, as nuScenes removes GT boxes
  with no LiDAR/radar points: they are never matched and never count as missed; a prediction on
  one is a false positive unless it matches a visible GT.
- A class without any (visible) GT gets AP 0 and TP errors 1, as in the devkit (with a warning).
- ``class_range`` (optional) drops predictions and GTs whose BEV distance from the LiDAR origin
  is not below the range, as nuScenes' class ranges do around the ego vehicle.
- ``max_boxes_per_sample``: nuScenes rejects a submission with more than 500 boxes in a sample;
  *ours*: the top-scoring boxes are kept and a warning is shown, so a young model's noisy output
  cannot abort validation in the middle of a run.
- ``nds_3err`` (*ours*): ``(5 mAP + sum over ATE, ASE, AOE of (1 - min(1, err))) / 8``, nuScenes'
  NDS without the velocity and attribute terms; not comparable with published NDS values.

Boxes are ``(x, y, z, l, w, h, yaw)``; columns past the 7th (e.g. velocities) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

from bevdistill._warnings import warn_once
from bevdistill.data.classes import CLASS_NAMES

__all__ = [
    "BEVDetectionMetric",
    "TP_ERROR_NAMES",
    "aligned_scale_iou",
    "evaluate_detections",
    "flatten_results",
    "yaw_difference",
]

TP_ERROR_NAMES = ("ATE", "ASE", "AOE")
_RECALL_GRID = np.linspace(0.0, 1.0, 101)  # nuScenes' 101 recall points, 0% to 100%


# ----------------------------------------------------------------------------- geometry


def yaw_difference(yaw_a: np.ndarray, yaw_b: np.ndarray, period: float = 2 * math.pi) -> np.ndarray:
    """Smallest absolute angle between two headings, for headings defined modulo ``period``."""
    diff = (np.asarray(yaw_a, dtype=np.float64) - yaw_b + period / 2) % period - period / 2
    return np.abs(diff)


def aligned_scale_iou(size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """3D IoU of boxes with the same centre and heading: only their sizes ``[..., 3]`` matter."""
    size_a = np.asarray(size_a, dtype=np.float64)
    size_b = np.asarray(size_b, dtype=np.float64)
    intersection = np.prod(np.minimum(size_a, size_b), axis=-1)
    union = np.prod(size_a, axis=-1) + np.prod(size_b, axis=-1) - intersection
    return intersection / union


def _centre_distance(xy_a: np.ndarray, xy_b: np.ndarray) -> np.ndarray:
    """Pairwise BEV distances ``[A, B]`` (computed as the devkit does: sqrt of the square sum)."""
    delta = xy_a[:, None, :] - xy_b[None, :, :]
    return np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])


# ----------------------------------------------------------------------------- input checks


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


def _require_keys(item: Any, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(item, Mapping):
        raise TypeError(f"{what} must be a dict with keys {keys}, got {type(item).__name__}")
    missing = [key for key in keys if key not in item]
    if missing:
        raise KeyError(f"{what} lacks key(s) {missing}; expected a dict with keys {keys}")


def _parse_prediction(
    prediction: Any, index: int, num_classes: int, max_boxes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(boxes [K,7] float64, scores [K] float64, labels [K] int64)``."""
    what = f"predictions[{index}]"
    _require_keys(prediction, ("boxes", "scores", "labels"), what)
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


def _parse_ground_truth(
    ground_truth: Any, index: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated visible ``(boxes [M,7] float64, labels [M] int64)``."""
    what = f"ground_truths[{index}]"
    _require_keys(ground_truth, ("gt_boxes", "gt_labels"), what)
    boxes = _boxes(ground_truth["gt_boxes"], f"{what}['gt_boxes']")
    labels = _labels(ground_truth["gt_labels"], f"{what}['gt_labels']", len(boxes), num_classes)
    if ground_truth.get("visible") is not None:
        visible = _vector(ground_truth["visible"], f"{what}['visible']", len(boxes))
        visible = visible.astype(bool)
        boxes, labels = boxes[visible], labels[visible]
    return boxes, labels


def _check_settings(
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


def _per_class(value: float | Mapping[str, float] | None, class_names: Sequence[str], what: str,
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


# ----------------------------------------------------------------------------- matching


def _greedy_match(distance: np.ndarray, threshold: float) -> np.ndarray:
    """Index of the GT each prediction takes (-1 for none); rows are in ranking order.

    Equivalent to visiting predictions one by one, but it jumps straight to the next
    prediction whose nearest free GT is within reach: the ones skipped are false positives,
    since nothing was taken in between. So the loop runs once per match, not per prediction.
    """
    num_pred = distance.shape[0]
    match = np.full(num_pred, -1, dtype=np.int64)
    free = distance.copy()
    start = 0
    while start < num_pred:
        within = np.flatnonzero(free[start:].min(axis=1) < threshold)
        if within.size == 0:
            break
        row = start + int(within[0])
        col = int(np.argmin(free[row]))  # the first of equally near GTs, as the devkit does
        match[row] = col
        free[:, col] = np.inf
        start = row + 1
    return match


def _recall_curve(is_tp: np.ndarray, scores: np.ndarray, num_gt: int):
    """Raw precision/recall along the ranking, and precision and score on the 101-point grid."""
    tp = np.cumsum(is_tp).astype(np.float64)
    fp = np.cumsum(~is_tp).astype(np.float64)
    precision = tp / (fp + tp)
    recall = tp / float(num_gt)
    grid_precision = np.interp(_RECALL_GRID, recall, precision, right=0.0)
    grid_score = np.interp(_RECALL_GRID, recall, scores, right=0.0)
    return recall, grid_precision, grid_score


def _average_precision(
    grid_precision: np.ndarray, min_recall: float, min_precision: float
) -> float:
    first = round(100 * min_recall) + 1  # +1: the point at min_recall itself is dropped too
    kept = np.clip(grid_precision[first:] - min_precision, 0.0, None)
    return float(np.mean(kept)) / (1.0 - min_precision)


def _tp_error(
    errors: np.ndarray,
    match_scores: np.ndarray,
    grid_score: np.ndarray,
    max_recall: float,
    min_recall: float,
) -> float:
    """nuScenes' calc_tp: mean of the interpolated cumulative mean error above min_recall."""
    first = round(100 * min_recall) + 1
    # Last grid point the ranking reaches (where the devkit's interpolated score is still > 0).
    last = int(np.searchsorted(_RECALL_GRID, max_recall, side="right")) - 1
    if last < first:
        return 1.0
    running_mean = np.cumsum(errors) / np.arange(1, len(errors) + 1)
    # Scores descend along the ranking; np.interp needs them ascending, hence the reversals.
    on_grid = np.interp(grid_score[::-1], match_scores[::-1], running_mean[::-1])[::-1]
    return float(np.mean(on_grid[first : last + 1]))


# ----------------------------------------------------------------------------- evaluation


def evaluate_detections(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    class_names: Sequence[str] = CLASS_NAMES,
    dist_thresholds: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    max_boxes_per_sample: int | None = 500,
    tp_threshold: float = 2.0,
    min_recall: float = 0.1,
    min_precision: float = 0.1,
    class_range: float | Mapping[str, float] | None = None,
    yaw_periods: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """nuScenes-style AP per class and distance threshold, mAP, TP errors and ``nds_3err``.

    ``predictions[i]`` = ``{"boxes": [K,7], "scores": [K], "labels": [K]}`` and
    ``ground_truths[i]`` = ``{"gt_boxes": [M,7], "gt_labels": [M], "visible": [M] (optional)}``
    describe sample ``i`` (torch tensors or numpy arrays). See the module docstring for the
    conventions. Returns a nested dict: ``ap[class][threshold]``, ``class_ap[class]``, ``mAP``,
    ``mAP_per_threshold[threshold]``, ``tp_errors[class][ATE|ASE|AOE]``, ``mean_tp_errors``,
    ``nds_3err``, ``num_gt``/``num_pred`` per class, and ``pr_curves[class][threshold]`` =
    ``{"recall", "precision"}`` on the 101-point grid.
    """
    class_names = tuple(class_names)
    dist_thresholds = tuple(float(t) for t in dist_thresholds)
    _check_settings(class_names, dist_thresholds, tp_threshold, min_recall, min_precision,
                    max_boxes_per_sample)
    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(ground_truths)} ground truths; "
            "pass one entry of each per sample, in the same order"
        )
    num_classes = len(class_names)
    ranges = _per_class(class_range, class_names, "class_range", math.inf)
    periods = _per_class(yaw_periods, class_names, "yaw_periods", 2 * math.pi)

    pred_parts, gt_parts = [], []
    samples = zip(predictions, ground_truths, strict=True)
    for index, (prediction, ground_truth) in enumerate(samples):
        boxes, scores, labels = _parse_prediction(
            prediction, index, num_classes, max_boxes_per_sample
        )
        pred_parts.append((boxes, scores, labels, np.full(len(boxes), index)))
        gt_boxes, gt_labels = _parse_ground_truth(ground_truth, index, num_classes)
        gt_parts.append((gt_boxes, gt_labels, np.full(len(gt_boxes), index)))
    num_samples = len(predictions)
    pred_boxes, pred_scores, pred_labels, pred_sample = _concat(pred_parts, 4)
    gt_boxes, gt_labels, gt_sample = _concat(gt_parts, 3)

    thresholds = tuple(dict.fromkeys((*dist_thresholds, float(tp_threshold))))
    tp_index = thresholds.index(float(tp_threshold))
    results: dict[str, Any] = {
        "class_names": class_names, "dist_thresholds": dist_thresholds,
        "ap": {}, "class_ap": {}, "tp_errors": {}, "num_gt": {}, "num_pred": {}, "pr_curves": {},
    }
    for label, name in enumerate(class_names):
        keep_pred = (pred_labels == label) & (_bev_range(pred_boxes) < ranges[label])
        keep_gt = (gt_labels == label) & (_bev_range(gt_boxes) < ranges[label])
        num_gt = int(keep_gt.sum())
        results["num_gt"][name] = num_gt
        results["num_pred"][name] = int(keep_pred.sum())
        if num_gt == 0:
            warn_once(
                f"metric-no-gt-{name}",
                f"class {name!r} has no visible ground truth in the evaluated samples; its AP "
                "counts as 0 and its TP errors as 1 (as in nuScenes); evaluate on more samples",
            )
        per_threshold = _evaluate_class(
            pred_boxes[keep_pred], pred_scores[keep_pred], pred_sample[keep_pred],
            gt_boxes[keep_gt], gt_sample[keep_gt], num_samples, thresholds, periods[label],
        )
        results["ap"][name], results["pr_curves"][name] = {}, {}
        for t_index, threshold in enumerate(thresholds):
            is_tp, ranked_scores, _, _ = per_threshold[t_index]
            if num_gt == 0 or not is_tp.any():
                ap, grid_precision = 0.0, np.zeros_like(_RECALL_GRID)
            else:
                _, grid_precision, _ = _recall_curve(is_tp, ranked_scores, num_gt)
                ap = _average_precision(grid_precision, min_recall, min_precision)
            if threshold in dist_thresholds:
                results["ap"][name][threshold] = ap
                results["pr_curves"][name][threshold] = {
                    "recall": _RECALL_GRID.copy(), "precision": grid_precision,
                }
        results["tp_errors"][name] = _class_tp_errors(per_threshold[tp_index], num_gt, min_recall)
        results["class_ap"][name] = float(np.mean(list(results["ap"][name].values())))

    results["mAP"] = float(np.mean(list(results["class_ap"].values())))
    results["mAP_per_threshold"] = {
        t: float(np.mean([results["ap"][name][t] for name in class_names])) for t in dist_thresholds
    }
    results["mean_tp_errors"] = {
        err: float(np.mean([results["tp_errors"][name][err] for name in class_names]))
        for err in TP_ERROR_NAMES
    }
    tp_scores = [1.0 - min(1.0, value) for value in results["mean_tp_errors"].values()]
    results["nds_3err"] = (5.0 * results["mAP"] + sum(tp_scores)) / (5.0 + len(tp_scores))
    return results


def _concat(parts: list[tuple[np.ndarray, ...]], width: int) -> list[np.ndarray]:
    if not parts:
        return [np.zeros((0, 7)), *[np.zeros(0) for _ in range(width - 1)]]
    return [np.concatenate(column) for column in zip(*parts, strict=True)]


def _bev_range(boxes: np.ndarray) -> np.ndarray:
    return np.sqrt(boxes[:, 0] * boxes[:, 0] + boxes[:, 1] * boxes[:, 1])


def _evaluate_class(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_sample: np.ndarray,
    gt_boxes: np.ndarray,
    gt_sample: np.ndarray,
    num_samples: int,
    thresholds: tuple[float, ...],
    yaw_period: float,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Match one class; per threshold ``(is_tp, scores, errors [T,3], match_scores)``.

    ``is_tp`` and ``scores`` follow the global ranking; ``errors`` holds (ATE, ASE, AOE) of each
    match in ranking order. Matching can run sample by sample because a prediction only
    competes with the predictions of its own sample, in the global order.
    """
    num_pred = len(pred_scores)
    # Descending score; ties: later box first (the devkit reverses an ascending (score, i) sort).
    order = np.lexsort((np.arange(num_pred), pred_scores))[::-1]
    rank = np.empty(num_pred, dtype=np.int64)
    rank[order] = np.arange(num_pred)
    # Samples were concatenated in order, so each sample's boxes form one contiguous block.
    pred_start = np.searchsorted(pred_sample, np.arange(num_samples + 1))
    gt_start = np.searchsorted(gt_sample, np.arange(num_samples + 1))

    matched_gt = np.full((len(thresholds), num_pred), -1, dtype=np.int64)  # in ranking order
    for sample in range(num_samples):
        g0, g1 = gt_start[sample], gt_start[sample + 1]
        p0, p1 = pred_start[sample], pred_start[sample + 1]
        if g0 == g1 or p0 == p1:
            continue
        ranked = np.sort(rank[p0:p1])  # this sample's predictions, best first
        distance = _centre_distance(pred_boxes[order[ranked], :2], gt_boxes[g0:g1, :2])
        for t_index, threshold in enumerate(thresholds):
            match = _greedy_match(distance, threshold)
            matched_gt[t_index, ranked] = np.where(match >= 0, g0 + match, -1)

    ranked_boxes, ranked_scores = pred_boxes[order], pred_scores[order]
    out = []
    for t_index in range(len(thresholds)):
        is_tp = matched_gt[t_index] >= 0
        pred_tp = ranked_boxes[is_tp]
        gt_tp = gt_boxes[matched_gt[t_index][is_tp]]
        errors = np.stack(
            [
                np.sqrt(np.sum((pred_tp[:, :2] - gt_tp[:, :2]) ** 2, axis=1)),
                1.0 - aligned_scale_iou(gt_tp[:, 3:6], pred_tp[:, 3:6]),
                yaw_difference(gt_tp[:, 6], pred_tp[:, 6], yaw_period),
            ],
            axis=1,
        )
        out.append((is_tp, ranked_scores, errors, ranked_scores[is_tp]))
    return out


def _class_tp_errors(
    matched: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], num_gt: int, min_recall: float
) -> dict[str, float]:
    is_tp, ranked_scores, errors, match_scores = matched
    if num_gt == 0 or not is_tp.any():
        return dict.fromkeys(TP_ERROR_NAMES, 1.0)
    recall, _, grid_score = _recall_curve(is_tp, ranked_scores, num_gt)
    return {
        name: _tp_error(errors[:, column], match_scores, grid_score, recall[-1], min_recall)
        for column, name in enumerate(TP_ERROR_NAMES)
    }


def flatten_results(results: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``{name: float}`` view of :func:`evaluate_detections`' output, for logs and JSON.

    Keys: ``mAP``, ``nds_3err``, ``ATE``/``ASE``/``AOE`` (class means), ``mAP@<t>``,
    ``AP_<class>``, ``AP_<class>@<t>``, ``ATE_<class>``, ``ASE_<class>``, ``AOE_<class>``.
    """
    flat = {"mAP": results["mAP"], "nds_3err": results["nds_3err"]}
    flat.update(results["mean_tp_errors"])
    for threshold, value in results["mAP_per_threshold"].items():
        flat[f"mAP@{threshold}"] = value
    for name in results["class_names"]:
        flat[f"AP_{name}"] = results["class_ap"][name]
        for threshold, value in results["ap"][name].items():
            flat[f"AP_{name}@{threshold}"] = value
        for err, value in results["tp_errors"][name].items():
            flat[f"{err}_{name}"] = value
    return {key: float(value) for key, value in flat.items()}


# ----------------------------------------------------------------------------- mmengine


@METRICS.register_module()
class BEVDetectionMetric(BaseMetric):
    """mmengine metric wrapping :func:`evaluate_detections` (keys are prefixed ``bev/``).

    ``process`` takes the model's ``predict`` outputs as ``data_samples`` and the ground truth
    from ``data_batch["data_samples"]`` (dicts with ``gt_boxes``, ``gt_labels`` and optionally
    ``visible``); it validates and stores CPU numpy copies, so a bad batch fails where it occurs.
    """

    default_prefix = "bev"

    def __init__(
        self,
        class_names: Sequence[str] = CLASS_NAMES,
        dist_thresholds: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
        max_boxes_per_sample: int | None = 500,
        tp_threshold: float = 2.0,
        min_recall: float = 0.1,
        min_precision: float = 0.1,
        class_range: float | Mapping[str, float] | None = None,
        yaw_periods: Mapping[str, float] | None = None,
        collect_device: str = "cpu",
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        class_names = tuple(class_names)
        _check_settings(class_names, dist_thresholds, tp_threshold, min_recall, min_precision,
                        max_boxes_per_sample)
        self.class_names = class_names
        self.eval_kwargs = dict(
            class_names=class_names, dist_thresholds=tuple(dist_thresholds),
            max_boxes_per_sample=max_boxes_per_sample, tp_threshold=tp_threshold,
            min_recall=min_recall, min_precision=min_precision, class_range=class_range,
            yaw_periods=yaw_periods,
        )

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Any]]) -> None:
        _require_keys(data_batch, ("data_samples",), "data_batch")
        ground_truths = data_batch["data_samples"]
        if len(ground_truths) != len(data_samples):
            raise ValueError(
                f"the batch has {len(ground_truths)} ground-truth samples but the model returned "
                f"{len(data_samples)} predictions; predict() must return one dict per sample"
            )
        num_classes = len(self.class_names)
        offset = len(self.results)
        samples = zip(data_samples, ground_truths, strict=True)
        for index, (prediction, ground_truth) in enumerate(samples):
            # Parse now, so that a bad batch fails where it occurs. All predictions are kept:
            # evaluate_detections applies the box limit once, with its warning.
            boxes, scores, labels = _parse_prediction(prediction, offset + index, num_classes, None)
            gt_boxes, gt_labels = _parse_ground_truth(ground_truth, offset + index, num_classes)
            self.results.append({
                "pred": {"boxes": boxes, "scores": scores, "labels": labels},
                "gt": {"gt_boxes": gt_boxes, "gt_labels": gt_labels},  # visible boxes only
            })

    def compute_metrics(self, results: list) -> dict[str, float]:
        predictions = [result["pred"] for result in results]
        ground_truths = [result["gt"] for result in results]
        return flatten_results(evaluate_detections(predictions, ground_truths, **self.eval_kwargs))
