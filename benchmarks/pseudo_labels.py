"""Make a teacher's pseudo-labels of a scenario's unlabelled training scenes (one benchmark run).

``distill_gain --protocol fair`` runs this once per invocation before the options that train on
pseudo-labels (issue 19's baseline c): it builds the teacher's experiment with the same
``--cfg-options`` as the runs (so the scenes are theirs), predicts the scenes from
``--first-scene`` on (the unlabelled ones) from the teacher's own view of each scan, without
augmentation, and writes ``pseudo_labels.npz`` and ``metrics.json`` (how many boxes per class,
and how many of them match a hidden true box, for the record) to ``--work-dir``.

    python -m benchmarks.pseudo_labels train_teacher_64beam bevdistill/assets/teacher_64beam.pth \\
        --first-scene 200 --work-dir /tmp/pl --cfg-options train_dataset.num_samples=2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from mmengine.config import DictAction

from bevdistill.data.classes import CLASS_NAMES
from bevdistill.data.pseudo_labels import predict_pseudo_labels, save_pseudo_labels
from bevdistill.engine.report import write_json

FILE = "pseudo_labels.npz"
MATCH_RADIUS_M = 2.0  # a pseudo box "matches" a hidden true box of its class centred this close


def _true_matches(labels: dict, dataset) -> dict[str, int]:
    """Per class, the pseudo boxes with a hidden true box of the same class within
    ``MATCH_RADIUS_M`` (the labels the scenario withholds; recorded, never trained on)."""
    hits = dict.fromkeys(CLASS_NAMES, 0)
    for scene, pl in labels.items():
        raw = dataset.raw_sample(scene)
        for box, label in zip(pl["boxes"], pl["labels"], strict=True):
            same = raw["gt_labels"] == label
            dist = np.linalg.norm(raw["gt_boxes"][same, :2] - box[:2], axis=1)
            hits[CLASS_NAMES[int(label)]] += int(dist.size > 0 and dist.min() <= MATCH_RADIUS_M)
    return hits


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="the teacher's experiment (its train_dataset's scenes)")
    parser.add_argument("checkpoint", nargs="?", help="teacher weights (none: a random teacher, "
                        "for smoke runs only)")
    parser.add_argument("--first-scene", type=int, required=True,
                        help="the first unlabelled scene (the scenario's labelled count)")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    args = parser.parse_args(argv)

    from mmengine.registry import DATASETS, MODELS

    from bevdistill.engine.runner import load_experiment
    from bevdistill.engine.weights import load_weights

    exp = load_experiment(args.experiment, args.cfg_options)
    teacher = MODELS.build(exp.model)
    if args.checkpoint:
        load_weights(teacher, args.checkpoint)
    dataset = DATASETS.build({**exp.train_dataset.to_dict(), "augment": False,
                              "labelled_samples": None})
    if not 0 <= args.first_scene < len(dataset):
        raise SystemExit(f"--first-scene must lie in [0, {len(dataset)}) (the training scenes), "
                         f"got {args.first_scene}")
    scenes = range(args.first_scene, len(dataset))
    labels = predict_pseudo_labels(teacher, dataset, scenes, args.score_threshold, args.batch_size)
    meta = {"teacher_experiment": args.experiment, "score_threshold": args.score_threshold,
            "scenes": [args.first_scene, len(dataset)], "decoded_as": "the teacher head's predict "
            "(its score threshold, peak and NMS settings), then score >= score_threshold"}
    save_pseudo_labels(args.work_dir / FILE, labels, meta)
    every = np.concatenate([pl["labels"] for pl in labels.values()]) if labels else np.zeros(0)
    boxes = {c: int((every == i).sum()) for i, c in enumerate(CLASS_NAMES)}
    hits = _true_matches(labels, dataset)
    metrics = {"boxes": boxes, "boxes_per_scene": float(len(every)) / max(1, len(scenes)),
               "match_hidden_label": hits, "match_radius_m": MATCH_RADIUS_M,
               "precision": {c: hits[c] / boxes[c] if boxes[c] else None for c in CLASS_NAMES}}
    write_json(args.work_dir / "metrics.json", {**meta, "metrics": metrics})
    print(f"{len(every)} pseudo boxes on {len(scenes)} scenes -> {args.work_dir / FILE}")
    return metrics


if __name__ == "__main__":
    main()
