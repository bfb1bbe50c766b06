"""Notebook 6's run machinery (bevdistill.lesson): it trains the learner's step-5 loss where it
passed and the reference where it did not, feeds the Distiller's captures to it, and reports no
mAP from a short run."""

from __future__ import annotations

import nbformat
import pytest
import torch
from notebook_harness import NOTEBOOK_DIR, fill
from notebook_solutions import CORRECT, WRONG

from bevdistill import BEVFusionDistillationLoss, lesson

pytestmark = pytest.mark.filterwarnings("ignore")
NOTEBOOK_5 = NOTEBOOK_DIR / "05_distillation_loss.ipynb"


def _saved_notebook5(tmp_path, answers):
    nb = nbformat.read(NOTEBOOK_5, as_version=4)
    fill(nb, answers)
    path = tmp_path / "05_distillation_loss.ipynb"
    nbformat.write(nb, path)
    return path


def test_step5_loss_trains_the_learners_class_where_it_passed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")  # the lesson never raises on a failed answer
    answers = CORRECT["05_distillation_loss"]
    result = lesson.step5_loss(_saved_notebook5(tmp_path, answers))
    assert result.passed and result.impl is not BEVFusionDistillationLoss
    assert result.impl.__name__ == "MyDistillationLoss"
    assert "your MyDistillationLoss" in capsys.readouterr().out


def test_step5_loss_falls_back_to_the_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    unfilled = lesson.step5_loss(NOTEBOOK_5)
    assert not unfilled.passed and unfilled.impl is BEVFusionDistillationLoss
    assert "NOT IMPLEMENTED YET" in capsys.readouterr().out
    # the notebook tests' wrong answer to 5b, beside a correct 5a
    answers = {**CORRECT["05_distillation_loss"], **WRONG["05_distillation_loss"]}
    assert answers != CORRECT["05_distillation_loss"]
    result = lesson.step5_loss(_saved_notebook5(tmp_path, answers))
    assert not result.passed and result.impl is BEVFusionDistillationLoss
    with pytest.raises(FileNotFoundError, match="notebook 5"):
        lesson.step5_loss(tmp_path / "missing.ipynb")


def test_taught_loss_hands_the_heatmaps_apart():
    seen = {}

    class Recording(torch.nn.Module):
        def forward(self, s, t, s_heat=None, t_heat=None):
            seen.update(s=sorted(s), t=sorted(t), s_heat=s_heat, t_heat=t_heat)
            return {"loss_at.pts_neck": torch.tensor(1.0)}

    loss = lesson.TaughtLoss(Recording())
    heat = torch.zeros(1, 3, 4, 4)
    out = loss({"pts_neck": 1, lesson.KD_HOOK: heat}, {"pts_neck": 2, lesson.KD_HOOK: heat + 1})
    assert seen["s"] == seen["t"] == ["pts_neck"]
    assert seen["s_heat"] is heat and float(seen["t_heat"].mean()) == 1.0
    assert loss.loss_keys == ("loss_at.pts_neck",) and set(out) == {"loss_at.pts_neck"}
    with pytest.raises(ValueError, match="foreground"):
        loss({"pts_neck": 1}, {"pts_neck": 2}, mask=heat)
    assert loss.active()  # no schedule: every step runs the teacher


def test_loss_arguments_keep_what_the_class_accepts():
    distill = {"contrastive": "spatial", "feat_dim": 64, "alpha_kd": 5.0, "alpha_mse": 0.0}

    class Learner(torch.nn.Module):
        def __init__(self, student_channels, teacher_channels, feat_dim=128, temperature=0.07,
                     alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5):
            super().__init__()

    assert lesson.loss_arguments(Learner, distill) == {"feat_dim": 64, "alpha_kd": 5.0}
    assert lesson.loss_arguments(BEVFusionDistillationLoss, distill) == distill


def test_tutorial_settings_read_the_experiments_terms():
    from bevdistill.engine import load_experiment

    terms = load_experiment("distill").model["terms"]
    settings = lesson.tutorial_settings(terms)
    by_name = {t["name"]: t for t in terms}
    assert settings == {"alpha_crd": by_name["crd"]["weight"], "alpha_at": by_name["at"]["weight"],
                        "alpha_kd": by_name["kd"]["weight"],
                        "feat_dim": by_name["crd"]["connector"]["out_dim"],
                        "temperature": by_name["crd"]["loss"]["temperature"]}
    assert lesson.tutorial_settings([dict(name="mse", weight=2.0)]) == {}


def test_a_short_pair_trains_the_loss_and_reports_no_map(tmp_path):
    runs = lesson.train_pair(BEVFusionDistillationLoss, "short", tmp_path)
    rows = lesson.run_report(runs, "short")
    assert [r["run"] for r in rows] == ["student alone", "distilled: BEVFusionDistillationLoss"]
    assert all(r["every loss term finite"] for r in rows)
    assert rows[0]["distillation terms"] == "none"
    assert "loss_kd.heatmap" in rows[1]["distillation terms"]
    assert not any("mAP" in key for r in rows for key in r)  # a few iterations: no mAP
    runs["alone"].metrics = {"bev/mAP": 0.1}
    medium = lesson.run_report(runs, "medium")
    assert "tuning mAP after 3 it. (60 scenes)" in medium[0]
    with pytest.raises(ValueError, match="mode must be one of"):
        lesson.mode_options("long", tmp_path)


def test_the_pair_is_the_scarce_labels_scenario_of_the_benchmark():
    """The learner's runs are the benchmark's fair comparison in small: the student alone sees
    the labelled scenes only, the distilled one every scan, the same ones labelled; the teacher
    is the one that scenario ships."""
    from benchmarks.distill_gain import SCENARIOS

    scenario = SCENARIOS["scarce_labels"]
    assert (lesson.ALONE, lesson.DISTILLED) == (scenario["student"], scenario["distill"])
    assert lesson.LABELLED == scenario["labelled"]
    assert scenario["teacher_ckpt"].stem == lesson.TEACHER
    alone, distilled = lesson.scarce_label_options("medium")
    assert alone == {"train_dataset.num_samples": 16}
    assert distilled == {"train_dataset.num_samples": 400, "train_dataset.labelled_samples": 16}
    alone, distilled = lesson.scarce_label_options("short")  # 6 scenes: half labelled
    assert alone["train_dataset.num_samples"] == distilled["train_dataset.labelled_samples"] == 3
