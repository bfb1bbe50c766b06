"""`bevdistill train CONFIG.py` on the CPU mmdet3d config: mmengine's Runner in the mmdet3d scope,
resume on torch >= 2.6 with weights_only loading, export, and the exported student in plain
mmdet3d (init_model + inference_detector). Also two torchrun ranks (gloo) with equal weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from mmdet3d_support import CPU_CONFIG, REPO, demo_root_or_skip, require_mmdet3d_or_skip

require_mmdet3d_or_skip()
DEMO = demo_root_or_skip()

from test_engine_ddp import free_port  # noqa: E402

from bevdistill.engine.checkpoint import allow_mmengine_checkpoint_globals  # noqa: E402
from bevdistill.mmdet3d.distiller import build_mmdet3d_model  # noqa: E402


def run_cli(args, cwd, launcher=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "BEVDISTILL_NUSCENES_DEMO": str(DEMO)}
    cmd = [sys.executable, *(launcher or []), "-m", "bevdistill", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CPU_CONFIG))
    torch.manual_seed(1)
    teacher = build_mmdet3d_model(cfg.model.teacher, "teacher")
    teacher.init_weights()
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save({"state_dict": teacher.state_dict()}, path)
    return path


@pytest.mark.slow
def test_train_resume_export_and_load_in_plain_mmdet3d(tmp_path, teacher_ckpt):
    common = ["--work-dir", "run", "--cfg-options", f"model.teacher_ckpt={teacher_ckpt}",
              "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1"]
    first = run_cli(["train", str(CPU_CONFIG), "--max-iters", "2", *common], tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    work = tmp_path / "run"
    record = json.loads((work / "metrics.json").read_text())
    assert record["iters_done"] == 2 and record["scope"] == "mmdet3d"
    assert any("loss_kd.heatmap" in k for k in record["metrics"])
    assert (work / "iter_2.pth").is_file()
    assert not list(work.glob(".*tmp*")), "a temporary checkpoint file was left behind"

    # Resume reads the Runner checkpoint (optimizer, message hub) with weights_only=True.
    resumed = run_cli(["train", str(CPU_CONFIG), "--max-iters", "3", "--resume", *common], tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "resumed" in (resumed.stdout + resumed.stderr).lower()
    record = json.loads((work / "metrics.json").read_text())
    assert record["iters_done"] == 3 and record["resumed"] is True
    allow_mmengine_checkpoint_globals()
    ckpt = torch.load(work / "iter_3.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 3
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])

    exported = run_cli(["export", str(CPU_CONFIG), str(work / "iter_3.pth"), "student.pth",
                        "--cfg-options", f"model.teacher_ckpt={teacher_ckpt}"], tmp_path)
    assert exported.returncode == 0, (exported.stdout + exported.stderr)[-4000:]
    student_ckpt, student_cfg = tmp_path / "student.pth", tmp_path / "student.py"
    assert "bevdistill" not in student_cfg.read_text()  # a plain mmdet3d config

    from mmdet3d.apis import inference_detector, init_model

    model = init_model(str(student_cfg), str(student_ckpt), device="cpu")
    assert model.dataset_meta["classes"][0] == "car"
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][f"student.{key}"]), key
    lidar = next((DEMO / "samples").glob("*LIDAR_TOP*.pcd.bin"))
    result, _ = inference_detector(model, str(lidar))
    boxes = result.pred_instances_3d.bboxes_3d.tensor
    assert boxes.shape[1] == 9 and torch.isfinite(boxes).all()


def test_export_refuses_a_checkpoint_without_a_student(tmp_path, teacher_ckpt):
    proc = run_cli(["export", str(CPU_CONFIG), str(teacher_ckpt), "out.pth"], tmp_path)
    assert proc.returncode == 2
    assert "not a distillation checkpoint" in proc.stderr


def test_train_rejects_a_config_outside_the_mmdet3d_scope(tmp_path):
    proc = run_cli(["train", "nonsense"], tmp_path)
    assert proc.returncode == 2
    assert "teacher, student or an mmdet3d config" in proc.stderr


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_end_with_identical_weights(tmp_path, teacher_ckpt):
    # diff_rank_seed: each rank augments the frame differently, so equal weights at the end
    # need averaged gradients (with equal seeds, un-synchronised ranks would also agree).
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = run_cli(["train", str(CPU_CONFIG), "--work-dir", "ddp", "--launcher", "pytorch",
                    "--max-iters", "2", "--cfg-options", f"model.teacher_ckpt={teacher_ckpt}",
                    "save_rank_weights=True", "randomness.diff_rank_seed=True"],
                   tmp_path, launcher=launcher, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    work = tmp_path / "ddp"
    assert json.loads((work / "metrics.json").read_text())["world_size"] == 2
    rank0 = torch.load(work / "rank_weights" / "rank0.pth", weights_only=True)
    rank1 = torch.load(work / "rank_weights" / "rank1.pth", weights_only=True)
    assert rank0.keys() == rank1.keys() and any(k.startswith("student.") for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
