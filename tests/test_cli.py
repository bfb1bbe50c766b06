"""The ``bevdistill`` command line end to end on the tiny CI experiments: train a teacher, distil
into a student, export the student, evaluate; metrics JSON records; clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bevdistill import cli
from bevdistill.cli import main
from bevdistill.engine.checkpoint import allow_mmengine_checkpoint_globals

REPO = Path(__file__).resolve().parent.parent
SMALL = ["train_dataset.num_samples=8", "val_dataset.num_samples=2"]


def bevdistill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bevdistill", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One teacher run and one distillation run from it, both through ``python -m bevdistill``."""
    root = tmp_path_factory.mktemp("cli")
    teacher = bevdistill("train", "teacher", "train_teacher_ci", "--work-dir", "teacher",
                         "--max-iters", "4", "--cfg-options", *SMALL, cwd=root)
    teacher_ckpt = root / "teacher" / "iter_4.pth"
    distill = bevdistill("distill", "distill_ci", "--work-dir", "distill", "--max-iters", "4",
                         "--cfg-options", *SMALL, f"model.teacher_ckpt={teacher_ckpt}", cwd=root)
    return {"root": root, "teacher": teacher, "distill": distill, "teacher_ckpt": teacher_ckpt}


def test_train_writes_a_metrics_record(runs):
    record = json.loads((runs["root"] / "teacher" / "metrics.json").read_text())
    assert record["command"] == "train" and record["role"] == "teacher"
    assert record["config"] == "train_teacher_ci"
    assert record["argv"].startswith("bevdistill train teacher train_teacher_ci")
    assert record["seed"] == 0 and record["iters_done"] == 4 and record["world_size"] == 1
    assert record["world_version"] == 2  # the experiments' world: objects with a front and a back
    assert record["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    assert record["duration_s"] > 0 and record["torch"] == torch.__version__
    assert record["device"] == ("cpu" if not torch.cuda.is_available() else record["device"])
    metrics = record["metrics"]
    for key in ("mAP", "AP_car", "AP_pedestrian", "AP_cyclist", "ATE"):
        assert any(k.split("/")[-1] == key for k in metrics), (key, sorted(metrics))
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if "AP" in k)
    assert record["checkpoint"] == str(runs["teacher_ckpt"])


def test_heading_error_scores_a_run_on_its_own_world(runs, tmp_path):
    from benchmarks.heading_error import main as heading_error

    out = tmp_path / "heading.json"
    record = heading_error(["--models", "--runs", f"t={runs['root'] / 'teacher'}", "--scenes", "1",
                            "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    model = record["models"]["t"]
    assert model["world_version"] == 2 and model["dir_classifier"] is False
    assert model["iters_done"] == 4 and model["command"].startswith("bevdistill train teacher")
    assert set(record["metric"]["t"]) >= {"mAP", "AOE", "AOE_car", "AP_car"}
    assert "| t | 2 | no | 4 |" in record["markdown"]


def test_long_steps_show_progress(runs):
    assert re.search(r"train .*4/4", runs["teacher"].stderr)
    assert re.search(r"val .*1/1", runs["teacher"].stderr)


def test_distill_records_teacher_and_loads_a_runner_checkpoint(runs):
    """The teacher is a full mmengine checkpoint (message hub, optimizer...). The Distiller reads
    it with weights_only=True and raises if it cannot, so the run succeeding proves the
    allow-list works for teacher loading too."""
    record = json.loads((runs["root"] / "distill" / "metrics.json").read_text())
    assert record["role"] == "distill" and record["teacher_ckpt"] == str(runs["teacher_ckpt"])
    log = runs["distill"].stdout + runs["distill"].stderr
    assert "loss_at" in log or "loss_crd" in log  # distillation terms were trained


def test_export_then_evaluate_the_student_alone(runs, tmp_path, capsys):
    distill_ckpt = runs["root"] / "distill" / "iter_4.pth"
    out = tmp_path / "student.pth"
    assert main(["export", "distill_ci", str(distill_ckpt), str(out)]) == 0
    export_record = json.loads(Path(f"{out}.json").read_text())
    assert export_record["command"] == "export" and export_record["out"] == str(out)
    allow_mmengine_checkpoint_globals()
    exported = torch.load(out, weights_only=True)["state_dict"]
    trained = torch.load(distill_ckpt, weights_only=True)["state_dict"]
    assert exported.keys() == {k[len("student."):] for k in trained if k.startswith("student.")}
    assert all(torch.equal(v, trained[f"student.{k}"]) for k, v in exported.items())

    assert main(["evaluate", "train_student_ci", str(out), "--num-samples", "2",
                 "--work-dir", str(tmp_path / "eval_student")]) == 0
    assert main(["evaluate", "distill_ci", str(distill_ckpt), "--num-samples", "2",
                 "--work-dir", str(tmp_path / "eval_distill")]) == 0
    alone = json.loads((tmp_path / "eval_student" / "metrics.json").read_text())
    within = json.loads((tmp_path / "eval_distill" / "metrics.json").read_text())
    assert alone["command"] == "evaluate" and alone["num_samples"] == 2
    assert alone["metrics"] == within["metrics"]  # the exported student predicts identically
    assert "val" in capsys.readouterr().err  # evaluation progress bar


# --- errors: what was wrong and how to fix it -------------------------------------------------


def error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_unknown_config_lists_the_shipped_experiments(capsys):
    err = error_of(["train", "student", "no_such_config"], capsys)
    assert "no_such_config" in err and "train_student_ci" in err and "distill" in err


def test_missing_checkpoint_is_named(capsys, tmp_path):
    missing = tmp_path / "nowhere.pth"
    err = error_of(["evaluate", "train_student_ci", str(missing)], capsys)
    assert str(missing) in err and "does not exist" in err


def test_missing_teacher_checkpoint_is_named(capsys, tmp_path):
    missing = tmp_path / "teacher.pth"
    err = error_of(["distill", "distill_ci", "--cfg-options", f"model.teacher_ckpt={missing}"],
                   capsys)
    assert str(missing) in err and "bevdistill train teacher" in err


def test_role_mismatch_says_which_command_to_run(capsys):
    err = error_of(["train", "teacher", "train_student_ci"], capsys)
    assert "bevdistill train student train_student_ci" in err


def test_export_needs_a_distill_config(capsys, runs, tmp_path):
    err = error_of(["export", "train_teacher_ci", str(runs["teacher_ckpt"]),
                    str(tmp_path / "x.pth")], capsys)
    assert "distill config" in err


def test_evaluating_a_distill_checkpoint_with_the_student_config_points_to_export(capsys, runs):
    err = error_of(["evaluate", "train_student_ci", str(runs["root"] / "distill" / "iter_4.pth"),
                    "--num-samples", "1", "--work-dir", str(runs["root"] / "bad_eval")], capsys)
    assert "distillation checkpoint" in err and "bevdistill export" in err


def test_bad_values_are_rejected(capsys, runs):
    err = error_of(["evaluate", "train_teacher_ci", str(runs["teacher_ckpt"]),
                    "--num-samples", "0"], capsys)
    assert "--num-samples must be >= 1" in err
    err = error_of(["train", "student", "train_student_ci", "--cfg-options", "schedule.lrr=1"],
                   capsys)
    assert "lrr" in err and "known" in err


def test_list_names_the_experiments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("train_teacher", "train_student", "distill", "distill_ci"))
    assert "mmdet3d/centerpoint_pillar_cpu.py" in out


def test_a_shipped_teacher_of_another_world_is_flagged():
    import warnings

    from bevdistill import cli, pretrained
    from bevdistill.engine.runner import load_experiment

    exp = load_experiment("distill")  # teaches with the shipped teacher
    world = pretrained.shipped_world_version(exp.model.teacher_ckpt)
    exp.train_dataset.world_version = 2 if world == 1 else 1
    with pytest.warns(UserWarning, match=f"trained on world_version {world}"):
        cli._check_teacher_ckpt(exp)
    exp.train_dataset.world_version = world
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cli._check_teacher_ckpt(exp)


def test_the_record_commit_is_read_before_the_command_runs(monkeypatch):
    """A long run records the commit it started from: bevdistill.engine.report (which reads
    the commit once, at import) is imported before the command runs, not when the record is
    written at the end, after the checkout may have moved on."""
    seen = {}
    monkeypatch.delitem(sys.modules, "bevdistill.engine.report", raising=False)
    monkeypatch.setitem(cli.COMMANDS, "list", lambda args, argv: seen.update(
        imported="bevdistill.engine.report" in sys.modules))
    main(["list"])
    assert seen == {"imported": True}
