"""Tests of the nuScenes-style detection metric (bevdistill.engine.metric).

Hand-computed cases first (each docstring shows the arithmetic), then a plain-loop reference
on random sets, then nuscenes-devkit's own accumulate/calc_ap/calc_tp where it is installed.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch
from warnings_support import reset_warnings

from bevdistill._warnings import DegenerateInputWarning
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.metric import (
    BEVDetectionMetric,
    aligned_scale_iou,
    evaluate_detections,
    flatten_results,
    yaw_difference,
)

CAR, PED, CYC = 0, 1, 2
THRESHOLDS = (0.5, 1.0, 2.0, 4.0)


def box(x: float, y: float, l: float = 4.0, w: float = 2.0, h: float = 1.5,  # noqa: E741
        yaw: float = 0.0) -> list[float]:
    return [x, y, -1.0, l, w, h, yaw]


def as_boxes(boxes) -> np.ndarray:
    array = np.array(boxes, dtype=np.float64)
    return array.reshape(0, 7) if array.size == 0 else array


def pred(boxes=(), scores=(), labels=()) -> dict:
    return {
        "boxes": as_boxes(boxes),
        "scores": np.array(scores, dtype=np.float64),
        "labels": np.array(labels, dtype=np.int64),
    }


def gt(boxes=(), labels=(), visible=None) -> dict:
    out = {
        "gt_boxes": as_boxes(boxes),
        "gt_labels": np.array(labels, dtype=np.int64),
    }
    if visible is not None:
        out["visible"] = np.array(visible, dtype=bool)
    return out


@pytest.fixture(autouse=True)
def _fresh_warnings():
    reset_warnings()
    yield
    reset_warnings()


def evaluate(predictions, ground_truths, **kwargs):
    """Evaluate, silencing the expected 'class without GT' warning of the small hand cases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        return evaluate_detections(predictions, ground_truths, **kwargs)


def perfect_scene():
    gts = [
        gt([box(10, 0), box(0, 5, 0.8, 0.6, 1.7, 1.0), box(-8, -3, 1.8, 0.6, 1.6, -2.0)],
           [CAR, PED, CYC]),
        gt([box(20, 3, yaw=3.0), box(5, -5, 0.7, 0.7, 1.8)], [CAR, PED]),
        gt([box(-15, 10, 1.7, 0.5, 1.5, 0.3)], [CYC]),
    ]
    preds = [
        pred(g["gt_boxes"], np.linspace(0.9, 0.5, len(g["gt_labels"])), g["gt_labels"])
        for g in gts
    ]
    return preds, gts


# ----------------------------------------------------------------------------- hand cases


def test_class_names_come_from_the_data_contract():
    assert CLASS_NAMES == ("car", "pedestrian", "cyclist")
    result = evaluate(*perfect_scene())
    assert result["class_names"] == CLASS_NAMES


def test_perfect_predictions_give_ap_one_and_zero_errors():
    result = evaluate(*perfect_scene())
    for name in CLASS_NAMES:
        assert result["ap"][name] == {t: pytest.approx(1.0) for t in THRESHOLDS}
        assert result["class_ap"][name] == pytest.approx(1.0)
        assert result["tp_errors"][name] == pytest.approx({"ATE": 0.0, "ASE": 0.0, "AOE": 0.0})
    assert result["mAP"] == pytest.approx(1.0)
    assert result["nds_3err"] == pytest.approx(1.0)
    assert result["num_gt"] == {"car": 2, "pedestrian": 2, "cyclist": 2}


def test_no_predictions_give_ap_zero_and_unit_errors():
    _, gts = perfect_scene()
    result = evaluate([pred() for _ in gts], gts)
    assert result["mAP"] == 0.0
    assert all(result["ap"][name][t] == 0.0 for name in CLASS_NAMES for t in THRESHOLDS)
    assert result["mean_tp_errors"] == {"ATE": 1.0, "ASE": 1.0, "AOE": 1.0}
    assert result["nds_3err"] == 0.0


def test_false_positive_ranked_above_true_positive():
    """One GT; a FP (score 0.9) ranked above the TP (0.8).

    precision = [0, 1/2] at recall [0, 1], so p(r) = r/2 on the 101-point grid. nuScenes keeps
    r = 0.11 .. 1.00 (90 points) and clips p - 0.1 at 0: non-zero for r = 0.20 .. 1.00 (81
    points), sum = 0.5 * 48.6 - 8.1 = 16.2; AP = 16.2 / 90 / 0.9 = 0.2.
    """
    preds = [pred([box(30, 30), box(10.1, 0)], [0.9, 0.8], [CAR, CAR])]
    gts = [gt([box(10, 0)], [CAR])]
    result = evaluate(preds, gts)
    assert result["ap"]["car"] == {t: pytest.approx(0.2, abs=1e-12) for t in THRESHOLDS}
    # TP first, FP after: precision 1, then 1/2 at the same recall 1. nuScenes interpolates
    # the raw curve, so the grid point r = 1.00 takes the last value, 1/2 (a devkit quirk that
    # we keep): AP = (89 * 0.9 + 0.4) / 90 / 0.9. Without the FP, AP is 1.
    swapped = [pred([box(30, 30), box(10.1, 0)], [0.8, 0.9], [CAR, CAR])]
    expected = (89 * 0.9 + 0.4) / 90 / 0.9
    assert evaluate(swapped, gts)["ap"]["car"][0.5] == pytest.approx(expected, abs=1e-12)
    alone = [pred([box(10.1, 0)], [0.9], [CAR])]
    assert evaluate(alone, gts)["ap"]["car"][0.5] == pytest.approx(1.0, abs=1e-12)


def test_half_recall_gives_four_ninths():
    """Two GTs, one found: p = 1 up to r = 0.5, then 0; 40 of the 90 kept points at 0.9."""
    preds = [pred([box(0, 10)], [0.7], [PED])]
    gts = [gt([box(0, 10), box(0, -10)], [PED, PED])]
    assert evaluate(preds, gts)["ap"]["pedestrian"][1.0] == pytest.approx(4 / 9, abs=1e-12)


def test_translation_error_is_the_interpolated_cumulative_mean():
    """Matches with errors 0.2 (score 0.9) then 0.4 (0.8): cumulative means 0.2, 0.3.

    On the recall grid the error is 0.2 up to r = 0.5, then 0.2 + 0.2 (r - 0.5) up to r = 1.
    Mean over r = 0.11 .. 1.00: (90 * 0.2 + 0.2 * 12.75) / 90 = 0.2 + 2.55 / 90.
    """
    preds = [pred([box(10.2, 0), box(-10, 0.4)], [0.9, 0.8], [CAR, CAR])]
    gts = [gt([box(10, 0), box(-10, 0)], [CAR, CAR])]
    result = evaluate(preds, gts)
    assert result["tp_errors"]["car"]["ATE"] == pytest.approx(0.2 + 2.55 / 90, abs=1e-12)
    assert result["tp_errors"]["car"]["ASE"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("offset", "matched_at_half_metre"),
    [(0.49, True), (0.4999, True), (0.5, False), (0.51, False)],
)
def test_distance_threshold_boundary(offset, matched_at_half_metre):
    """A match needs a distance strictly below the threshold (nuScenes uses `<`)."""
    preds = [pred([box(offset, 20)], [0.6], [CAR])]
    gts = [gt([box(0, 20)], [CAR])]
    result = evaluate(preds, gts)
    assert result["ap"]["car"][0.5] == pytest.approx(1.0 if matched_at_half_metre else 0.0)
    assert result["ap"]["car"][1.0] == pytest.approx(1.0)


def test_prediction_of_another_class_is_a_false_positive():
    """A car prediction on a pedestrian GT: a FP for cars (ranked above the true car) and a
    miss for pedestrians."""
    preds = [pred([box(5, 5, 0.7, 0.7, 1.8), box(20, 0)], [0.9, 0.8], [CAR, CAR])]
    gts = [gt([box(5, 5, 0.7, 0.7, 1.8), box(20, 0)], [PED, CAR])]
    result = evaluate(preds, gts)
    assert result["ap"]["pedestrian"] == dict.fromkeys(THRESHOLDS, 0.0)
    assert result["ap"]["car"] == {t: pytest.approx(0.2, abs=1e-12) for t in THRESHOLDS}


def test_matching_does_not_cross_samples():
    preds = [pred(), pred([box(10, 0)], [0.9], [CAR])]
    gts = [gt([box(10, 0)], [CAR]), gt()]
    assert evaluate(preds, gts)["ap"]["car"] == dict.fromkeys(THRESHOLDS, 0.0)
    # The same boxes in the same sample do match.
    assert evaluate([preds[1]], [gts[0]])["ap"]["car"][0.5] == pytest.approx(1.0)


def test_invisible_ground_truths_are_neither_matched_nor_missed():
    gts = [gt([box(0, 10), box(30, 0)], [CAR, CAR], visible=[True, False])]
    found = [pred([box(0, 10)], [0.5], [CAR])]
    result = evaluate(found, gts)
    assert result["num_gt"]["car"] == 1
    assert result["ap"]["car"][0.5] == pytest.approx(1.0)  # the invisible one is not a miss
    # A prediction on the invisible box is a FP (nuScenes drops such GTs before matching);
    # ranked above the TP it gives the FP-first AP of 0.2.
    on_invisible = [pred([box(30, 0), box(0, 10)], [0.9, 0.5], [CAR, CAR])]
    assert evaluate(on_invisible, gts)["ap"]["car"][0.5] == pytest.approx(0.2, abs=1e-12)


def test_scale_error_of_a_box_with_doubled_length_is_one_half():
    preds = [pred([box(0, 10, l=8.0)], [0.5], [CAR])]
    gts = [gt([box(0, 10, l=4.0)], [CAR])]
    assert evaluate(preds, gts)["tp_errors"]["car"]["ASE"] == pytest.approx(0.5, abs=1e-12)
    assert aligned_scale_iou([4.0, 2.0, 1.5], [8.0, 2.0, 1.5]) == pytest.approx(0.5)
    assert aligned_scale_iou([4.0, 2.0, 1.5], [2.0, 4.0, 1.5]) == pytest.approx(1 / 3)


def test_orientation_error_of_a_quarter_turn_is_half_pi():
    preds = [pred([box(0, 10, yaw=math.pi / 2)], [0.5], [CYC])]
    gts = [gt([box(0, 10, yaw=0.0)], [CYC])]
    aoe = evaluate(preds, gts)["tp_errors"]["cyclist"]["AOE"]
    assert aoe == pytest.approx(math.pi / 2, abs=1e-12)


def test_orientation_error_wraps_around():
    preds = [pred([box(0, 10, yaw=2 * math.pi - 0.1)], [0.5], [CAR])]
    gts = [gt([box(0, 10, yaw=0.1)], [CAR])]
    assert evaluate(preds, gts)["tp_errors"]["car"]["AOE"] == pytest.approx(0.2, abs=1e-12)
    assert yaw_difference(3.0, -3.0) == pytest.approx(2 * math.pi - 6.0)
    assert yaw_difference(0.0, math.pi) == pytest.approx(math.pi)  # a reversed car: worst
    # A heading known only up to pi (nuScenes' barrier) can be set per class.
    assert yaw_difference(0.0, math.pi, period=math.pi) == pytest.approx(0.0)
    periods = {"car": math.pi, "pedestrian": 2 * math.pi, "cyclist": 2 * math.pi}
    reversed_car = [pred([box(0, 10, yaw=math.pi)], [0.5], [CAR])]
    result = evaluate(reversed_car, gts, yaw_periods=periods)
    assert result["tp_errors"]["car"]["AOE"] == pytest.approx(0.1, abs=1e-12)


def test_higher_score_takes_the_ground_truth_first():
    """Greedy in score order: the 0.9 box 0.3 m away takes the GT, not the nearer 0.8 box."""
    preds = [pred([box(10.1, 0), box(10.3, 0)], [0.8, 0.9], [CAR, CAR])]
    gts = [gt([box(10, 0)], [CAR])]
    assert evaluate(preds, gts)["tp_errors"]["car"]["ATE"] == pytest.approx(0.3, abs=1e-12)


def test_prediction_takes_the_nearest_free_ground_truth():
    """A box between two GTs matches the nearer (0.4 m), not the first listed (0.6 m)."""
    preds = [pred([box(0.6, 10)], [0.9], [CAR])]
    gts = [gt([box(0, 10), box(1.0, 10)], [CAR, CAR])]
    assert evaluate(preds, gts)["tp_errors"]["car"]["ATE"] == pytest.approx(0.4, abs=1e-12)


def test_torch_and_numpy_inputs_agree():
    preds, gts = random_scene(np.random.default_rng(3), num_samples=8)
    as_torch = lambda d: {k: torch.from_numpy(np.asarray(v)) for k, v in d.items()}  # noqa: E731
    expected = flatten_results(evaluate(preds, gts))
    got = flatten_results(evaluate([as_torch(p) for p in preds], [as_torch(g) for g in gts]))
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected["mAP"] < 1.0


@pytest.mark.filterwarnings("ignore:class .* has no visible ground truth")
def test_box_limit_keeps_the_top_scoring_predictions():
    preds = [pred([box(0, 10), box(30, 30), box(-30, 30)], [0.5, 0.9, 0.8], [CAR] * 3)]
    gts = [gt([box(0, 10)], [CAR])]
    with pytest.warns(DegenerateInputWarning, match="max_boxes_per_sample=2"):
        result = evaluate_detections(preds, gts, max_boxes_per_sample=2)
    assert result["num_pred"]["car"] == 2
    assert result["ap"]["car"][0.5] == 0.0  # the only TP (score 0.5) was dropped
    assert evaluate(preds, gts, max_boxes_per_sample=None)["num_pred"]["car"] == 3


def test_class_range_drops_far_boxes_on_both_sides():
    preds = [pred([box(60, 0), box(10, 0)], [0.9, 0.8], [CAR, CAR])]
    gts = [gt([box(10, 0)], [CAR])]
    assert evaluate(preds, gts)["ap"]["car"][0.5] == pytest.approx(0.2, abs=1e-12)
    ranged = evaluate(preds, gts, class_range={"car": 50, "pedestrian": 40, "cyclist": 40})
    assert ranged["ap"]["car"][0.5] == pytest.approx(1.0)
    assert ranged["num_pred"]["car"] == 1
    far_pedestrian = evaluate([pred()], [gt([box(0, 45)], [PED])], class_range=40.0)
    assert far_pedestrian["num_gt"]["pedestrian"] == 0


def test_class_without_ground_truth_warns_and_counts_zero():
    preds = [pred([box(0, 10)], [0.5], [CAR])]
    gts = [gt([box(0, 10)], [CAR])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_detections(preds, gts)
    messages = sorted(str(w.message) for w in caught if w.category is DegenerateInputWarning)
    assert len(messages) == 2
    assert "'cyclist' has no visible ground truth" in messages[0]
    assert "'pedestrian' has no visible ground truth" in messages[1]
    assert result["class_ap"] == pytest.approx({"car": 1.0, "pedestrian": 0.0, "cyclist": 0.0})
    assert result["mAP"] == pytest.approx(1 / 3)
    assert result["tp_errors"]["pedestrian"] == {"ATE": 1.0, "ASE": 1.0, "AOE": 1.0}
    # nds_3err = (5 * 1/3 + 3 * (1 - mean error 2/3)) / 8
    assert result["nds_3err"] == pytest.approx((5 / 3 + 3 * (1 / 3)) / 8)


def test_no_samples_evaluate_to_zero():
    result = evaluate([], [])
    assert result["mAP"] == 0.0 and result["nds_3err"] == 0.0
    assert result["num_gt"] == {"car": 0, "pedestrian": 0, "cyclist": 0}


def test_flat_keys():
    flat = flatten_results(evaluate(*perfect_scene()))
    assert {"mAP", "nds_3err", "ATE", "ASE", "AOE", "AP_car", "AP_car@0.5", "AP_cyclist@4.0",
            "mAP@1.0", "ATE_pedestrian", "AOE_cyclist"} <= set(flat)
    assert all(isinstance(value, float) for value in flat.values())


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("predictions", "ground_truths", "error", "message"),
    [
        ([pred()], [gt(), gt()], ValueError, "one entry of each per sample"),
        ([{"boxes": np.zeros((0, 7)), "scores": np.zeros(0)}], [gt()], KeyError, "labels"),
        ([pred()], [{"gt_boxes": np.zeros((0, 7))}], KeyError, "gt_labels"),
        ([pred([[0.0] * 6], [0.5], [CAR])], [gt()], ValueError, r"shape \[K, 7\]"),
        ([pred([box(0, 0)], [0.5, 0.4], [CAR])], [gt()], ValueError, "one per box"),
        ([pred([box(0, 0)], [0.5], [3])], [gt()], ValueError, r"\[0, 3\)"),
        ([pred([box(0, 0)], [float("nan")], [CAR])], [gt()], ValueError, "finite"),
        ([pred([box(0, math.inf)], [0.5], [CAR])], [gt()], ValueError, "NaN or inf"),
        ([pred([box(0, 0, l=0.0)], [0.5], [CAR])], [gt()], ValueError, "non-positive size"),
        ([pred()], [gt([box(0, 0)], [CAR], visible=[True, False])], ValueError, "one per box"),
        (["not a dict"], [gt()], TypeError, "must be a dict"),
    ],
)
def test_bad_input_raises_a_clear_error(predictions, ground_truths, error, message):
    with pytest.raises(error, match=message):
        evaluate(predictions, ground_truths)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dist_thresholds": ()}, "positive distances"),
        ({"dist_thresholds": (0.5, -1.0)}, "positive distances"),
        ({"min_precision": 1.0}, r"\[0, 1\)"),
        ({"class_names": ("car", "car")}, "unique"),
        ({"max_boxes_per_sample": 0}, ">= 1"),
        ({"class_range": {"car": 50}}, "lacks class"),
    ],
)
def test_bad_settings_raise_a_clear_error(kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message):
        evaluate(*perfect_scene(), **kwargs)


# ----------------------------------------------------------------------------- random sets


def random_scene(rng: np.random.Generator, num_samples: int = 30, tied_scores: bool = False):
    """Noisy copies of GTs (some relabelled), random false positives, some invisible GTs."""
    predictions, ground_truths = [], []
    for _ in range(num_samples):
        m = int(rng.integers(0, 9))
        gt_boxes = np.column_stack([
            rng.uniform(-40, 40, (m, 2)), rng.uniform(-2, 0, m),
            rng.uniform(0.3, 5, (m, 3)), rng.uniform(-2 * np.pi, 4 * np.pi, m),
        ])
        gt_labels = rng.integers(0, 3, m)
        copied = rng.random(m) < 0.8
        boxes, labels = gt_boxes[copied].copy(), gt_labels[copied].copy()
        noise = rng.choice([0.1, 0.4, 1.0, 2.5], len(boxes))
        boxes[:, :2] += rng.normal(0, 1, (len(boxes), 2)) * noise[:, None]
        boxes[:, 3:6] *= np.exp(rng.normal(0, 0.3, (len(boxes), 3)))
        boxes[:, 6] += rng.normal(0, 0.6, len(boxes)) + np.pi * (rng.random(len(boxes)) < 0.1)
        relabel = rng.random(len(boxes)) < 0.1
        labels[relabel] = rng.integers(0, 3, int(relabel.sum()))
        scores = np.clip(1.0 - noise / 3 + rng.normal(0, 0.2, len(boxes)), 0.02, 1.0)
        k = int(rng.integers(0, 6))
        false_pos = np.column_stack([
            rng.uniform(-40, 40, (k, 2)), rng.uniform(-2, 0, k),
            rng.uniform(0.3, 5, (k, 3)), rng.uniform(-np.pi, np.pi, k),
        ])
        boxes = np.concatenate([boxes, false_pos])
        labels = np.concatenate([labels, rng.integers(0, 3, k)])
        scores = np.concatenate([scores, rng.uniform(0.02, 0.8, k)])
        if tied_scores:
            scores = np.round(scores, 1) + 0.05
        predictions.append({"boxes": boxes, "scores": scores, "labels": labels})
        ground_truths.append(
            {"gt_boxes": gt_boxes, "gt_labels": gt_labels, "visible": rng.random(m) > 0.15}
        )
    return predictions, ground_truths


def reference_evaluation(predictions, ground_truths, thresholds=THRESHOLDS):
    """Plain loops over predictions, written from nuScenes' description (no shared code)."""
    grid = np.linspace(0, 1, 101)
    ap, errors = {}, {}
    for label, name in enumerate(CLASS_NAMES):
        gts = [
            [(b, v) for b, lab, v in zip(g["gt_boxes"], g["gt_labels"], g["visible"], strict=True)
             if lab == label and v]
            for g in ground_truths
        ]
        num_gt = sum(len(g) for g in gts)
        cands = [
            (float(s), sample, b)
            for sample, p in enumerate(predictions)
            for b, s, lab in zip(p["boxes"], p["scores"], p["labels"], strict=True)
            if lab == label
        ]
        # Descending score; equal scores: the later box first (as the devkit ranks them).
        cands = [(s, i, sample, b) for i, (s, sample, b) in enumerate(cands)]
        cands.sort(key=lambda c: (c[0], c[1]), reverse=True)
        for threshold in thresholds:
            taken, flags, match_err, match_score = set(), [], [], []
            for score, _, sample, b in cands:
                best, best_j = math.inf, None
                for j, (g, _) in enumerate(gts[sample]):
                    d = math.hypot(b[0] - g[0], b[1] - g[1])
                    if (sample, j) not in taken and d < best:
                        best, best_j = d, j
                flags.append(best < threshold)
                if best < threshold:
                    taken.add((sample, best_j))
                    g = gts[sample][best_j][0]
                    inter = np.prod(np.minimum(g[3:6], b[3:6]))
                    iou = inter / (np.prod(g[3:6]) + np.prod(b[3:6]) - inter)
                    yaw = abs((b[6] - g[6] + math.pi) % (2 * math.pi) - math.pi)
                    match_err.append((best, 1 - iou, yaw))
                    match_score.append(score)
            if not any(flags):
                ap[name, threshold] = 0.0
                errors[name, threshold] = (1.0, 1.0, 1.0)
                continue
            tp = np.cumsum(flags)
            recall = tp / num_gt
            precision = tp / np.arange(1, len(flags) + 1)
            scores = np.array([c[0] for c in cands])
            p_grid = np.interp(grid, recall, precision, right=0)
            s_grid = np.interp(grid, recall, scores, right=0)
            ap[name, threshold] = np.mean(np.maximum(p_grid[11:] - 0.1, 0)) / 0.9
            last = max(i for i in range(101) if grid[i] <= recall[-1])
            errs = []
            for column in range(3):
                run = np.cumsum([e[column] for e in match_err]) / np.arange(1, len(match_err) + 1)
                on_grid = np.interp(s_grid[::-1], match_score[::-1], run[::-1])[::-1]
                errs.append(np.mean(on_grid[11:last + 1]) if last >= 11 else 1.0)
            errors[name, threshold] = tuple(errs)
    return ap, errors


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied_scores", [False, True])
def test_matches_a_plain_loop_reference(seed, tied_scores):
    preds, gts = random_scene(np.random.default_rng(seed), tied_scores=tied_scores)
    result = evaluate(preds, gts)
    ref_ap, ref_errors = reference_evaluation(preds, gts)
    for name in CLASS_NAMES:
        for threshold in THRESHOLDS:
            assert result["ap"][name][threshold] == pytest.approx(ref_ap[name, threshold], abs=1e-9)
        got = [result["tp_errors"][name][k] for k in ("ATE", "ASE", "AOE")]
        assert got == pytest.approx(ref_errors[name, 2.0], abs=1e-9)
    assert 0.1 < result["mAP"] < 0.9  # the random sets exercise partial matching


def test_two_hundred_samples_evaluate_quickly():
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for _ in range(200):
        g = np.column_stack([rng.uniform(-50, 50, (30, 2)), rng.uniform(-2, 0, 30),
                             rng.uniform(0.5, 5, (30, 3)), rng.uniform(-np.pi, np.pi, 30)])
        labels = rng.integers(0, 3, 30)
        near = np.tile(g, (4, 1))[:100]  # 100 predictions around the 30 GTs, many duplicates
        near[:, :2] += rng.normal(0, 0.7, (100, 2))
        preds.append({"boxes": near, "scores": rng.random(100), "labels": np.tile(labels, 4)[:100]})
        gts.append({"gt_boxes": g, "gt_labels": labels})
    start = time.perf_counter()
    evaluate_detections(preds, gts)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"200 samples x 100 predictions took {elapsed:.2f} s"


# ----------------------------------------------------------------------------- nuscenes-devkit

NUSCENES_NAMES = {"car": "car", "pedestrian": "pedestrian", "cyclist": "bicycle"}


def devkit_evaluation(predictions, ground_truths):
    """AP per (class, threshold) and TP errors at 2 m from nuscenes-devkit's own functions."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.detection.data_classes import DetectionBox

    def to_devkit(token, b, label, score=-1.0):
        x, y, z, length, width, height, yaw = (float(v) for v in b)
        return DetectionBox(
            sample_token=token, translation=(x, y, z),
            size=(width, length, height),  # nuScenes stores (w, l, h); ours is (l, w, h)
            rotation=(math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)),  # (w, x, y, z) about z
            velocity=(0.0, 0.0), ego_translation=(x, y, z), num_pts=1,
            detection_name=NUSCENES_NAMES[CLASS_NAMES[int(label)]],
            detection_score=float(score), attribute_name="",
        )

    gt_boxes, pred_boxes = EvalBoxes(), EvalBoxes()
    for index, (p, g) in enumerate(zip(predictions, ground_truths, strict=True)):
        token = f"sample{index}"
        # The devkit's filter_eval_boxes drops GTs without points before accumulate.
        visible = zip(g["gt_boxes"], g["gt_labels"], g["visible"], strict=True)
        gt_boxes.add_boxes(token, [to_devkit(token, b, lab) for b, lab, v in visible if v])
        pred_boxes.add_boxes(token, [
            to_devkit(token, b, lab, s)
            for b, lab, s in zip(p["boxes"], p["labels"], p["scores"], strict=True)
        ])
    ap, errors = {}, {}
    for name in CLASS_NAMES:
        for threshold in THRESHOLDS:
            data = accumulate(gt_boxes, pred_boxes, NUSCENES_NAMES[name], center_distance,
                              threshold)
            ap[name, threshold] = calc_ap(data, min_recall=0.1, min_precision=0.1)
            if threshold == 2.0:
                errors[name] = [calc_tp(data, 0.1, key)
                                for key in ("trans_err", "scale_err", "orient_err")]
    return ap, errors


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tied_scores", [False, True])
def test_agrees_with_nuscenes_devkit(seed, tied_scores):
    pytest.importorskip(
        "nuscenes",
        reason="nuscenes-devkit is not installed; it pins numpy<2, so install it beside numpy 2 "
        "with `pip install --no-deps nuscenes-devkit==1.2.0 pyquaternion cachetools tqdm` and "
        "`pip install scikit-learn`",
    )
    preds, gts = random_scene(np.random.default_rng(100 + seed), tied_scores=tied_scores)
    result = evaluate(preds, gts)
    ref_ap, ref_errors = devkit_evaluation(preds, gts)
    ap_diff = max(abs(result["ap"][n][t] - ref_ap[n, t]) for n in CLASS_NAMES for t in THRESHOLDS)
    err_diff = max(
        abs(result["tp_errors"][n][k] - ref_errors[n][i])
        for n in CLASS_NAMES for i, k in enumerate(("ATE", "ASE", "AOE"))
    )
    assert ap_diff <= 1e-9 and err_diff <= 1e-9, (ap_diff, err_diff)
    assert 0.1 < result["mAP"] < 0.9


# ----------------------------------------------------------------------------- mmengine


def test_metric_in_an_mmengine_evaluator_matches_the_function():
    from mmengine.evaluator import Evaluator

    preds, gts = random_scene(np.random.default_rng(7), num_samples=6)
    evaluator = Evaluator(dict(type="BEVDetectionMetric"))  # found through the METRICS registry
    assert isinstance(evaluator.metrics[0], BEVDetectionMetric)
    for start in (0, 3):  # two batches of three, with torch tensors as the Runner gives them
        batch = {
            "inputs": {"points": [torch.zeros(4, 5)] * 3},
            "data_samples": [
                {key: torch.from_numpy(np.asarray(value)) for key, value in g.items()}
                | {"sample_idx": start + i, "source": "synthetic"}
                for i, g in enumerate(gts[start:start + 3])
            ],
        }
        outputs = [
            {key: torch.from_numpy(np.asarray(value)).float() for key, value in p.items()}
            | {"labels": torch.from_numpy(p["labels"])}
            for p in preds[start:start + 3]
        ]
        evaluator.process(data_samples=outputs, data_batch=batch)
    metrics = evaluator.evaluate(len(preds))
    float32 = [
        {**p, "boxes": p["boxes"].astype(np.float32), "scores": p["scores"].astype(np.float32)}
        for p in preds
    ]
    expected = flatten_results(evaluate(float32, gts))
    assert metrics == pytest.approx({f"bev/{key}": value for key, value in expected.items()})
    assert 0.0 < metrics["bev/mAP"] < 1.0


def test_metric_rejects_a_batch_of_another_length():
    metric = BEVDetectionMetric()
    batch = {"data_samples": [gt(), gt()]}
    with pytest.raises(ValueError, match="one dict per sample"):
        metric.process(batch, [pred()])
    with pytest.raises(KeyError, match="data_samples"):
        metric.process({"inputs": {}}, [pred()])


def test_metric_checks_its_settings_when_built():
    with pytest.raises(ValueError, match="positive distances"):
        BEVDetectionMetric(dist_thresholds=(0.0,))
    assert BEVDetectionMetric(prefix="val").prefix == "val"
