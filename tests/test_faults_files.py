"""Fault suite, issue 23: non-finite weights, model cards, wrong kinds of checkpoint, bad data.

Before the fix a checkpoint with a NaN BatchNorm statistic evaluated to mAP 0.0 with exit 0, a
card with an empty ``weights_sha256`` skipped the check so a swapped weights file loaded, a
truncated card was a bare JSONDecodeError, an info file without ``lidar_points`` a bare
KeyError, a NaN box centre a traceback, and degenerate boxes, an all-zero ``lidar2ego`` or an
empty scan were used without a word.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_faults import QUIET, Faults, _frame

from bevdistill import pretrained
from bevdistill.data import NuScenesReader
from bevdistill.data.nuscenes import DataSanityWarning, InfoFileError
from bevdistill.distiller import TeacherCheckpointError
from bevdistill.engine.checkpoint import NonFiniteWeightsError, file_sha256, verify_shipped_weights
from bevdistill.engine.runner import load_experiment, make_runner
from bevdistill.models import build_detector
from bevdistill.pretrained import ModelCardError
from bevdistill.teacher_weights import load_teacher_checkpoint


@pytest.fixture
def faults(record_property) -> Faults:
    return Faults(record_property)


def _poisoned(source: Path, out: Path, key_part: str = "running_mean",
              value: float = float("nan")) -> tuple[Path, str]:
    """A copy of checkpoint ``source`` with one value of the first ``key_part`` tensor bad."""
    loaded = torch.load(source, map_location="cpu", weights_only=False)
    state = loaded.get("state_dict", loaded)
    key = next(k for k in state if key_part in k)
    state[key].view(-1)[0] = value
    torch.save(loaded, out)
    return out, key


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("distill") / "work"
    make_runner(load_experiment("distill_ci", dict(log_level="WARNING")), work, max_iters=2).train()
    return work / "iter_2.pth"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_evaluate_refuses_non_finite_weights(faults, tmp_path, capsys, value):
    source = pretrained.ASSETS / "student.pth"
    path, key = _poisoned(source, tmp_path / "bad.pth", value=value)
    faults.cli(["evaluate", "train_student", str(path), "--num-samples", "1", "--work-dir",
                str(tmp_path / "ev")], capsys, str(path), "non-finite", key)
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_export_refuses_non_finite_weights(faults, tmp_path, capsys, distill_run):
    path, key = _poisoned(distill_run, tmp_path / "bad.pth", key_part="student.")
    faults.cli(["export", "distill_ci", str(path), str(tmp_path / "out.pth")], capsys,
               "non-finite", key)
    assert not (tmp_path / "out.pth").exists()


def test_init_from_and_teacher_ckpt_refuse_non_finite_weights(faults, tmp_path, capsys):
    path, key = _poisoned(pretrained.ASSETS / "teacher.pth", tmp_path / "t.pth",
                          key_part="weight")
    with faults.clear(TeacherCheckpointError, "non-finite", key):
        load_teacher_checkpoint(build_detector("teacher"), path)
    faults.cli(["train", "teacher", "train_teacher", "--work-dir", str(tmp_path / "w"),
                "--max-iters", "1", "--cfg-options", f"init_from={path}", *QUIET,
                "train_dataset.num_samples=2", "val_dataset.num_samples=1"], capsys,
               "non-finite", key)


def _shipped_copy(tmp_path: Path, monkeypatch, name: str = "student") -> tuple[Path, Path]:
    shutil.copy(pretrained.ASSETS / f"{name}.pth", tmp_path / f"{name}.pth")
    shutil.copy(pretrained.ASSETS / f"{name}_card.json", tmp_path / f"{name}_card.json")
    monkeypatch.setattr(pretrained, "ASSETS", tmp_path)
    return tmp_path / f"{name}.pth", tmp_path / f"{name}_card.json"


def test_load_shipped_refuses_non_finite_weights_even_with_a_matching_card(faults, tmp_path,
                                                                         monkeypatch):
    weights, card = _shipped_copy(tmp_path, monkeypatch)
    _, key = _poisoned(weights, weights)
    data = json.loads(card.read_text())
    data["weights_sha256"] = file_sha256(weights)
    card.write_text(json.dumps(data))
    with faults.clear(NonFiniteWeightsError, "non-finite", key):
        pretrained.load_shipped("student")


@pytest.mark.parametrize("case, causes", [
    ("empty_sha", ["'weights_sha256'", "cannot be checked"]),
    ("no_sha", ["'weights_sha256'"]),
    ("bad_sha", ["not a SHA-256"]),
    ("truncated", ["not valid JSON", "truncated"]),
    ("no_preset", ["'preset'"]),
    ("no_card", ["no model card"]),
])
def test_broken_model_cards_are_errors_for_shipped_models(faults, tmp_path, monkeypatch, case,
                                                          causes):
    weights, card = _shipped_copy(tmp_path, monkeypatch)
    data = json.loads(card.read_text())
    if case == "empty_sha":
        data["weights_sha256"] = ""
    elif case == "no_sha":
        del data["weights_sha256"]
    elif case == "bad_sha":
        data["weights_sha256"] = "abc"
    elif case == "no_preset":
        del data["preset"]
    card.write_text(json.dumps(data))
    if case == "truncated":
        card.write_text(card.read_text()[:80])
    if case == "no_card":
        card.unlink()
        with faults.clear(ModelCardError, *causes):
            verify_shipped_weights(weights, shipped=True)
        return
    with faults.clear(ModelCardError, str(card), *causes):
        pretrained.load_shipped("student")


def test_an_empty_checksum_does_not_let_swapped_weights_through_the_cli(faults, tmp_path,
                                                                        capsys):
    weights = tmp_path / "student.pth"
    shutil.copy(pretrained.ASSETS / "student_distilled.pth", weights)  # swapped weights
    data = json.loads((pretrained.ASSETS / "student_card.json").read_text())
    data["weights_sha256"] = ""
    (tmp_path / "student_card.json").write_text(json.dumps(data))
    faults.cli(["evaluate", "train_student", str(weights), "--num-samples", "1", "--work-dir",
                str(tmp_path / "ev")], capsys, "student_card.json", "'weights_sha256'")


@pytest.mark.parametrize("case, causes", [
    ("detector_into_export", ["does not fit Distiller", "detector checkpoint"]),
    ("distill_into_student_eval", ["distillation checkpoint", "bevdistill export"]),
    ("bare_tensor", ["contains no state dict"]),
    ("optimizer_only", ["are not tensors"]),
    ("text", ["not a PyTorch checkpoint", "b'just som'"]),
])
def test_the_wrong_kind_of_checkpoint(faults, tmp_path, capsys, distill_run, case, causes):
    if case == "detector_into_export":
        argv = ["export", "distill_ci", str(pretrained.ASSETS / "student.pth"),
                str(tmp_path / "out.pth")]
    elif case == "distill_into_student_eval":
        argv = ["evaluate", "train_student_ci", str(distill_run), "--num-samples", "1",
                "--work-dir", str(tmp_path / "ev")]
    else:
        path = tmp_path / "odd.pth"
        if case == "text":
            path.write_text("just some notes\n")
        else:
            torch.save(torch.ones(3) if case == "bare_tensor" else
                       {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, path)
        argv = ["evaluate", "train_student_ci", str(path), "--work-dir", str(tmp_path / "ev")]
    faults.cli(argv, capsys, *causes)


# --- data ------------------------------------------------------------------------------------


def _edit_info(tmp_path: Path, edit) -> Path:
    info, _ = _frame(tmp_path)
    data = pickle.loads(info.read_bytes())
    edit(data["data_list"][0])
    info.write_bytes(pickle.dumps(data))
    return info


@pytest.mark.parametrize("case, causes", [
    ("no_lidar_points", ["sample 0", "lidar_points.lidar_path"]),
    ("no_lidar_path", ["lidar_points.lidar_path"]),
    ("nan_centre", ["instance 1", "NaN or inf"]),
    ("short_box", ["instance 0", "has 5 numbers"]),
    ("no_label", ["instance 2", "bbox_label_3d"]),
    ("instances_none", ["instances must be a list", "NoneType"]),
    ("zero_lidar2ego", ["lidar2ego", "not a rotation"]),
    ("scaled_lidar2ego", ["lidar2ego", "not a rotation"]),
    ("mirrored_lidar2ego", ["lidar2ego", "not a rotation"]),
    ("nan_lidar2ego", ["lidar2ego", "NaN or inf"]),
])
def test_corrupt_samples_name_the_file_the_sample_and_the_key(faults, tmp_path, case, causes):
    def edit(sample):
        boxes = sample["instances"]
        if case == "no_lidar_points":
            del sample["lidar_points"]
        elif case == "no_lidar_path":
            del sample["lidar_points"]["lidar_path"]
        elif case == "nan_centre":
            boxes[1]["bbox_3d"][0] = float("nan")
        elif case == "short_box":
            boxes[0]["bbox_3d"] = boxes[0]["bbox_3d"][:5]
        elif case == "no_label":
            del boxes[2]["bbox_label_3d"]
        elif case == "instances_none":
            sample["instances"] = None
        else:
            m = np.eye(4)
            m[:3, :3] = {"zero_lidar2ego": 0.0, "scaled_lidar2ego": 2.0 * np.eye(3),
                         "mirrored_lidar2ego": np.diag([1.0, -1.0, 1.0]),
                         "nan_lidar2ego": np.full((3, 3), np.nan)}[case]
            sample["lidar_points"]["lidar2ego"] = m.tolist()

    info = _edit_info(tmp_path, edit)
    with faults.clear(InfoFileError, str(info), *causes):
        NuScenesReader(info)[0]


@pytest.mark.parametrize("size", [[0.0, 6.0, 2.5], [6.0, -1.0, 2.5]], ids=["zero", "negative"])
def test_a_degenerate_box_is_dropped_with_a_counted_warning(faults, tmp_path, size):
    def edit(sample):
        sample["instances"][3]["bbox_3d"][3:6] = size

    reader = NuScenesReader(_edit_info(tmp_path, edit))
    with pytest.warns(DataSanityWarning) as caught:
        sample = reader[0]
    assert len(sample["gt_boxes"]) == 3 and (sample["gt_boxes"][:, 3:6] > 0).all()
    assert reader.dropped_boxes == {0: 1}
    faults.check_message(str(caught[0].message), ["sample 0", "instances [3]", "dropped 1 box"])


def test_an_empty_scan_is_warned_about_and_counted(faults, tmp_path):
    from bevdistill.data import NuScenesBEVDataset

    info, _ = _frame(tmp_path)
    data = NuScenesBEVDataset(str(info), point_cloud_range=[30, 30, -5, 40, 40, 3],
                              align_forward=False)
    with pytest.warns(DataSanityWarning) as caught:
        item = data[0]
        data[0]  # the same scan again: counted once
    assert len(item["inputs"]["points"]) == 0 and data.empty_scans == {0}
    assert len(caught) == 1
    faults.check_message(str(caught[0].message), ["sample 0", "no LiDAR point", "point_cloud_range"])
