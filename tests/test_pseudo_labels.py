"""The teacher's boxes become the labels of the unlabelled scenes; the scans stay as they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bevdistill.data import SyntheticBEVDataset
from bevdistill.data.pseudo_labels import (
    PseudoLabelledDataset,
    load_pseudo_labels,
    predict_pseudo_labels,
    save_pseudo_labels,
)

DATA = dict(num_samples=4, seed=3, cache=False, min_points=0)


class FakeTeacher(torch.nn.Module):
    """Finds two boxes per scene, at a place set by the scan's size: one sure, one unsure."""

    def predict(self, inputs):
        out = []
        for pts in inputs["points"]:
            x = float(len(pts) % 20)
            boxes = torch.tensor([[x, 1.0, -1.0, 4.0, 2.0, 1.5, 0.3],
                                  [-x, -5.0, -1.0, 0.8, 0.8, 1.7, 0.0]])
            out.append({"boxes": boxes, "scores": torch.tensor([0.9, 0.2]),
                        "labels": torch.tensor([0, 1])})
        return out


def _labels(tmp_path, scenes=(2, 3)):
    teacher, data = FakeTeacher(), SyntheticBEVDataset(**DATA)
    labels = predict_pseudo_labels(teacher, data, scenes, score_threshold=0.5, batch_size=2)
    return save_pseudo_labels(tmp_path / "pl.npz", labels, {"teacher": "fake"}), labels, data


def test_confident_teacher_boxes_become_the_unlabelled_scenes_targets(tmp_path):
    path, labels, data = _labels(tmp_path)
    assert sorted(labels) == [2, 3] and all(len(v["labels"]) == 1 for v in labels.values())
    loaded, meta = load_pseudo_labels(path)
    assert meta == {"teacher": "fake"} and sorted(loaded) == [2, 3]
    np.testing.assert_array_equal(loaded[3]["boxes"], labels[3]["boxes"])

    plain = SyntheticBEVDataset(**DATA, labelled_samples=2)
    pseudo = PseudoLabelledDataset(str(path), **DATA, labelled_samples=2)
    assert len(pseudo) == 4 and pseudo.metainfo["pseudo_labels"] == {"teacher": "fake"}
    for index in range(4):
        scene = plain.scene_of(index)
        got, ref = pseudo[index], plain[index]
        torch.testing.assert_close(got["inputs"]["points"], ref["inputs"]["points"])  # scans as they were
        sample = got["data_samples"]
        assert sample["labelled"]
        if scene < 2:  # real labels, untouched
            torch.testing.assert_close(sample["gt_boxes"], ref["data_samples"]["gt_boxes"])
            assert "pseudo_label" not in sample
        else:  # the teacher's sure box, and not its unsure one
            assert not ref["data_samples"]["labelled"] and len(ref["data_samples"]["gt_boxes"]) == 0
            torch.testing.assert_close(sample["gt_boxes"], torch.from_numpy(labels[scene]["boxes"]))
            assert sample["gt_labels"].tolist() == [0] and sample["pseudo_label"]
    # the real labels of the unlabelled scenes never leak in: the teacher's box is not one
    full = SyntheticBEVDataset(**DATA)
    assert not any(torch.equal(b, pseudo[1]["data_samples"]["gt_boxes"][0])
                   for b in full[3]["data_samples"]["gt_boxes"])


def test_pseudo_labels_refuse_inputs_that_would_misplace_boxes(tmp_path):
    path, _, _ = _labels(tmp_path, scenes=(3,))
    with pytest.raises(ValueError, match=r"no pseudo-labels for 1 unlabelled scene.*\[2\]"):
        PseudoLabelledDataset(str(path), **DATA, labelled_samples=2)
    with pytest.raises(ValueError, match="needs labelled_samples"):
        PseudoLabelledDataset(str(path), **DATA)
    with pytest.raises(ValueError, match="augment=False"):
        predict_pseudo_labels(FakeTeacher(), SyntheticBEVDataset(**DATA, augment=True), [0])
    with pytest.raises(ValueError, match="without labelled_samples"):
        predict_pseudo_labels(FakeTeacher(), SyntheticBEVDataset(**DATA, labelled_samples=2), [0])
    with pytest.raises(FileNotFoundError, match="no pseudo-label file"):
        load_pseudo_labels(tmp_path / "none.npz")
