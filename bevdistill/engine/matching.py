"""nuScenes' matching and curve arithmetic on plain arrays, for :mod:`bevdistill.engine.metric`.

Greedy centre-distance matching per class, the 101-point precision curve, AP and the TP errors
(ATE, ASE, AOE); the conventions are listed in :mod:`bevdistill.engine.metric`'s docstring.
"""

from __future__ import annotations

import math

import numpy as np

TP_ERROR_NAMES = ("ATE", "ASE", "AOE")
RECALL_GRID = np.linspace(0.0, 1.0, 101)  # nuScenes' 101 recall points, 0% to 100%


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


def recall_curve(is_tp: np.ndarray, scores: np.ndarray, num_gt: int):
    """Raw precision/recall along the ranking, and precision and score on the 101-point grid."""
    tp = np.cumsum(is_tp).astype(np.float64)
    fp = np.cumsum(~is_tp).astype(np.float64)
    precision = tp / (fp + tp)
    recall = tp / float(num_gt)
    grid_precision = np.interp(RECALL_GRID, recall, precision, right=0.0)
    grid_score = np.interp(RECALL_GRID, recall, scores, right=0.0)
    return recall, grid_precision, grid_score


def average_precision(
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
    last = int(np.searchsorted(RECALL_GRID, max_recall, side="right")) - 1
    if last < first:
        return 1.0
    running_mean = np.cumsum(errors) / np.arange(1, len(errors) + 1)
    # Scores descend along the ranking; np.interp needs them ascending, hence the reversals.
    on_grid = np.interp(grid_score[::-1], match_scores[::-1], running_mean[::-1])[::-1]
    return float(np.mean(on_grid[first : last + 1]))


def evaluate_class(
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


def class_tp_errors(
    matched: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], num_gt: int, min_recall: float
) -> dict[str, float]:
    is_tp, ranked_scores, errors, match_scores = matched
    if num_gt == 0 or not is_tp.any():
        return dict.fromkeys(TP_ERROR_NAMES, 1.0)
    recall, _, grid_score = recall_curve(is_tp, ranked_scores, num_gt)
    return {
        name: _tp_error(errors[:, column], match_scores, grid_score, recall[-1], min_recall)
        for column, name in enumerate(TP_ERROR_NAMES)
    }
