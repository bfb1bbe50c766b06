"""Why do the shipped models orient poorly (AOE near pi/2) while they localise well?

For every ground-truth object of the validation scenes that a model detects (same class, centre
within ``--match-m``), this measures:

* the heading error over the full period (what AOE averages) and modulo pi (the box's axis,
  blind to front/back), and the share of detections flipped by about pi;
* the length of the predicted ``(sin, cos)`` vector at the object's centre cell. The head
  regresses ``(sin yaw, cos yaw)`` with an L1 loss; when the scan cannot tell an object's front
  from its back, the best L1 answer for the two equally likely targets ``(s, c)`` and
  ``(-s, -c)`` is near ``(0, 0)``, and ``atan2`` of a vector near zero is noise. A length near 1
  means the head commits to a heading; near 0 means it averaged two.

The centre-distance mAP of :mod:`bevdistill.engine.metric` does not read the heading, so what
is found here bears on AOE and ``nds_3err``, not on the mAP gaps of the distillation benchmark.

    .venv/bin/python -m benchmarks.heading_error            # shipped two-sensor models, 60 scenes
    .venv/bin/python -m benchmarks.heading_error --models teacher_64beam --scenes 12

Writes ``benchmarks/results/heading_error.json``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from benchmarks.provenance import RESULTS_DIR, provenance
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.matching import yaw_difference
from bevdistill.engine.report import write_json

MODULE = "benchmarks.heading_error"
VIEWS = {"teacher_64beam": "teacher_points"}  # every other shipped two-sensor model reads 'points'


def matched_headings(model, item: dict, view: str, match_m: float, threshold: float) -> list:
    """(class, gt yaw, predicted yaw, |(sin, cos)| at the gt centre cell) per detected object."""
    points = item["inputs"][view]
    with torch.no_grad():
        pred = model.predict({"points": [points]})[0]
        maps = model({"points": [points]}, mode="tensor")
    head = model.bbox_head
    cell_x, cell_y = head.grid.cell_size(head.out_size_factor)
    x0, y0 = head.grid.point_cloud_range[:2]
    rot = maps["rot"][0].float()
    keep = pred["scores"] > threshold
    boxes, labels = pred["boxes"][keep].numpy(), pred["labels"][keep].numpy()
    gt_boxes = np.asarray(item["data_samples"]["gt_boxes"])
    gt_labels = np.asarray(item["data_samples"]["gt_labels"])
    rows = []
    for box, label in zip(gt_boxes, gt_labels, strict=True):
        same = np.flatnonzero(labels == label)
        if not len(same):
            continue
        dist = np.hypot(boxes[same, 0] - box[0], boxes[same, 1] - box[1])
        if dist.min() > match_m:
            continue
        col = min(max(int((box[0] - x0) // cell_x), 0), rot.shape[2] - 1)
        row = min(max(int((box[1] - y0) // cell_y), 0), rot.shape[1] - 1)
        norm = float(torch.linalg.vector_norm(rot[:, row, col]))
        rows.append((int(label), float(box[6]), float(boxes[same[dist.argmin()], 6]), norm))
    return rows


def summarise(rows: list) -> dict:
    out = {}
    for k, name in enumerate(CLASS_NAMES):
        r = np.array([x for x in rows if x[0] == k], dtype=np.float64).reshape(-1, 4)
        if not len(r):
            continue
        full = yaw_difference(r[:, 2], r[:, 1])  # what AOE averages
        axis = yaw_difference(r[:, 2], r[:, 1], period=math.pi)  # blind to front/back
        out[name] = {
            "matched": len(r),
            "error_median_rad": float(np.median(full)), "error_mean_rad": float(full.mean()),
            "axis_error_median_rad": float(np.median(axis)),
            "flipped_share": float(np.mean(full > math.pi - 0.5)),
            "sincos_length_median": float(np.median(r[:, 3])),
            "sincos_length_below_0.5": float(np.mean(r[:, 3] < 0.5)),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    from bevdistill import pretrained
    from bevdistill.data import SyntheticBEVDataset
    from bevdistill.engine.runner import load_experiment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["teacher_64beam", "student_16beam", "student_16beam_distilled"])
    parser.add_argument("--scenes", type=int, default=60, help="validation scenes")
    parser.add_argument("--match-m", type=float, default=1.0)
    parser.add_argument("--threshold", type=float, default=0.3, help="detection score threshold")
    parser.add_argument("--out", default=str(RESULTS_DIR / "heading_error.json"))
    args = parser.parse_args(argv)
    started = time.time()
    val = load_experiment("train_student_16beam").val_dataset
    scenes = SyntheticBEVDataset(split="val", num_samples=args.scenes,
                                 point_cloud_range=val.point_cloud_range, lidar=dict(n_rings=16),
                                 teacher_lidar=dict(n_rings=64))
    results = {}
    for name in args.models:
        model = pretrained.load_shipped(name).eval()
        rows = [r for i in range(len(scenes)) for r in matched_headings(
            model, scenes[i], VIEWS.get(name, "points"), args.match_m, args.threshold)]
        results[name] = summarise(rows)
        car = results[name].get("car", {})
        print(f"{name}: cars matched {car.get('matched')}, heading error median "
              f"{car.get('error_median_rad', math.nan):.2f} rad (axis {car.get('axis_error_median_rad', math.nan):.2f}), "
              f"flipped {car.get('flipped_share', math.nan):.0%}, |(sin, cos)| median "
              f"{car.get('sincos_length_median', math.nan):.2f}")
    record = {"benchmark": "heading_error", **provenance(MODULE, argv),
              "scenes": args.scenes, "match_m": args.match_m, "threshold": args.threshold,
              "rows": [{"model": m, "class": c, **stats} for m, by_class in results.items()
                       for c, stats in by_class.items()],
              "wall_s": round(time.time() - started, 1)}
    write_json(args.out, record)
    return record


if __name__ == "__main__":
    main()
