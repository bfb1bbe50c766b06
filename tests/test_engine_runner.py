"""Experiment config -> runner config: schedule, optimizer/AMP, dataloaders, DDP wrapper, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import PARAM_SCHEDULERS

from bevdistill.engine import runner as runner_mod
from bevdistill.engine.runner import (
    ExperimentConfigError,
    LaunchError,
    build_runner_config,
    list_experiments,
    load_experiment,
    resolve_config,
    setup_distributed,
)


def lr_trajectory(cfg) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim_wrapper.optimizer.lr)
    scheds = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=opt))
              for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        for s in scheds:
            s.step()
    return lrs


@pytest.mark.parametrize("max_iters", [1, 2, 3, 6, 40])
def test_schedule_warms_up_to_the_full_rate_then_decays(tmp_path, max_iters):
    exp = load_experiment("train_student_ci", {"schedule.warmup_iters": 10})
    cfg = build_runner_config(exp, tmp_path, max_iters=max_iters)
    lr = exp.schedule.lr
    lrs = lr_trajectory(cfg)
    assert len(lrs) == max_iters
    if max_iters > 1:
        assert max(lrs) == pytest.approx(lr)  # a one-step warm-up would stop at 10%
        assert lrs[-1] < lr
    if max_iters >= 20:
        assert lrs[0] == pytest.approx(lr * exp.get("schedule").get("warmup_start_factor", 0.1))
        assert lrs[-1] < 0.05 * lr  # cosine to min_lr_ratio


def test_max_iters_override_rescales_intervals(tmp_path):
    exp = load_experiment("train_student", {"schedule.val_interval": 1000,
                                            "schedule.checkpoint_interval": 500})
    cfg = build_runner_config(exp, tmp_path, max_iters=30)
    assert cfg.train_cfg.max_iters == 30 and cfg.train_cfg.val_interval == 30
    assert cfg.default_hooks.checkpoint.interval == 30
    assert cfg.param_scheduler[-1].end == 30


def test_optimizer_and_amp_follow_the_device(tmp_path, monkeypatch):
    exp = load_experiment("train_student_ci", {"amp": True, "schedule.grad_clip": 5.0})
    cfg = build_runner_config(exp, tmp_path)
    assert cfg.optim_wrapper.optimizer.type == "AdamW"
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=5.0, norm_type=2)
    if not torch.cuda.is_available():
        assert cfg.optim_wrapper.type == "OptimWrapper"  # mmengine's AMP wrapper needs a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = build_runner_config(exp, tmp_path)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "float16"
    exp.amp = False
    assert build_runner_config(exp, tmp_path).optim_wrapper.type == "OptimWrapper"


def test_dataloaders_are_keyed_and_collated_with_bev_collate(tmp_path):
    exp = load_experiment("train_student_ci", {"data.num_workers": 2})
    cfg = build_runner_config(exp, tmp_path)
    train = cfg.train_dataloader
    assert train.sampler.type == "KeyedInfiniteSampler"
    assert train.dataset.type == "KeyedDataset" and train.dataset.dataset.type == "SyntheticBEVDataset"
    assert train.collate_fn.type == "bev_collate" and train.num_workers == 2
    assert cfg.val_dataloader.sampler == dict(type="DefaultSampler", shuffle=False)
    assert cfg.train_cfg.type == "FastForwardIterBasedTrainLoop"
    assert cfg.randomness.seed == exp.seed and cfg.randomness.diff_rank_seed is False
    assert "RNGStateHook" in [h["type"] for h in cfg.custom_hooks]
    assert cfg.default_hooks.checkpoint.type == "AtomicCheckpointHook"
    assert "train_dataloader" not in build_runner_config(exp, tmp_path, train=False)


def test_ddp_wrapper_on_cpu_has_no_device_ids(tmp_path, monkeypatch):
    exp = load_experiment("train_student_ci")
    assert "model_wrapper_cfg" not in build_runner_config(exp, tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = build_runner_config(exp, tmp_path, launcher="pytorch")
    assert cfg.model_wrapper_cfg.type == "MMDistributedDataParallel"
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.launcher == "pytorch" and cfg.env_cfg.dist_cfg.backend == "gloo"


def test_pytorch_launcher_outside_torchrun_is_explained(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LaunchError, match="torchrun"):
        setup_distributed("pytorch")
    with pytest.raises(ValueError, match="launcher"):
        setup_distributed("slurm")


def test_config_resolution_and_errors(tmp_path):
    assert {"train_teacher", "train_student", "distill", "train_teacher_ci", "train_student_ci",
            "distill_ci"} <= set(list_experiments())
    assert resolve_config("train_student_ci") == resolve_config("train_student_ci.py")
    with pytest.raises(ExperimentConfigError, match="train_student_ci"):
        resolve_config("train_studnet")
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(type='PillarBEVDetector')\nval_dataset = dict()\nrole = 'x'\n")
    with pytest.raises(ExperimentConfigError, match="role"):
        load_experiment(bad)
    with pytest.raises(ExperimentConfigError, match="unknown config key 'schedule.lrr'"):
        load_experiment("train_student_ci", {"schedule.lrr": 1})
    exp = load_experiment("train_student_ci")
    exp.schedule.lrr = 1  # a key set after loading is still refused when the runner is built
    with pytest.raises(ExperimentConfigError, match="did you mean 'schedule.lr'"):
        build_runner_config(exp, tmp_path)


def test_distill_config_points_at_the_shipped_teacher():
    exp = load_experiment("distill")
    assert exp.model.type == "Distiller"
    assert str(runner_mod.CONFIG_DIR.parent / "assets" / "teacher.pth") == str(
        Path(exp.model.teacher_ckpt).resolve())
    override = load_experiment("distill", {"model.teacher_ckpt": "elsewhere.pth"})
    assert override.model.teacher_ckpt == "elsewhere.pth"


def test_experiment_names_are_unique_within_a_process(tmp_path):
    exp = load_experiment("train_student_ci")
    a = build_runner_config(exp, tmp_path).experiment_name
    b = build_runner_config(exp, tmp_path).experiment_name
    assert a != b and a.startswith("train_student_ci")


def test_progress_bar_is_off_only_inside_a_kernel(monkeypatch):
    """Importing ipykernel (widget libraries do) does not make a process a Jupyter kernel."""
    import types

    from bevdistill.engine.hooks import make_progress

    pytest.importorskip("ipykernel")
    assert make_progress().disable is False

    class Shell:  # what IPython.get_ipython() returns inside a kernel
        kernel = object()

    fake_ipython = types.SimpleNamespace(get_ipython=lambda: Shell())
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert make_progress().disable is True


def _ci_runner(tmp_path, name, **overrides):
    from bevdistill.engine.runner import make_runner

    exp = load_experiment("train_student_ci", {"train_dataset.num_samples": 2,
                                               "val_dataset.num_samples": 2, **overrides})
    return make_runner(exp, tmp_path / name, max_iters=1)


def test_init_from_starts_a_new_run_from_those_weights(tmp_path):
    first = _ci_runner(tmp_path, "first")
    start = {k: v + 0.5 if v.is_floating_point() else v for k, v in first.model.state_dict().items()}
    torch.save({"state_dict": start}, tmp_path / "start.pth")
    runner = _ci_runner(tmp_path, "second", init_from=str(tmp_path / "start.pth"))
    runner.load_or_resume()
    got = runner.model.state_dict()
    assert all(torch.equal(got[k], start[k]) for k in start)


def test_init_from_a_checkpoint_of_another_network_names_the_keys(tmp_path):
    from bevdistill.engine.checkpoint import CheckpointMismatchError

    other = load_experiment("train_teacher_ci")
    teacher = _ci_runner(tmp_path, "t", model=other.model).model
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pth")
    runner = _ci_runner(tmp_path, "s", init_from=str(tmp_path / "teacher.pth"))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches") as err:
        runner.load_or_resume()
    assert "strict_" not in str(err.value)  # no teacher-only advice for a starting point
