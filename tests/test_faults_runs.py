"""Fault suite, issue 23: runs that trample each other, and what ``--resume`` continues.

Before the fix two runs in one work dir both exited 0 with one's checkpoints and metrics
replacing the other's; ``--resume`` with a longer ``--max-iters`` kept the learning rate frozen
at the old schedule's end while the record claimed the new schedule; resuming another
experiment's run ended 94 lines later in an optimizer shape error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import DEAD_PID, QUIET, Faults

from bevdistill.cli import main as cli
from bevdistill.engine.lock import LOCK_NAME, WorkDirBusyError, acquire, release
from bevdistill.engine.runner import load_experiment, make_runner

REPO = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time\nfrom bevdistill.engine.lock import work_dir_lock\n"
        "with work_dir_lock(sys.argv[1], ['train', 'student', 'holder']):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")


@pytest.fixture
def faults(record_property) -> Faults:
    return Faults(record_property)


@pytest.fixture
def holder(tmp_path, faults):
    """A live process holding ``tmp_path/w``'s lock (as a training run would)."""
    work = tmp_path / "w"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, work
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_live_run_in_one_work_dir_is_refused(faults, holder, capsys):
    proc, work = holder
    faults.cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters",
                "2", "--cfg-options", *QUIET], capsys,
               "in use by a live run", f"PID {proc.pid}", "started", "another --work-dir")
    assert not (work / "metrics.json").exists() and not list(work.glob("iter_*.pth"))
    assert json.loads((work / LOCK_NAME).read_text())["pid"] == proc.pid  # still the holder's


def test_sigterm_releases_the_lock_and_still_ends_the_process(faults, holder):
    proc, work = holder
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == -signal.SIGTERM
    except subprocess.TimeoutExpired:
        faults.record("fault", "hang")
        raise
    assert not (work / LOCK_NAME).exists()
    faults.handled()


def test_a_stale_lock_is_taken_over_with_a_message(faults, tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / LOCK_NAME).write_text(json.dumps(dict(pid=DEAD_PID, host=os.uname().nodename,
                                                  started=time.time() - 60, command="old run")))
    assert cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters",
                "2", "--cfg-options", *QUIET]) == 0
    err = capsys.readouterr().err
    assert all(s in err for s in ("taking over the stale lock", f"PID {DEAD_PID}",
                                  "no longer runs")), err
    assert not (work / LOCK_NAME).exists()  # released at the end of the run
    faults.handled()


def test_a_reused_pid_does_not_hold_a_lock(faults, tmp_path):
    """The lock records the holder's start time: a live process with that PID but another start
    (the PID was reused) is not the holder."""
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(
        pid=os.getppid(), host=os.uname().nodename, started=0.0, start_ticks=1, command="old")))
    said = []
    path = acquire(tmp_path, log=said.append)
    assert path is not None and "stale lock" in said[0]
    with pytest.raises(WorkDirBusyError, match=f"PID {os.getpid()}"):
        acquire(tmp_path)  # now held by this live process
    release(path)
    assert not path.exists()
    faults.handled()


def test_an_error_inside_the_run_releases_the_lock(faults, tmp_path, capsys):
    work = tmp_path / "w"
    faults.cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters",
                "4", "--cfg-options", "schedule.lr=1e8", "schedule.grad_clip=0", *QUIET],
               capsys, "diverged")
    assert not (work / LOCK_NAME).exists()


# --- resume --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """train_student_ci for 4 of 4 iterations (checkpoints at 2 and 4)."""
    work = tmp_path_factory.mktemp("resume") / "work"
    make_runner(load_experiment("train_student_ci", dict(log_level="WARNING")), work,
                max_iters=4).train()
    return work


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    work = tmp_path / "work"
    shutil.copytree(run, work)
    (work / "last_checkpoint").write_text(str(work / "iter_4.pth"))
    return work


def _lrs(runner) -> list[float]:
    return [float(v) for v in runner.message_hub.get_scalar("train/lr").data[0]]


def test_resume_with_a_longer_schedule_rebuilds_the_learning_rate(faults, tmp_path, short_run,
                                                                  capsys):
    work = _copy(short_run, tmp_path)
    assert cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters",
                "8", "--resume", "--cfg-options", "log_level=INFO"]) == 0
    out = capsys.readouterr()
    said = out.out + out.err
    assert all(s in said for s in ("the learning-rate schedule changed", "max_iters 4 -> 8",
                                   "rebuilt", "iteration 4")), said
    record = json.loads((work / "metrics.json").read_text())
    assert record["iters_done"] == 8 and record["schedule"]["max_iters"] == 8
    assert record["resume"]["lr_schedule"] == {"max_iters": [4, 8]}
    assert record["resume"]["from_iter"] == 4
    # The resumed run continues on the 8-iteration schedule, where a fresh run is at iteration 5.
    fresh = make_runner(load_experiment("train_student_ci", dict(log_level="WARNING")),
                        tmp_path / "fresh", max_iters=8)
    fresh.train()
    assert record["resume"]["lr_at_resume"] == pytest.approx(_lrs(fresh)[4], rel=1e-9)
    faults.handled()


def test_resume_with_another_learning_rate_uses_it(faults, tmp_path, short_run):
    work = _copy(short_run, tmp_path)
    runner = make_runner(load_experiment("train_student_ci", dict(
        log_level="WARNING", schedule=dict(lr=1e-3))), work, resume=True, max_iters=6)
    runner.train()
    fresh = make_runner(load_experiment("train_student_ci", dict(
        log_level="WARNING", schedule=dict(lr=1e-3))), tmp_path / "fresh", max_iters=6)
    fresh.train()
    assert runner.resume_report["lr_schedule"]["lr"] == [5e-3, 1e-3]
    assert _lrs(runner)[-2:] == pytest.approx(_lrs(fresh)[-2:], rel=1e-9)
    faults.handled()


def test_resume_of_another_experiments_run_is_refused_in_one_line(faults, tmp_path, short_run,
                                                                   capsys):
    work = _copy(short_run, tmp_path)
    err = faults.cli(["train", "teacher", "train_teacher_ci", "--work-dir", str(work),
                      "--max-iters", "6", "--resume", "--cfg-options", *QUIET], capsys,
                     "'train_student_ci'", "not of 'train_teacher_ci'", "another --work-dir")
    assert len(err.strip().splitlines()) == 1
    assert not (work / "iter_6.pth").exists()


def test_resume_with_a_changed_model_is_refused(faults, tmp_path, short_run, capsys):
    work = _copy(short_run, tmp_path)
    faults.cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters",
                "6", "--resume", "--cfg-options", "model.pts_backbone.out_channels=[8,32]",
                *QUIET], capsys, "--resume: the model config changed", "shape mismatches")


def test_resume_past_max_iters_is_refused(faults, tmp_path, short_run, capsys):
    work = _copy(short_run, tmp_path)
    faults.cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters",
                "3", "--resume", "--cfg-options", *QUIET], capsys, "at iteration 4",
               "--max-iters 4 or more")
    faults.kept(work / "iter_4.pth", work / "iter_2.pth")


def test_no_grad_around_the_loss_is_explained(faults, tmp_path, monkeypatch):
    import torch

    from bevdistill.engine.runner import NoGradientError

    runner = make_runner(load_experiment("train_student_ci", dict(log_level="WARNING")),
                         tmp_path, max_iters=2)
    loss = runner.model.loss

    def loss_without_gradients(*args, **kwargs):
        with torch.no_grad():
            return loss(*args, **kwargs)

    monkeypatch.setattr(runner.model, "loss", loss_without_gradients)
    with faults.clear(NoGradientError, "no gradient", "torch.no_grad()"):
        runner.train()


def test_a_distiller_loss_under_no_grad_warns(faults):
    import torch
    from mmengine.registry import MODELS
    from warnings_support import reset_warnings

    from bevdistill.data import SyntheticBEVDataset, bev_collate

    exp = load_experiment("distill_ci")
    distiller = MODELS.build(exp.model).train()
    data = SyntheticBEVDataset(num_samples=2, point_cloud_range=exp.train_dataset.point_cloud_range)
    batch = distiller.data_preprocessor(bev_collate([data[0], data[1]]), True)
    reset_warnings()
    with pytest.warns(UserWarning) as caught, torch.no_grad():
        distiller.loss(batch["inputs"], batch["data_samples"])
    messages = [str(w.message) for w in caught if "no_grad" in str(w.message)]
    assert messages, [str(w.message) for w in caught]
    faults.check_message(messages[0], ["torch.no_grad()", "nothing trains"])


def test_a_detector_loss_under_no_grad_warns(faults):
    import torch
    from warnings_support import reset_warnings

    from bevdistill.data import SyntheticBEVDataset, bev_collate
    from bevdistill.models import build_detector

    exp = load_experiment("train_student_ci")
    model = build_detector(exp.model).train()
    data = SyntheticBEVDataset(num_samples=2, point_cloud_range=exp.train_dataset.point_cloud_range)
    batch = model.data_preprocessor(bev_collate([data[0], data[1]]), True)
    reset_warnings()
    with pytest.warns(UserWarning, match="no_grad") as caught, torch.no_grad():
        model(**batch, mode="loss")
    faults.check_message(str(caught[0].message), ["torch.no_grad()", "nothing trains"])
