"""Fault suite (issue 12): bad inputs, kills, corrupt files and divergence, tried as a user would.

Every case must end in a clear error (the right type, a message naming the cause) or recover as
documented; none may pass silently, lose a good checkpoint, show a raw traceback or hang. Each
case records its outcome (``record_property("fault", ...)``) and ``tests/conftest.py`` prints the
one-line summary: cases tried, clear errors, recovered, silent results, data lost, raw
tracebacks, hangs (goal 0 for the last four). The classes of issue 23 are in
``tests/test_faults_runs.py`` (concurrent runs, resume), ``tests/test_faults_config.py`` (keys,
values, unreadable configs) and ``tests/test_faults_files.py`` (weights, cards, data).
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bevdistill import pretrained
from bevdistill.capture import BEVFusionDistillationWrapper, FeatureRecorder
from bevdistill.cli import main as cli
from bevdistill.data.geometry import count_points_in_boxes
from bevdistill.data.nuscenes import InfoFileError, NuScenesReader, PointFileError
from bevdistill.distiller import TeacherCheckpointError
from bevdistill.engine.checkpoint import (
    ChecksumError,
    CorruptCheckpointError,
    file_sha256,
    newest_complete_checkpoint,
    read_state_dict,
    remove_stale_temp_files,
    verify_sha256,
)
from bevdistill.engine.hooks import DivergenceError
from bevdistill.engine.runner import build_runner_config, load_experiment, make_runner
from bevdistill.losses.attention import AttentionTransferLoss
from bevdistill.losses.combined import BEVFusionDistillationLoss
from bevdistill.losses.feature import FeatureMSELoss
from bevdistill.losses.response import HeatmapDistillationLoss
from bevdistill.models import build_detector
from bevdistill.teacher_weights import load_teacher_checkpoint

QUIET = ["log_level=WARNING"]
UNSAFE_ADVICE = ("weights_only=False", "trust_teacher_ckpt=True")
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a running process


class Faults:
    """Records each case's outcome for the suite's summary line."""

    def __init__(self, record):
        self.record = record

    @contextmanager
    def clear(self, error: type[BaseException], *causes: str):
        """The body must raise ``error`` whose message names every one of ``causes``."""
        try:
            yield
        except error as exc:
            self.check_message(str(exc), causes)
            return
        self.record("fault", "silent")
        pytest.fail(f"no {error.__name__} was raised: the fault passed silently")

    def check_message(self, message: str, causes) -> None:
        low = message.lower()
        missing = [c for c in causes if c.lower() not in low]
        assert not missing, f"the message does not name {missing}:\n{message}"
        assert not any(a in message for a in UNSAFE_ADVICE), f"advises an unsafe load:\n{message}"
        self.record("fault", "clear")

    def cli(self, argv: list[str], capsys, *causes: str) -> str:
        """A CLI user error: exit 2, a short message naming the causes, no traceback."""
        capsys.readouterr()
        try:
            cli(argv)
        except SystemExit as exc:
            if exc.code != 2:
                self.record("fault", "traceback")
            err = capsys.readouterr().err
            assert exc.code == 2, err
            assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
            self.check_message(err, causes)
            return err
        except Exception:
            self.record("fault", "traceback")  # what the user would see as a raw traceback
            raise
        self.record("fault", "silent")
        pytest.fail(f"`bevdistill {' '.join(argv)}` succeeded: the fault passed silently")

    def handled(self) -> None:
        self.record("fault", "handled")

    def kept(self, *paths: Path) -> None:
        """Good files that must still be on disk."""
        lost = [p for p in paths if not Path(p).is_file()]
        for _ in lost:
            self.record("fault", "lost")
        assert not lost, f"lost: {lost}"


@pytest.fixture
def faults(record_property) -> Faults:
    return Faults(record_property)


def _finite_checkpoint(path: Path) -> bool:
    return all(torch.isfinite(v).all() for v in read_state_dict(path).values() if v.is_floating_point())


# --- 1. divergence -----------------------------------------------------------------------------

DIVERGE = ["schedule.lr=1e8", "schedule.grad_clip=0", "schedule.checkpoint_interval=1"]


def test_divergent_training_stops_and_keeps_its_last_finite_checkpoint(faults, tmp_path, capsys):
    work = tmp_path / "N1"
    faults.cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters", "6",
                "--cfg-options", *DIVERGE, *QUIET],
               capsys, "diverged at iteration", "loss", "schedule.lr", "last finite checkpoint")
    kept = sorted(work.glob("iter_*.pth"))
    assert kept and all(_finite_checkpoint(p) for p in kept)  # never a NaN checkpoint
    faults.kept(Path((work / "last_checkpoint").read_text().strip()))
    assert not (work / "metrics.json").exists()  # no "mAP 0" record of a diverged run


def test_divergent_distillation_stops_and_nan_weights_are_never_saved(faults, tmp_path):
    exp = load_experiment("distill_ci", dict(log_level="WARNING", schedule=dict(
        lr=1e8, grad_clip=0, checkpoint_interval=1)))
    runner = make_runner(exp, tmp_path, max_iters=6)
    with faults.clear(DivergenceError, "diverged at iteration", "NaN", "schedule.lr"):
        runner.train()
    kept = sorted(tmp_path.glob("iter_*.pth"))
    assert all(_finite_checkpoint(p) for p in kept)
    faults.kept(*kept)
    # A save outside the hook is refused too, and leaves the kept files alone.
    next(runner.model.parameters()).data.fill_(float("nan"))
    with faults.clear(DivergenceError, "refusing to write", "NaN or inf"):
        runner.save_checkpoint(str(tmp_path), "iter_99.pth")
    assert not (tmp_path / "iter_99.pth").exists()
    faults.kept(*kept)


@pytest.mark.parametrize("experiment", ["train_student_ci", "train_teacher_ci", "distill_ci"])
def test_every_experiment_has_the_divergence_hook(experiment):
    cfg = build_runner_config(load_experiment(experiment), "unused")
    assert {"type": "DivergenceHook"} in cfg.custom_hooks


# --- 2. loss inputs ----------------------------------------------------------------------------


def _nan_at(x: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[3] = value
    return x


def _maps(b=2, c=8, h=8, w=8):
    torch.manual_seed(0)
    return torch.randn(b, c, h, w), torch.randn(b, c, h, w)


@pytest.mark.parametrize("bad", ["student", "teacher"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_attention_transfer_raises(faults, bad, value):
    s, t = _maps()
    s, t = (_nan_at(s, value), t) if bad == "student" else (s, _nan_at(t, value))
    with faults.clear(ValueError, "AttentionTransferLoss", f"{bad}_feat", "NaN or inf"):
        AttentionTransferLoss()(s, t)


@pytest.mark.parametrize("bad", ["student", "teacher"])
def test_nan_in_heatmap_distillation_raises(faults, bad):
    s, t = _maps(c=3)
    s, t = (_nan_at(s), t) if bad == "student" else (s, _nan_at(t))
    with faults.clear(ValueError, "HeatmapDistillationLoss", f"{bad} heatmap logits", "NaN"):
        HeatmapDistillationLoss()(s, t)


def _combined(**kw) -> BEVFusionDistillationLoss:
    return BEVFusionDistillationLoss({"pts_neck": 8}, {"pts_neck": 8}, feat_dim=4, hidden_dim=8,
                                     **kw)


def test_nan_through_the_combined_loss_without_contrastive_raises(faults):
    loss = _combined(contrastive="none", alpha_kd=0.5)
    s, t = _maps()
    logits = torch.randn(2, 3, 8, 8)
    with faults.clear(ValueError, "loss_at.pts_neck", "student_feat", "NaN"):
        loss({"pts_neck": _nan_at(s)}, {"pts_neck": t})
    with faults.clear(ValueError, "loss_kd.heatmap", "teacher heatmap logits", "NaN"):
        loss({"pts_neck": s}, {"pts_neck": t}, logits, _nan_at(logits))


@pytest.mark.parametrize("shape", [(0, 8, 8, 8), (2, 8, 0, 8)], ids=["B=0", "H=0"])
def test_attention_transfer_on_an_empty_batch_or_grid_raises(faults, shape):
    with faults.clear(ValueError, "AttentionTransferLoss", "empty"):
        AttentionTransferLoss()(torch.randn(shape), torch.randn(shape))


@pytest.mark.parametrize("shape", [(2, 8, 0, 0), (0, 8, 4, 4)])
def test_projection_mlp_on_an_empty_map_raises(faults, shape):
    from bevdistill import ProjectionMLP

    with faults.clear(ValueError, "ProjectionMLP got an empty input"):
        ProjectionMLP(8, 16, 4)(torch.randn(*shape))


def test_projection_on_a_0x0_map_through_the_combined_loss_raises(faults):
    empty = torch.randn(2, 8, 0, 0)
    with faults.clear(ValueError, "student feature 'pts_neck' is empty"):
        _combined(contrastive="global")({"pts_neck": empty}, {"pts_neck": torch.randn(2, 8, 4, 4)})


@pytest.mark.parametrize("loss", ["at", "mse", "kd"])
def test_integer_features_raise_a_value_error(faults, loss):
    s = torch.randint(0, 5, (2, 8, 4, 4))
    fn = {"at": AttentionTransferLoss(), "mse": FeatureMSELoss(8, 8),
          "kd": HeatmapDistillationLoss()}[loss]
    with faults.clear(ValueError, "dtype torch.int64", ".float()"):
        fn(s, s.float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_losses_are_computed_in_fp32_standalone(faults, dtype):
    s, t = _maps()
    for fn in (FeatureMSELoss(8, 8), AttentionTransferLoss(), HeatmapDistillationLoss()):
        reference = fn(s, t)
        value = fn(s.to(dtype), t.to(dtype))
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, reference, rtol=2e-2, atol=2e-3)
    faults.handled()


def test_zero_attention_map_warning_says_what_it_adds(faults):
    from warnings_support import reset_warnings

    from bevdistill._warnings import DegenerateInputWarning

    reset_warnings()
    s, t = _maps()
    with pytest.warns(DegenerateInputWarning) as caught:
        value = AttentionTransferLoss()(torch.zeros_like(s), t)
    assert value.item() == pytest.approx(1.0)  # a zero student against a real teacher adds 1
    faults.check_message(str(caught[0].message), ["adds 0", "1 with normalization='l2'"])


# --- 3. point and info files ------------------------------------------------------------------


def _frame(folder: Path, n: int = 3000) -> tuple[Path, np.ndarray]:
    """A synthetic nuScenes-format frame: points sorted by azimuth, as a spinning LiDAR writes."""
    rng = np.random.default_rng(0)
    r, azimuth = rng.uniform(2, 20, n), np.sort(rng.uniform(-np.pi, np.pi, n))
    points = np.stack([r * np.cos(azimuth), r * np.sin(azimuth), rng.uniform(-1, 1, n),
                       rng.integers(0, 256, n), rng.integers(0, 32, n)], axis=1).astype(np.float32)
    # One box per quadrant, so cutting the end of the file empties the last one.
    boxes = np.array([[8 * np.cos(a), 8 * np.sin(a), 0, 6, 6, 2.5, 0]
                      for a in (-2.4, -0.8, 0.8, 2.4)], dtype=np.float64)
    counts = count_points_in_boxes(points, boxes)
    assert (counts > 20).all()
    points.tofile(folder / "sweep.pcd.bin")
    info = {"metainfo": {"categories": {"car": 0, "pedestrian": 1}},
            "data_list": [{"sample_idx": 0,
                           "lidar_points": {"lidar_path": "sweep.pcd.bin", "num_pts_feats": 5,
                                            "lidar2ego": np.eye(4).tolist()},
                           "instances": [{"bbox_3d": b.tolist(), "bbox_label_3d": 0,
                                          "num_lidar_pts": int(c)} for b, c in zip(boxes, counts, strict=True)]}]}
    path = folder / "infos.pkl"
    path.write_bytes(pickle.dumps(info))
    return path, points


def test_a_valid_frame_reads(tmp_path):
    info, points = _frame(tmp_path)
    np.testing.assert_array_equal(NuScenesReader(info, align_forward=False).load_points(0), points)
    assert len(NuScenesReader(info)[0]["gt_boxes"]) == 4


def _sweep_case(tmp_path, write) -> Path:
    info, points = _frame(tmp_path)
    write(tmp_path / "sweep.pcd.bin", points)
    return info


@pytest.mark.parametrize("case, causes", [
    ("four_values_a_point", ["ring values are not whole numbers"]),
    ("float64", ["not a float32 sweep"]),
    ("truncated_by_20_bytes_multiple", ["num_lidar_pts", "truncated"]),
    ("ring_out_of_range", ["[0, 32)"]),
    ("intensity_out_of_range", ["intensities lie outside [0, 255]"]),
    ("odd_size", ["not a positive multiple of 20"]),
])
def test_bad_point_files_raise_with_the_path(faults, tmp_path, case, causes):
    def write(path, pts):
        if case == "four_values_a_point":
            assert (pts.shape[0] * 4) % 5 == 0
            pts[:, :4].tofile(path)
        elif case == "float64":
            pts.astype(np.float64).tofile(path)
        elif case == "truncated_by_20_bytes_multiple":
            pts[: int(len(pts) * 0.7)].tofile(path)
        elif case == "ring_out_of_range":
            pts[5, 4] = 40
            pts.tofile(path)
        elif case == "intensity_out_of_range":
            pts[5, 3] = 300
            pts.tofile(path)
        else:
            path.write_bytes(pts.tobytes()[:-4])

    info = _sweep_case(tmp_path, write)
    with faults.clear(PointFileError, str(tmp_path / "sweep.pcd.bin"), *causes):
        NuScenesReader(info)[0]


@pytest.mark.parametrize("content, cause", [
    (b"\x80\x04\x95\x10\x00\x00", "truncated"),
    (b"metainfo: not a pickle\n", "cannot be read"),
], ids=["truncated", "text"])
def test_corrupt_info_files_name_the_path(faults, tmp_path, content, cause):
    path = tmp_path / "infos.pkl"
    path.write_bytes(content)
    with faults.clear(InfoFileError, str(path), cause):
        NuScenesReader(path)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_info_file_that_would_run_code_is_refused(faults, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "infos.pkl"
    path.write_bytes(pickle.dumps({"metainfo": {}, "data_list": [_Exploit(marker)]}))
    with faults.clear(InfoFileError, str(path), "system", "only builtins and numpy"):
        NuScenesReader(path)
    assert not marker.exists()


# --- 4. checkpoints ---------------------------------------------------------------------------


def _state_file(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.ones(64, 64)}}, path)
    return path


@pytest.mark.parametrize("case, cause", [
    ("empty", "empty (0 bytes)"),
    ("truncated", "truncated"),
    ("text", "not a PyTorch checkpoint"),
    ("folder", "is a folder"),
])
def test_unreadable_teacher_checkpoints_name_the_path_and_the_cause(faults, tmp_path, case, cause):
    path = tmp_path / "teacher.pth"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        data = _state_file(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "text":
        path.write_text("<html>404 Not Found</html>\n")
    else:
        path.mkdir()
    with faults.clear(TeacherCheckpointError, str(path), cause):
        load_teacher_checkpoint(build_detector("teacher"), path)


def test_the_shipped_teacher_matches_its_card():
    card = json.loads(pretrained.TEACHER_CARD.read_text())
    verify_sha256(pretrained.TEACHER_WEIGHTS, card["weights_sha256"], "shipped teacher")


def test_flipped_bytes_in_the_shipped_teacher_are_caught(faults, tmp_path, monkeypatch):
    weights, card = tmp_path / "teacher.pth", tmp_path / "teacher_card.json"
    shutil.copy(pretrained.TEACHER_CARD, card)
    data = bytearray(pretrained.TEACHER_WEIGHTS.read_bytes())
    for i in range(64):
        data[len(data) // 2 + i] ^= 0xFF
    weights.write_bytes(bytes(data))
    expected = json.loads(card.read_text())["weights_sha256"]
    with faults.clear(ChecksumError, str(weights), expected, file_sha256(weights)):
        load_teacher_checkpoint(build_detector("teacher"), weights)  # as model.teacher_ckpt
    monkeypatch.setattr(pretrained, "TEACHER_WEIGHTS", weights)
    monkeypatch.setattr(pretrained, "TEACHER_CARD", card)
    with faults.clear(ChecksumError, "corrupt or was replaced"):
        pretrained.load_teacher()


def test_ship_records_the_weights_hash(faults, tmp_path, monkeypatch):
    from benchmarks.ship import ship

    run = tmp_path / "run"
    run.mkdir()
    ckpt = _state_file(run / "iter_1.pth")
    (run / "metrics.json").write_text(json.dumps(dict(
        role="teacher", checkpoint=str(ckpt), config="train_teacher",
        argv="bevdistill train teacher train_teacher", seed=0,  # a string, as run_record writes
        commit="x", iters_done=1, duration_s=1.0, device="cpu", torch=torch.__version__,
        config_path=str(load_experiment("train_teacher").filename), metrics={})))
    monkeypatch.setattr(pretrained, "evaluate_subset", lambda weights: {})
    card = ship(run, out_dir=tmp_path)
    assert card["weights_sha256"] == file_sha256(tmp_path / "teacher.pth")
    assert json.loads((tmp_path / "teacher_card.json").read_text())["weights_sha256"] == card["weights_sha256"]
    faults.handled()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """train_student_ci for 4 iterations with checkpoints at 2 and 4."""
    work = tmp_path_factory.mktemp("run") / "work"
    runner = make_runner(load_experiment("train_student_ci", dict(
        log_level="WARNING", schedule=dict(checkpoint_interval=2))), work, max_iters=4)
    runner.train()
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_2.pth", "iter_4.pth"]
    return work


def _copy_run(trained_run: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(trained_run, work)
    for name in ("iter_2.pth", "iter_4.pth"):  # the pointer holds absolute paths
        assert (work / name).is_file()
    (work / "last_checkpoint").write_text(str(work / "iter_4.pth"))
    return work


def test_resume_skips_a_truncated_newest_checkpoint(faults, tmp_path, trained_run, capsys):
    work = _copy_run(trained_run, tmp_path)
    data = (work / "iter_4.pth").read_bytes()
    (work / "iter_4.pth").write_bytes(data[: len(data) // 3])
    path, skipped = newest_complete_checkpoint(work)
    assert path == str(work / "iter_2.pth")
    faults.check_message(skipped[0], [str(work / "iter_4.pth"), "truncated"])
    faults.kept(work / "iter_2.pth")
    # End to end through the CLI: it resumes from iter_2, says so and finishes the run.
    assert cli(["train", "student", "train_student_ci", "--work-dir", str(work), "--max-iters", "4",
                "--resume", "--cfg-options", "schedule.checkpoint_interval=2", *QUIET]) == 0
    out = capsys.readouterr()
    assert "skipping a checkpoint" in out.out + out.err
    record = json.loads((work / "metrics.json").read_text())
    assert record["iters_done"] == 4 and _finite_checkpoint(work / "iter_4.pth")
    faults.handled()


@pytest.mark.parametrize("pointer", ["stale", "absent"])
def test_resume_after_a_kill_between_checkpoint_and_pointer(faults, tmp_path, trained_run, capsys,
                                                             pointer):
    work = _copy_run(trained_run, tmp_path)
    if pointer == "stale":
        (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    else:
        (work / "last_checkpoint").unlink()
    leftovers = [work / f".iter_6.pth.tmp-{DEAD_PID}", work / f".last_checkpoint.tmp-{DEAD_PID}"]
    for p in leftovers:
        p.write_bytes(b"half written")
    runner = make_runner(load_experiment("train_student_ci", dict(
        log_level="WARNING", schedule=dict(checkpoint_interval=2))), work, resume=True, max_iters=4)
    runner.train()
    assert runner.iter == 4  # resumed from iter_4, not from scratch or from iter_2
    assert (work / "last_checkpoint").read_text().strip() == str(work / "iter_4.pth")
    assert not any(p.exists() for p in leftovers)
    assert remove_stale_temp_files(work) == []
    out = capsys.readouterr()
    assert "newest complete checkpoint" in out.out + out.err
    faults.kept(work / "iter_2.pth", work / "iter_4.pth")
    faults.handled()


def test_evaluate_names_a_corrupt_checkpoint(faults, tmp_path, capsys):
    path = _state_file(tmp_path / "model.pth")
    path.write_bytes(path.read_bytes()[:100])
    faults.cli(["evaluate", "train_student_ci", str(path), "--work-dir", str(tmp_path / "ev")],
               capsys, str(path), "truncated")


def test_a_checkpoint_of_python_objects_is_refused_without_unsafe_advice(faults, tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": os.stat_result(range(10))}, path)
    with faults.clear(CorruptCheckpointError, str(path), "Python objects besides tensors"):
        read_state_dict(path)


# --- 5. the command line ----------------------------------------------------------------------


def test_cli_teacher_checkpoint_is_a_folder(faults, tmp_path, capsys):
    faults.cli(["distill", "distill_ci", "--work-dir", str(tmp_path / "w"),
                "--cfg-options", f"model.teacher_ckpt={tmp_path}"],
               capsys, str(tmp_path), "is a folder", "--cfg-options model.teacher_ckpt=")


@pytest.mark.parametrize("case", ["is_a_file", "cannot_be_created"])
def test_cli_bad_work_dir(faults, tmp_path, capsys, case):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    work = blocker if case == "is_a_file" else blocker / "sub"
    cause = "is a file" if case == "is_a_file" else "cannot create"
    faults.cli(["train", "student", "train_student_ci", "--work-dir", str(work)], capsys,
               str(work), cause, "--work-dir")


def test_cli_teacher_key_mismatch_gives_the_fix_in_cfg_options_form(faults, tmp_path, capsys):
    from bevdistill.models import build_detector

    teacher = build_detector(load_experiment("train_teacher_ci").model)
    state = teacher.state_dict()
    state.pop(next(iter(state)))
    torch.save({"state_dict": state}, tmp_path / "teacher.pth")
    err = faults.cli(["distill", "distill_ci", "--work-dir", str(tmp_path / "w"), "--cfg-options",
                      f"model.teacher_ckpt={tmp_path / 'teacher.pth'}", *QUIET],
                     capsys, "missing from the checkpoint", "--cfg-options model.driver.strict_teacher=False",
                     "--cfg-options model.teacher_ckpt=")
    assert "pass driver=dict(strict_teacher=False)" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_debug_shows_the_traceback(faults, tmp_path, where):
    from bevdistill.cli import WorkDirError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["train", "student", "train_student_ci", "--work-dir", str(blocker)]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with faults.clear(WorkDirError, "is a file"):
        cli(argv)


# --- 6. hooks never outlive their wrapper ---------------------------------------------------


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 3)

    def forward(self, x, samples=None, mode="tensor"):
        return self.backbone(x)

    def loss(self, x, samples=None):
        return {"loss": self.backbone(x).sum()}

    def predict(self, x, samples=None):
        return self.backbone(x)


def _hooks(model: _Tiny) -> int:
    return len(model.backbone._forward_hooks)


def test_a_failing_hook_leaves_the_model_clean(faults):
    model = _Tiny()
    wrapper = BEVFusionDistillationWrapper(model, hook_points=["backbone"], select={"backbone": 0})
    with faults.clear(TypeError, "select['backbone']", "hooks were removed"):
        wrapper(torch.zeros(1, 3))
    del wrapper
    assert _hooks(model) == 0
    model(torch.zeros(1, 3))  # a plain forward works again


@pytest.mark.parametrize("how", ["deleted", "collected", "raised_inside_with", "recorder_deleted"])
def test_hooks_go_with_their_wrapper(faults, how):
    model = _Tiny()
    if how == "raised_inside_with":
        with pytest.raises(RuntimeError, match="boom"), \
                BEVFusionDistillationWrapper(model, hook_points=["backbone"]):
            raise RuntimeError("boom")
    elif how == "recorder_deleted":
        recorder = FeatureRecorder(model, ["backbone"])
        assert _hooks(model) == 1
        del recorder
    else:
        wrapper = BEVFusionDistillationWrapper(model, hook_points=["backbone"])
        assert _hooks(model) == 1
        if how == "collected":
            wrapper.cycle = [wrapper]  # only the cycle collector can free it
        del wrapper
        gc.collect()
    assert _hooks(model) == 0
    faults.handled()
