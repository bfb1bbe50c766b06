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

This module holds the entry points; the matching and curve arithmetic is in
:mod:`bevdistill.engine.matching` and the input validation in :mod:`bevdistill.engine.metric_inputs`.
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

from .matching import (
    RECALL_GRID,
    TP_ERROR_NAMES,
    aligned_scale_iou,
    average_precision,
    class_tp_errors,
    evaluate_class,
    recall_curve,
    yaw_difference,
)
from .metric_inputs import (
    check_settings,
    parse_ground_truth,
    parse_prediction,
    per_class,
    require_keys,
)

__all__ = [
    "BEVDetectionMetric",
    "TP_ERROR_NAMES",
    "aligned_scale_iou",
    "evaluate_detections",
    "flatten_results",
    "yaw_difference",
]


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
    check_settings(class_names, dist_thresholds, tp_threshold, min_recall, min_precision,
                    max_boxes_per_sample)
    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(ground_truths)} ground truths; "
            "pass one entry of each per sample, in the same order"
        )
    num_classes = len(class_names)
    ranges = per_class(class_range, class_names, "class_range", math.inf)
    periods = per_class(yaw_periods, class_names, "yaw_periods", 2 * math.pi)

    pred_parts, gt_parts = [], []
    samples = zip(predictions, ground_truths, strict=True)
    for index, (prediction, ground_truth) in enumerate(samples):
        boxes, scores, labels = parse_prediction(
            prediction, index, num_classes, max_boxes_per_sample
        )
        pred_parts.append((boxes, scores, labels, np.full(len(boxes), index)))
        gt_boxes, gt_labels = parse_ground_truth(ground_truth, index, num_classes)
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
        per_threshold = evaluate_class(
            pred_boxes[keep_pred], pred_scores[keep_pred], pred_sample[keep_pred],
            gt_boxes[keep_gt], gt_sample[keep_gt], num_samples, thresholds, periods[label],
        )
        results["ap"][name], results["pr_curves"][name] = {}, {}
        for t_index, threshold in enumerate(thresholds):
            is_tp, ranked_scores, _, _ = per_threshold[t_index]
            if num_gt == 0 or not is_tp.any():
                ap, grid_precision = 0.0, np.zeros_like(RECALL_GRID)
            else:
                _, grid_precision, _ = recall_curve(is_tp, ranked_scores, num_gt)
                ap = average_precision(grid_precision, min_recall, min_precision)
            if threshold in dist_thresholds:
                results["ap"][name][threshold] = ap
                results["pr_curves"][name][threshold] = {
                    "recall": RECALL_GRID.copy(), "precision": grid_precision,
                }
        results["tp_errors"][name] = class_tp_errors(per_threshold[tp_index], num_gt, min_recall)
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
        check_settings(class_names, dist_thresholds, tp_threshold, min_recall, min_precision,
                        max_boxes_per_sample)
        self.class_names = class_names
        self.eval_kwargs = dict(
            class_names=class_names, dist_thresholds=tuple(dist_thresholds),
            max_boxes_per_sample=max_boxes_per_sample, tp_threshold=tp_threshold,
            min_recall=min_recall, min_precision=min_precision, class_range=class_range,
            yaw_periods=yaw_periods,
        )

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Any]]) -> None:
        require_keys(data_batch, ("data_samples",), "data_batch")
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
            boxes, scores, labels = parse_prediction(prediction, offset + index, num_classes, None)
            gt_boxes, gt_labels = parse_ground_truth(ground_truth, offset + index, num_classes)
            self.results.append({
                "pred": {"boxes": boxes, "scores": scores, "labels": labels},
                "gt": {"gt_boxes": gt_boxes, "gt_labels": gt_labels},  # visible boxes only
            })

    def compute_metrics(self, results: list) -> dict[str, float]:
        predictions = [result["pred"] for result in results]
        ground_truths = [result["gt"] for result in results]
        return flatten_results(evaluate_detections(predictions, ground_truths, **self.eval_kwargs))
