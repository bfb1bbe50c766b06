"""``bevdistill train CONFIG.py`` for mmdet3d configs: mmengine's Runner in the mmdet3d scope.

The config is an ordinary mmdet3d runner config (model, dataloaders, schedule, hooks); this adds
what the project's own runs have: atomic checkpoints, resume on torch >= 2.6 with
``weights_only`` loading (the message hub's types allow-listed, not the safety turned off), DDP
under ``torchrun --launcher pytorch`` on GPUs (nccl) or CPUs (gloo), and a metrics JSON.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from bevdistill.engine.checkpoint import allow_mmengine_checkpoint_globals
from bevdistill.engine.runner import BEVRunner, ExperimentConfigError, setup_distributed

MMDET3D_SCOPE = re.compile(r"""^default_scope\s*=\s*['"]mmdet3d['"]""", re.M)


def is_mmdet3d_config(path: str | os.PathLike) -> bool:
    """True for a config file that runs in the mmdet3d scope (routes ``bevdistill train``)."""
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        return False
    return bool(MMDET3D_SCOPE.search(path.read_text(encoding="utf-8")))


def load_mmdet3d_config(path: str | os.PathLike, cfg_options: Mapping[str, Any] | None = None) -> Config:
    cfg = Config.fromfile(os.fspath(path))
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if cfg.get("default_scope") != "mmdet3d":
        raise ExperimentConfigError(
            f"{path}: default_scope is {cfg.get('default_scope')!r}; an mmdet3d config sets "
            "default_scope = 'mmdet3d'"
        )
    for key in ("model", "train_dataloader", "train_cfg", "optim_wrapper"):
        if key not in cfg:
            raise ExperimentConfigError(f"{path} has no {key!r}: it is not a training config")
    return cfg


def runner_config(
    cfg: Config, work_dir: str | os.PathLike, *, launcher: str = "none", resume: bool = False,
    max_iters: int | None = None,
) -> Config:
    """The config as given, plus work dir, launcher, resume, atomic checkpoints, CPU DDP."""
    cfg = cfg.copy()
    cfg.work_dir = os.fspath(work_dir)
    cfg.launcher = launcher
    cfg.resume = bool(resume)
    if max_iters is not None:
        if max_iters < 1:
            raise ExperimentConfigError(f"--max-iters must be >= 1, got {max_iters}")
        cfg.train_cfg.max_iters = int(max_iters)
    hooks = cfg.setdefault("default_hooks", {})
    ckpt = dict(hooks.get("checkpoint") or dict(interval=cfg.train_cfg.get("max_iters", 1)))
    ckpt.update(type="AtomicCheckpointHook", by_epoch=False, save_last=True)
    hooks["checkpoint"] = ckpt
    # A NaN loss or weight stops the run, naming the iteration (as for bevdistill's experiments).
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="DivergenceHook")]
    if cfg.get("save_rank_weights", False):  # the DDP check: every rank writes its weights
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type="RankWeightsHook")]
    if launcher != "none":
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = (
            "nccl" if torch.cuda.is_available() else "gloo"
        )
        wrapper = dict(cfg.get("model_wrapper_cfg") or dict(type="MMDistributedDataParallel"))
        if not torch.cuda.is_available():
            wrapper["device_ids"] = None  # CPU DDP; with CUDA mmengine fills in [LOCAL_RANK]
        cfg.model_wrapper_cfg = wrapper
    return cfg


def make_mmdet3d_runner(
    path: str | os.PathLike, work_dir: str | os.PathLike | None = None, *,
    launcher: str = "none", resume: bool = False, max_iters: int | None = None,
    cfg_options: Mapping[str, Any] | None = None,
) -> BEVRunner:
    from bevdistill.mmdet3d import require_mmdet3d

    require_mmdet3d()
    import bevdistill.engine.checkpoint  # noqa: F401  registers AtomicCheckpointHook
    import bevdistill.engine.hooks  # noqa: F401  registers RankWeightsHook

    cfg = load_mmdet3d_config(path, cfg_options)
    work_dir = work_dir or Path("work_dirs") / Path(path).stem
    allow_mmengine_checkpoint_globals()
    setup_distributed(launcher)
    return BEVRunner.from_cfg(runner_config(cfg, work_dir, launcher=launcher, resume=resume,
                                            max_iters=max_iters))
