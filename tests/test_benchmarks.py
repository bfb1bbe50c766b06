"""The distillation benchmarks run end to end in their tiny --smoke mode and write the JSON
structure the reports rely on. No timing is asserted here: a shared CI machine cannot keep one."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import distill_gain, step_overhead
from bevdistill.models import build_detector

pytestmark = pytest.mark.filterwarnings("ignore")


def test_step_overhead_smoke(tmp_path):
    out = tmp_path / "so.json"
    step_overhead.main(["--smoke", "--options", "combined", "--out", str(out)])
    record = json.loads(out.read_text())
    for key in ("command", "git_commit", "date", "machine", "preset", "goal_ratio", "options"):
        assert key in record, key
    assert record["machine"]["cpu_count"] >= 1 and "torch" in record["machine"]
    assert record["command"].startswith("python -m benchmarks.step_overhead --smoke")
    (row,) = record["options"]
    assert row["option"] == "combined"
    for mode in ("reference", "distill"):
        assert row[mode]["wall_s"] > 0 and row[mode]["cpu_s"] > 0
        assert row["memory"][mode]["peak_rss"] > 0
    assert row["ratio_of_medians_wall"] == pytest.approx(
        row["distill"]["wall_s"] / row["reference"]["wall_s"])
    low, high = row["ratio_wall_iqr"]
    assert 0 < low <= row["ratio_wall"] <= high  # the paired ratio's median within its IQR
    assert isinstance(row["meets_goal"], bool)
    assert row["hook_points"] == ["pts_backbone", "pts_neck"]


def test_distill_gain_smoke_and_resume(tmp_path, capsys):
    teacher = build_detector(str(distill_gain.REPO_ROOT / "bevdistill" / "configs" /
                                 "experiments" / "train_teacher_ci.py"))
    ckpt = tmp_path / "teacher_ci.pth"
    torch.save({"state_dict": teacher.state_dict()}, ckpt)
    out, root = tmp_path / "dg.json", tmp_path / "runs"
    argv = ["--smoke", "--teacher-ckpt", str(ckpt), "--work-root", str(root), "--out", str(out)]
    distill_gain.main(argv)
    record = json.loads(out.read_text())
    assert record["preset"] == "smoke" and record["seeds"] == [0]
    assert record["budget"]["iters"] == 2
    assert set(record["runs"]) == {"baseline", "heatmap_kd"}
    assert record["teacher"]["mAP"] >= 0
    rows = {r["option"]: r for r in record["results"]}
    kd = rows["heatmap_kd"]
    assert kd["gain"] == pytest.approx(kd["mAP_mean"] - rows["baseline"]["mAP_mean"])
    for key in ("mAP_std", "AP_car_mean", "AP_pedestrian_mean", "AP_cyclist_mean",
                "gain_exceeds_2x_spread", "gain_std_paired"):
        assert key in kd, key
    assert "| heatmap_kd |" in record["markdown"] and "| teacher |" in record["markdown"]
    assert "model.distill.alpha_kd=5.0" in record["example_commands"]["heatmap_kd"]
    run_json = json.loads((root / "heatmap_kd" / "seed0" / "metrics.json").read_text())
    assert run_json["command"] == "distill" and run_json["max_iters"] == 2

    capsys.readouterr()
    distill_gain.main(argv)  # everything is done: nothing reruns, same numbers
    assert "3 of 3 runs already done; 0 to go" in capsys.readouterr().out
    assert json.loads(out.read_text())["results"] == record["results"]
