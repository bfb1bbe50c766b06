"""The teacher's boxes as labels of the scans nobody labelled (pseudo-labelling).

What a practitioner does with a teacher and unlabelled scans, instead of distilling: run the
teacher once over the unlabelled scenes, keep its boxes above a score threshold (decoded as its
head decodes them, NMS included), and train the student alone on the real labels plus these.
It is the baseline distillation has to beat or add to (issue 19, baseline c).

* :func:`predict_pseudo_labels` runs a detector over scenes and keeps its confident boxes;
* :func:`save_pseudo_labels` / :func:`load_pseudo_labels` keep them in one ``.npz`` file;
* :class:`PseudoLabelledDataset` is a training dataset whose unlabelled scenes carry those
  boxes (their scans unchanged), so ``bevdistill train student`` trains on them::

      --cfg-options train_dataset.type=PseudoLabelledDataset train_dataset.pseudo_labels=PL.npz \\
                    train_dataset.labelled_samples=200
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from .dataset import bev_collate
from .geometry import count_points_in_boxes

PseudoLabels = dict[int, dict[str, np.ndarray]]  # scene -> {"boxes" [K, 7], "labels", "scores"}


@torch.no_grad()
def predict_pseudo_labels(model: torch.nn.Module, dataset, scenes: Iterable[int],
                          score_threshold: float = 0.3, batch_size: int = 4) -> PseudoLabels:
    """``model``'s boxes scoring at least ``score_threshold`` on each of ``scenes``.

    ``dataset[scene]`` must give the scene's scan as ``model`` reads it (the teacher's view) in
    the LiDAR frame: without augmentation, and with every scene its own item (no
    ``labelled_samples``), since the boxes become labels of the raw scene."""
    if getattr(dataset, "augment", None) is not None:
        raise ValueError("pseudo-labels are boxes of the raw scene: build the dataset with "
                         "augment=False (an augmented scan moves the boxes)")
    if getattr(dataset, "labelled_samples", None) is not None:
        raise ValueError("build the dataset without labelled_samples, so that item i is scene i")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold is a class probability in [0, 1], got {score_threshold}")
    was_training = model.training
    model.eval()
    scenes, out = [int(s) for s in scenes], {}
    try:
        for start in range(0, len(scenes), batch_size):
            chunk = scenes[start:start + batch_size]
            batch = bev_collate([dataset[s] for s in chunk])
            for scene, pred in zip(chunk, model.predict(batch["inputs"]), strict=True):
                keep = pred["scores"] >= score_threshold
                out[scene] = {k: pred[k][keep].detach().cpu().numpy()
                              for k in ("boxes", "labels", "scores")}
    finally:
        model.train(was_training)
    return out


def save_pseudo_labels(path: str | os.PathLike, labels: PseudoLabels,
                       meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``labels`` (and ``meta``: where they came from) to one ``.npz`` file."""
    scenes = sorted(labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = lambda key, shape, dtype: (np.concatenate(  # noqa: E731
        [labels[s][key] for s in scenes]).astype(dtype) if scenes else np.zeros(shape, dtype))
    with open(path, "wb") as f:
        np.savez(f, scenes=np.asarray(scenes, dtype=np.int64),
                 counts=np.asarray([len(labels[s]["labels"]) for s in scenes], dtype=np.int64),
                 boxes=stack("boxes", (0, 7), np.float32), labels=stack("labels", (0,), np.int64),
                 scores=stack("scores", (0,), np.float32), meta=json.dumps(dict(meta or {})))
    return path


def load_pseudo_labels(path: str | os.PathLike) -> tuple[PseudoLabels, dict]:
    """The labels and meta :func:`save_pseudo_labels` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pseudo-label file at {path}: make one with "
                                "predict_pseudo_labels + save_pseudo_labels")
    with np.load(path) as f:
        ends = np.cumsum(f["counts"])
        labels = {int(s): {k: f[k][e - n:e] for k in ("boxes", "labels", "scores")}
                  for s, n, e in zip(f["scenes"], f["counts"], ends, strict=True)}
        return labels, json.loads(str(f["meta"]))


@DATASETS.register_module()
class PseudoLabelledDataset(Dataset):
    """A dataset (``inner_type``, built from the other arguments) whose unlabelled scenes carry
    the pseudo-labels of ``pseudo_labels`` (a file of :func:`save_pseudo_labels`) as their boxes.

    The scans are the inner dataset's, unchanged; the boxes ride through its augmentation like
    real labels, and are kept by the same rule (``min_points`` of the labelling scan inside the
    box). Items carry ``pseudo_label=True`` where their boxes are the teacher's."""

    def __init__(self, pseudo_labels: str | os.PathLike, inner_type: str = "SyntheticBEVDataset",
                 **dataset: Any) -> None:
        self.dataset = DATASETS.build({"type": inner_type, **dataset})
        if getattr(self.dataset, "labelled_samples", None) is None:
            raise ValueError("PseudoLabelledDataset needs labelled_samples=N: the scenes from N "
                             "on are the unlabelled ones the pseudo-labels stand in for")
        self.labels, self.meta = load_pseudo_labels(pseudo_labels)
        unlabelled = range(self.dataset.labelled_samples, len(self.dataset))
        missing = [s for s in unlabelled if s not in self.labels]
        if missing:
            raise ValueError(f"{pseudo_labels} has no pseudo-labels for {len(missing)} unlabelled "
                             f"scene(s) (first: {missing[:5]}); predict them for scenes "
                             f"{self.dataset.labelled_samples}..{len(self.dataset) - 1}")

    @property
    def metainfo(self) -> dict:
        return {**self.dataset.metainfo, "pseudo_labels": self.meta}

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        scene = self.dataset.scene_of(index)
        raw = self.dataset.raw_sample(scene)
        if self.dataset.is_labelled(scene):
            return self.dataset.make_item(index, scene, raw, True)
        pseudo = self.labels[scene]
        scan = raw.get("teacher_points", raw["points"])  # the labelling scan, as for real labels
        raw = {**raw, "gt_boxes": pseudo["boxes"].astype(np.float32),
               "gt_labels": pseudo["labels"].astype(np.int64),
               "num_points": count_points_in_boxes(scan, pseudo["boxes"])}
        item = self.dataset.make_item(index, scene, raw, True)
        item["data_samples"]["pseudo_label"] = True
        return item
