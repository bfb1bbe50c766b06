"""The term diagnosis: its CKA and foreground cells are right, and the benchmark runs end to end
in its smoke mode, writes the structure the book reads, and resumes without rerunning."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import term_diagnosis
from benchmarks.term_probe import box_cells, linear_cka
from bevdistill.models import build_detector
from bevdistill.viz.diagnosis import diagnosis_findings, diagnosis_markdown, diagnosis_numbers

pytestmark = pytest.mark.filterwarnings("ignore")


def _features(n=500, p=16, seed=0):
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_a_map_with_itself_is_one():
    x = _features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_ignores_rotations_scales_and_shifts():
    x = _features()
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1),
                                        dtype=torch.float64))
    y = x[:, :8] @ torch.randn(8, 12, generator=torch.Generator().manual_seed(2),
                               dtype=torch.float64)
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(3.7 * x + 5.0, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x, 0.01 * y) == pytest.approx(base, rel=1e-9)


def test_cka_tells_related_from_unrelated_maps():
    x = _features(n=4000)
    related = x[:, :8] @ torch.randn(8, 12, generator=torch.Generator().manual_seed(3),
                                     dtype=torch.float64)
    unrelated = _features(n=4000, p=12, seed=4)
    assert linear_cka(x, related) > 0.4
    assert linear_cka(x, unrelated) < 0.02
    # not invariant to a per-channel rescaling (only isotropic scales): that would be a bug
    # if it were, as CKA would then ignore which channels carry the variance
    stretched = x * torch.linspace(0.1, 10, 16, dtype=torch.float64)
    assert not math.isclose(linear_cka(stretched, related), linear_cka(x, related), rel_tol=1e-3)


def test_cka_rejects_what_it_cannot_compare():
    x = _features()
    with pytest.raises(ValueError, match="same N"):
        linear_cka(x, x[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        linear_cka(x[:1], x[:1])
    with pytest.raises(ValueError, match="constant"):
        linear_cka(x, torch.ones(500, 3, dtype=torch.float64))


def test_box_cells_marks_the_cells_inside_boxes():
    rng = [-8.0, -8.0, -5.0, 8.0, 8.0, 3.0]  # 16 x 16 cells of 1 m
    # a 4 m x 2 m box along x at (2, -3): rows y in (-4, -2), columns x in (0, 4)
    box = torch.tensor([[2.0, -3.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    mask = box_cells(box, (16, 16), rng)
    assert mask.sum() == 8 and mask[4:6, 8:12].all()
    # turned by 90 degrees it lies along y: 2 columns, 4 rows
    turned = box_cells(box.clone().index_fill_(1, torch.tensor([6]), math.pi / 2), (16, 16), rng)
    assert turned.sum() == 8 and turned[3:7, 9:11].all()
    # a box smaller than a cell still has the cell that holds its centre
    tiny = box_cells(torch.tensor([[0.3, 0.3, 0.0, 0.2, 0.2, 1.0, 0.0]]), (16, 16), rng)
    assert tiny.sum() == 1 and tiny[8, 8]
    assert not box_cells(torch.zeros(0, 7), (16, 16), rng).any()


def test_smoke_run_writes_the_diagnosis_and_resumes(tmp_path, capsys):
    teacher = build_detector(str(term_diagnosis.REPO_ROOT / "bevdistill" / "configs" /
                                 "experiments" / "train_teacher_ci.py"))
    ckpt = tmp_path / "teacher_ci.pth"
    torch.save({"state_dict": teacher.state_dict()}, ckpt)
    out = tmp_path / "td.json"
    argv = ["--smoke", "--teacher-ckpt", str(ckpt), "--work-root", str(tmp_path / "runs"),
            "--out", str(out), "--arms", "without_crd"]
    term_diagnosis.main(argv)
    result = json.loads(out.read_text())
    assert result["world_version"] == 1 and "world version 1" in result["world_note"]
    assert [t["term"] for t in result["recipe"]] == ["crd", "at", "kd"]
    assert result["arms_done"] == ["alone", "taught", "without_crd"]
    assert not result["complete"] and "only_kd" in result["arms_not_run"]
    assert result["arms"]["without_crd"]["weights"]["crd"] == 0.0
    # every run is the project's command with the teacher's own world
    runs = {r["name"]: r for r in result["runs"]}
    assert set(runs) == {"teacher/tune", "alone", "taught", "without_crd"}
    for run in runs.values():
        assert "world_version=1" in run["command"] and run["portable_command"].startswith("python")
    assert "model.terms.0.weight=0.0" in runs["without_crd"]["command"]
    # gradients: the detection loss against itself, each key and term at the start and along
    # the curves; total = detection + distillation
    grads = {(r["arm"], r["iter"], r["key"]): r for r in result["gradients"]}
    assert grads[("init", 0, "detection")]["param_ratio_to_detection"] == pytest.approx(1.0)
    assert grads[("init", 0, "detection")]["cosine_to_detection"] == pytest.approx(1.0, abs=1e-5)
    for arm, it in (("init", 0), ("taught", 2), ("taught", 4), ("alone", 4), ("without_crd", 4)):
        for key in ("term:crd", "term:at", "term:kd", "loss_kd.heatmap", "total"):
            assert grads[(arm, it, key)]["param_norm"] > 0, (arm, it, key)
    assert ("without_crd", 2, "detection") not in grads  # other arms: at the end only
    # a key reaches only the maps upstream of its layer
    assert "map_norm.pts_neck" not in grads[("init", 0, "loss_crd.pts_backbone")]
    assert grads[("init", 0, "loss_kd.heatmap")]["map_norm.pts_backbone"] > 0
    # CKA per layer, over all cells and the foreground, in [0, 1]
    cka = {(r["arm"], r["iter"], r["layer"], r["cells"]) for r in result["cka"]}
    assert {(a, it, la, c) for a, it in (("init", 0), ("taught", 4))
            for la in ("pts_backbone", "pts_neck", "heatmap")
            for c in ("all", "foreground")} <= cka
    assert all(r["cka"] is None or 0.0 <= r["cka"] <= 1.0 + 1e-9 for r in result["cka"])
    effects = {r["arm"]: r for r in result["effects"]}
    assert effects["taught"]["gain_vs_alone"] == pytest.approx(
        effects["taught"]["tune_mAP"] - effects["alone"]["tune_mAP"])
    # the book's renderers read the file
    numbers = diagnosis_numbers(result)
    assert numbers["grad_kd_init"] == grads[("init", 0, "term:kd")]["param_ratio_to_detection"]
    assert "**Partial**" in result["markdown"]
    findings = diagnosis_findings(result)  # the book's bullets, every figure read from the file
    assert f"scores {numbers['map_taught']:.3f} tuning mAP against {numbers['map_alone']:.3f}" \
        in findings
    assert f"crd {numbers['map_without_crd'] - numbers['map_taught']:+.3f}" in findings
    assert f"kd {numbers['grad_kd_init']:.2f}x at the start" in findings
    assert "only_kd" not in findings and "Each term alone" not in findings  # not run
    assert result["markdown"] == diagnosis_markdown(result)

    capsys.readouterr()
    term_diagnosis.main(argv)  # everything is done: reused, same figures
    assert "0 to go" in capsys.readouterr().out
    again = json.loads(out.read_text())
    assert again["gradients"] == result["gradients"] and again["cka"] == result["cka"]
    assert all(r["reused"] for r in again["runs"])


def test_unknown_arms_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown arms"):
        term_diagnosis.main(["--smoke", "--teacher-ckpt", __file__, "--arms", "only_mse",
                             "--work-root", str(tmp_path), "--out", str(tmp_path / "x.json")])


def test_plot_draws_each_term_and_each_run(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from bevdistill.viz.diagnosis import plot_diagnosis

    result = {"budget": {"iters": 4}, "recipe": [{"term": "kd", "weight": 5.0}],
              "arms_done": ["alone", "taught"],
              "gradients": [{"arm": "init", "iter": 0, "key": "term:kd",
                             "param_ratio_to_detection": 0.2},
                            {"arm": "taught", "iter": 4, "key": "term:kd",
                             "param_ratio_to_detection": 0.1},
                            {"arm": "alone", "iter": 4, "key": "term:kd",
                             "param_ratio_to_detection": 9.0}],
              "cka": [{"arm": a, "iter": i, "layer": "pts_neck", "cells": "foreground",
                       "cka": v} for a, i, v in (("init", 0, 0.1), ("alone", 4, 0.3),
                                                 ("taught", 4, 0.5))]}
    left, right = plot_diagnosis(result)
    (line,) = left.get_lines()[:1]
    assert list(line.get_ydata()) == [0.2, 0.1]  # the full recipe's run, not the alone one's
    assert [p.get_height() for p in right.patches] == [0.1, 0.3, 0.5]
