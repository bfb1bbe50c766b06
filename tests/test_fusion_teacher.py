"""The fusion-teacher benchmark (issue 22, item 3): its binning of ground-truth objects, the
black-image control and the whole benchmark on the CI pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

RANGE = (-16.0, -16.0, -5.0, 16.0, 16.0, 3.0)


def test_found_in_bins_counts_each_object_in_its_bin():
    from bevdistill.viz.gain import bin_labels, found_in_bins

    # points inside six boxes; which of them a model found
    points = [0, 1, 4, 5, 19, 20, 57]
    found = [False, True, False, True, True, False, True]
    assert found_in_bins(points, found, (0, 1, 5, 20)) == [(0, 1), (1, 2), (2, 2), (1, 2)]
    assert bin_labels((0, 1, 5, 20), integer=True) == ["0", "1-4", "5-19", "20+"]
    # a lower edge belongs to its bin, the upper to the next: 10.0 m is in 10-20 m
    distance = [0.5, 9.99, 10.0, 31.9, 32.0, 44.0]
    assert found_in_bins(distance, [True] * 6, (0, 10, 20, 32)) == [(2, 2), (1, 1), (1, 1),
                                                                     (2, 2)]
    assert bin_labels((0.0, 10.0, 20.0, 32.0), unit="m") == ["0-10 m", "10-20 m", "20-32 m",
                                                           "32+ m"]
    # classes are bins of width one
    assert found_in_bins([2, 0, 2, 1], [True, True, False, False], range(3)) == [
        (1, 1), (0, 1), (1, 2)]


def test_found_in_bins_refuses_to_drop_objects_or_misread_its_inputs():
    from bevdistill.viz.gain import found_in_bins

    with pytest.raises(ValueError, match="below the first edge"):
        found_in_bins([-1.0, 3.0], [True, False], (0, 5))
    with pytest.raises(ValueError, match="increasing"):
        found_in_bins([1.0], [True], (0, 5, 5))
    with pytest.raises(ValueError, match="one length"):
        found_in_bins([1.0, 2.0], [True], (0,))


def test_blank_images_zero_every_image_and_leave_the_lidar_alone():
    from bevdistill.data import SyntheticBEVDataset

    kwargs = dict(split="test", num_samples=2, point_cloud_range=RANGE, lidar=dict(n_rings=16),
                  cameras=dict(width=64, height=30), augment=True)
    seen, blank = SyntheticBEVDataset(**kwargs), SyntheticBEVDataset(**kwargs, blank_images=True)
    for i in range(2):
        a, b = seen[i]["inputs"], blank[i]["inputs"]
        assert a["imgs"].any() and not b["imgs"].any()  # rendered, then black
        assert b["imgs"].shape == a["imgs"].shape and b["imgs"].dtype == a["imgs"].dtype
        for key in ("points", "cam2img", "lidar2cam"):
            assert torch.equal(a[key], b[key]), key
        for key in ("gt_boxes", "gt_labels"):
            assert torch.equal(seen[i]["data_samples"][key], blank[i]["data_samples"][key])
    with pytest.raises(ValueError, match="set cameras too"):
        SyntheticBEVDataset(split="test", num_samples=1, point_cloud_range=RANGE,
                            blank_images=True)


def test_the_evaluate_cli_reads_blank_images_from_cfg_options():
    """The benchmark's control is an ordinary config key the experiment check accepts."""
    from mmengine.registry import DATASETS

    from benchmarks._distill_options import as_the_cli_reads
    from benchmarks.fusion_teacher import BLANK_OPTION
    from bevdistill.engine.runner import load_experiment

    exp = load_experiment("train_teacher_fusion_ci", as_the_cli_reads(
        {**BLANK_OPTION, "val_dataset.num_samples": 1}))
    dataset = DATASETS.build(exp.val_dataset.to_dict())
    assert dataset.blank_images and not dataset[0]["inputs"]["imgs"].any()


def test_fusion_teacher_smoke_and_resume(tmp_path, capsys):
    """The benchmark end to end on the CI pair: every row carries every field, the black-image
    control is scored with black images, and a second invocation reuses every run."""
    from benchmarks import fusion_teacher
    from bevdistill.data.classes import CLASS_NAMES

    out, root = tmp_path / "ft.json", tmp_path / "runs"
    argv = ["--smoke", "--work-root", str(root), "--out", str(out)]
    fusion_teacher.main(argv)
    record = json.loads(out.read_text())
    assert [r["model"] for r in record["summary"]] == ["fusion", "lidar_only",
                                                       "fusion_blank_images"]
    for row in record["summary"]:
        assert {"model", "split", "mAP_mean", "seed_spread", "seeds", "mAP_per_seed",
                "per_class", "found_by_distance", "found_by_points",
                *(f"AP_{c}_mean" for c in CLASS_NAMES)} <= set(row)
        assert row["split"] == "test" and row["seeds"] == [0]
        assert set(row["per_class"]) == set(CLASS_NAMES)
        assert list(row["found_by_points"]) == ["0", "1-4", "5-19", "20+"]
        assert list(row["found_by_distance"]) == ["0-10 m", "10-20 m", "20-32 m", "32+ m"]
        objects = sum(b["objects"] for b in row["found_by_points"].values())
        assert objects > 0
        assert objects == sum(b["objects"] for b in row["found_by_distance"].values()) \
            == sum(c["objects"] for c in row["per_class"].values())
    assert record["difference"]["mAP_mean"] == pytest.approx(
        record["summary"][0]["mAP_mean"] - record["summary"][1]["mAP_mean"])
    assert record["difference"]["exceeds_2x_spread"] is False  # one seed: no spread
    assert set(record["plateau"]) == {"fusion", "lidar_only"}
    assert record["seconds_per_iter"]["ratio_fusion_to_lidar_only"] > 0
    assert [h["iter"] for h in record["curves"]["fusion"]["0"]] == [2, 4]
    assert "| fusion_blank_images |" in record["markdown"]
    runs = {r["name"]: r for r in record["runs"]}
    assert set(runs) == {"fusion/seed0", "fusion/seed0/test", "fusion/seed0/test_blank_images",
                         "lidar_only/seed0", "lidar_only/seed0/test"}
    assert "val_dataset.blank_images=True" in runs["fusion/seed0/test_blank_images"]["command"]
    assert "blank_images" not in runs["fusion/seed0/test"]["command"]
    assert runs["fusion/seed0"]["command"].split()[2:5] == ["train", "teacher",
                                                            "train_teacher_fusion_ci"]
    for run in record["runs"]:
        assert len(run["commit"]) == 40 and not run["reused"]
        assert {"dirty", "started", "duration_s", "portable_command"} <= set(run)

    # the breakdowns come from in-process predictions that must score what the evaluate runs
    # scored: a model or scenes other than the scored ones are refused
    preset = fusion_teacher.PRESETS["smoke"]
    scores = {r["model"]: {0: {"mAP": r["mAP_per_seed"][0]}} for r in record["summary"]}
    scores["lidar_only"][0]["mAP"] += 0.05
    with pytest.raises(RuntimeError, match="lidar_only seed 0: the in-process predictions"):
        fusion_teacher.breakdowns(fusion_teacher.SMOKE_MODELS, preset, [0], root,
                                  root.parent / "scan_cache", scores)

    capsys.readouterr()
    fusion_teacher.main(argv)
    printed = capsys.readouterr().out
    assert "5 of 5 runs already done; 0 to go" in printed and "start " not in printed
    again = json.loads(out.read_text())
    assert again["summary"] == record["summary"] and all(r["reused"] for r in again["runs"])


def test_show_benchmark_prints_the_fusion_teacher_table(tmp_path, monkeypatch):
    """The book's Results page shows the file through show_benchmark: its own table."""
    from bevdistill.viz.results import benchmark_markdown

    table = "| model | mAP |\n|---|---|\n| fusion | 0.5 |"
    text = benchmark_markdown({"command": "python -m benchmarks.fusion_teacher", "markdown": table,
                               "summary": [{"model": "fusion", "per_class": {}}],
                               "runs": [{"name": "x"}]}, "fusion_teacher")
    assert table in text and "benchmarks.fusion_teacher" in text


def test_breakdown_bins_one_model_and_seed():
    from benchmarks.fusion_teacher import breakdown

    objects = {"label": np.array([0, 1, 0]), "distance": np.array([3.0, 15.0, 40.0]),
               "points": np.array([0, 7, 30])}
    got = breakdown(objects, np.array([True, False, True]))
    assert got["per_class"] == {"car": (2, 2), "pedestrian": (0, 1), "cyclist": (0, 0)}
    assert got["found_by_distance"] == {"0-10 m": (1, 1), "10-20 m": (0, 1), "20-32 m": (0, 0),
                                        "32+ m": (1, 1)}
    assert got["found_by_points"] == {"0": (1, 1), "1-4": (0, 0), "5-19": (0, 1), "20+": (1, 1)}
