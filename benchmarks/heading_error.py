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

It also scores each model with the project's metric (:mod:`bevdistill.engine.metric`: mAP,
AOE per class) on the same scenes. The centre-distance mAP does not read the heading, so what
is found here bears on AOE and ``nds_3err``, not on the mAP gaps of the distillation benchmark.

Every model is scored on its own world: a shipped model on its card's ``world_version`` (cards
without one: world 1, the front/back symmetric objects), a run (``--runs NAME=RUN_DIR``, a
finished ``bevdistill train`` work dir) on the world its record names, with the run's own
network (its experiment and ``--cfg-options``, e.g. the direction classifier) and the view its
validation set reads.

    .venv/bin/python -m benchmarks.heading_error            # shipped two-sensor models, 60 scenes
    .venv/bin/python -m benchmarks.heading_error --models teacher_64beam --scenes 12
    .venv/bin/python -m benchmarks.heading_error --models --runs new=runs/a old=runs/b \
        --out benchmarks/results/heading_learnability.json

Writes ``benchmarks/results/heading_error.json`` (``--out``), with each run's command and commit.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.provenance import RESULTS_DIR, provenance
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.matching import yaw_difference
from bevdistill.engine.metric import evaluate_detections, flatten_results
from bevdistill.engine.report import portable_command, write_json

MODULE = "benchmarks.heading_error"


def matched_headings(model, item: dict, view: str, match_m: float, threshold: float,
                     pred: dict | None = None) -> list:
    """(class, gt yaw, predicted yaw, |(sin, cos)| at the gt centre cell) per detected object."""
    points = item["inputs"][view]
    with torch.no_grad():
        if pred is None:
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


def car_table(sources: dict, metrics: dict, results: dict) -> str:
    """One row per model: its world, head and schedule, the metric's car AP and AOE, and how the
    matched cars' headings err."""
    lines = ["| model | world | direction bin | iterations | AP car | AOE car (rad) | heading "
             "error median | axis error median | flipped | \\|(sin, cos)\\| median |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, src in sources.items():
        car = results[name].get("car", {})
        lines.append(
            f"| {name} | {src['world_version']} | {'yes' if src['dir_classifier'] else 'no'} | "
            f"{src.get('iters_done')} | {metrics[name]['AP_car']:.3f} | "
            f"{metrics[name]['AOE_car']:.2f} | {car.get('error_median_rad', math.nan):.2f} | "
            f"{car.get('axis_error_median_rad', math.nan):.2f} | "
            f"{car.get('flipped_share', math.nan):.0%} | {car.get('sincos_length_median', math.nan):.2f} |")
    return "\n".join(lines)


def view_of(exp) -> str:
    """The scan an experiment's model reads: the 64-beam one for a two-sensor teacher."""
    return "teacher_points" if exp.val_dataset.get("view") == "teacher" else "points"


def load_run(run_dir: Path):
    """A finished run's network with its last checkpoint, its view, world and provenance."""
    from bevdistill.engine.checkpoint import read_state_dict
    from bevdistill.engine.runner import load_experiment
    from bevdistill.models import build_detector

    record = json.loads((run_dir / "metrics.json").read_text())
    exp = load_experiment(record["config"], record.get("cfg_options") or None)
    model = build_detector(exp.model.to_dict())
    checkpoint = run_dir / Path(record["checkpoint"]).name  # the run dir may have moved
    model.load_state_dict(read_state_dict(checkpoint, f"run {run_dir}"), strict=True)
    view = view_of(exp)
    world = int(record.get("world_version") or 1)
    source = {key: record.get(key) for key in ("argv", "commit", "iters_done", "duration_s")}
    source["command"] = portable_command(source.pop("argv"))
    return model.eval(), view, world, source


def score(model, scenes, view: str, args) -> tuple[list, dict]:
    """Heading rows of the matched objects and the project's metric, on ``scenes``."""
    rows, predictions, truths = [], [], []
    for i in range(len(scenes)):
        item = scenes[i]
        with torch.no_grad():
            pred = model.predict({"points": [item["inputs"][view]]})[0]
        rows += matched_headings(model, item, view, args.match_m, args.threshold, pred)
        predictions.append(pred)
        truths.append(item["data_samples"])
    flat = flatten_results(evaluate_detections(predictions, truths))
    metric = {k: flat[k] for k in ("mAP", "nds_3err", "AOE", *(f"{e}_{c}" for c in CLASS_NAMES
                                                             for e in ("AP", "AOE")))}
    return rows, metric


def main(argv: list[str] | None = None) -> dict:
    from bevdistill import pretrained
    from bevdistill.data import SyntheticBEVDataset
    from bevdistill.engine.runner import load_experiment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*",
                        default=["teacher_64beam", "student_16beam", "student_16beam_distilled"],
                        help="shipped models (none: only --runs)")
    parser.add_argument("--runs", nargs="*", default=[], metavar="NAME=RUN_DIR",
                        help="finished training runs to score, each as NAME=RUN_DIR")
    parser.add_argument("--scenes", type=int, default=60, help="validation scenes")
    parser.add_argument("--match-m", type=float, default=1.0)
    parser.add_argument("--threshold", type=float, default=0.3, help="detection score threshold")
    parser.add_argument("--out", default=str(RESULTS_DIR / "heading_error.json"))
    args = parser.parse_args(argv)
    if any("=" not in spec for spec in args.runs):
        parser.error(f"--runs takes NAME=RUN_DIR pairs, got {args.runs}")
    runs = dict(spec.split("=", 1) for spec in args.runs)
    started = time.time()
    val = load_experiment("train_student_16beam").val_dataset
    worlds: dict[int, SyntheticBEVDataset] = {}

    def scenes_of(world: int) -> SyntheticBEVDataset:
        if world not in worlds:
            worlds[world] = SyntheticBEVDataset(
                split="val", num_samples=args.scenes, point_cloud_range=val.point_cloud_range,
                lidar=dict(n_rings=16), teacher_lidar=dict(n_rings=64), world_version=world)
        return worlds[world]

    models = {}
    for name in args.models:
        card = pretrained.shipped_card(name)
        experiment = load_experiment(pretrained.SHIPPED[name][0])
        models[name] = (pretrained.load_shipped(name).eval(), view_of(experiment),
                        pretrained.card_world_version(card),
                        {"shipped": name, "iters_done": card.get("iters"),
                         "commit": card.get("commit")})
    for name, run_dir in runs.items():
        models[name] = load_run(Path(run_dir))
    results, metrics, sources = {}, {}, {}
    for name, (model, view, world, source) in models.items():
        rows, metrics[name] = score(model, scenes_of(world), view, args)
        results[name] = summarise(rows)
        sources[name] = {**source, "world_version": world, "view": view,
                         "dir_classifier": model.bbox_head.dir_classifier}
        car = results[name].get("car", {})
        print(f"{name} (world {world}): cars matched {car.get('matched')}, heading error median "
              f"{car.get('error_median_rad', math.nan):.2f} rad (axis {car.get('axis_error_median_rad', math.nan):.2f}), "
              f"flipped {car.get('flipped_share', math.nan):.0%}, |(sin, cos)| median "
              f"{car.get('sincos_length_median', math.nan):.2f}; metric AOE_car "
              f"{metrics[name]['AOE_car']:.2f} rad, AP_car {metrics[name]['AP_car']:.3f}")
    record = {"benchmark": "heading_error", **provenance(MODULE, argv),
              "scenes": args.scenes, "match_m": args.match_m, "threshold": args.threshold,
              "markdown": car_table(sources, metrics, results),
              "models": sources, "metric": metrics,
              "rows": [{"model": m, "class": c, **stats} for m, by_class in results.items()
                       for c, stats in by_class.items()],
              "wall_s": round(time.time() - started, 1)}
    write_json(args.out, record)
    return record


if __name__ == "__main__":
    main()
