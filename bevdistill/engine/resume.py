"""What ``--resume`` continues, said before anything is loaded.

mmengine resumes whatever a work dir holds: another experiment's run fails 90 lines later in
the optimizer (or loads half its weights), and a changed schedule is silently undone, because
the saved scheduler state wins (a longer ``--max-iters`` kept the learning rate at its final,
smallest value). Here, from the checkpoint's own record of its run (the ``experiment`` entry of
the runner config mmengine saves in ``meta``):

* a checkpoint of another experiment (name or role) is refused in one line, as is one whose
  weights do not fit the model;
* a ``max_iters`` below the checkpoint's iteration is refused;
* a changed learning-rate schedule (``max_iters``, ``lr``, ``warmup_iters``,
  ``warmup_start_factor``, ``min_lr_ratio``) is REBUILT: the new warm-up and cosine curve is
  stepped to the resumed iteration, so training goes on exactly where a run started with the
  new settings would be at that iteration (the optimizer's moments are kept);
* a changed ``weight_decay`` or ``betas`` is applied to the optimizer (its saved values would
  win otherwise);
* every other change (intervals, clipping, data, seed) takes effect from the resumed iteration.

Every change is logged as a warning and recorded in the run's ``metrics.json`` (``resume``).
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

from mmengine.config import Config
from torch import nn

from bevdistill.engine.checkpoint import CheckpointMismatchError, load_checkpoint_file
from bevdistill.errors import ExperimentConfigError

LR_SCHEDULE = ("max_iters", "lr", "warmup_iters", "warmup_start_factor", "min_lr_ratio")
OPTIMIZER = ("weight_decay", "betas")


def saved_experiment(checkpoint: dict) -> dict | None:
    """The ``experiment`` record of the run that wrote ``checkpoint`` (None if it has none)."""
    text = checkpoint.get("meta", {}).get("cfg")
    if not isinstance(text, str):
        return None
    experiment = Config.fromstring(text, ".py").get("experiment")
    return experiment.to_dict() if experiment is not None else None


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _differences(before: dict, now: dict, keys) -> dict[str, list]:
    return {k: [before.get(k), now.get(k)] for k in keys
            if _norm(before.get(k)) != _norm(now.get(k))}


def check_resumable(filename: str, now: dict, model: nn.Module) -> dict[str, dict]:
    """Raise unless ``filename`` continues the experiment ``now``; return what changed:
    ``{"lr_schedule": {key: [old, new]}, "optimizer": {...}, "other": {...}}``."""
    from bevdistill.engine.weights import check_state_dict

    checkpoint = load_checkpoint_file(filename, "checkpoint to resume")
    before = saved_experiment(checkpoint)
    if before is None:  # written by another tool: nothing to compare
        return {"lr_schedule": {}, "optimizer": {}, "other": {}}
    work_dir = os.path.dirname(os.path.abspath(filename))
    if (before.get("name"), before.get("role")) != (now.get("name"), now.get("role")):
        raise ExperimentConfigError(
            f"--resume: {work_dir} holds a run of {before.get('name')!r} ({before.get('role')}), "
            f"not of {now.get('name')!r} ({now.get('role')}); resume it with its own config, or "
            "pass another --work-dir for a new run")
    state = checkpoint.get("state_dict", {})
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        check_state_dict(model, state, filename)
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(
            f"--resume: the model config changed since the run in {work_dir} was started, and "
            f"its weights no longer fit: {exc}".replace("Use the config", "Resume with the config")
        ) from exc
    old_sched, new_sched = before.get("schedule", {}), now.get("schedule", {})
    at = int(checkpoint.get("meta", {}).get("iter", 0))
    if new_sched.get("max_iters", at) < at:
        raise ExperimentConfigError(
            f"--resume: the checkpoint {filename} is at iteration {at}, past max_iters="
            f"{new_sched['max_iters']}; pass --max-iters {at} or more (or a new --work-dir)")
    other = _differences(before, now, ("seed", "data", "amp", "init_from"))
    other.update(_differences(old_sched, new_sched,
                              set(new_sched) - set(LR_SCHEDULE) - set(OPTIMIZER)))
    return {"lr_schedule": _differences(old_sched, new_sched, LR_SCHEDULE),
            "optimizer": _differences(old_sched, new_sched, OPTIMIZER), "other": other}


def _changes(changes: dict[str, list]) -> str:
    return ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())


def rebuild_lr_schedule(runner, schedule: dict, changes: dict[str, dict]) -> str:
    """Put the optimizer on the new schedule at ``runner.iter`` (see the module docstring);
    returns the message that says what was done."""
    optimizer = runner.optim_wrapper.optimizer
    old_lr = runner.optim_wrapper.get_lr()["lr"][0]
    for group in optimizer.param_groups:
        group["weight_decay"] = schedule["weight_decay"]
        group["betas"] = tuple(schedule["betas"])
    said = []
    if changes["lr_schedule"]:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = schedule["lr"]
        runner.param_schedulers = runner.build_param_scheduler(
            copy.deepcopy(runner.cfg.param_scheduler))
        with warnings.catch_warnings():  # no optimizer step here: torch's order warning is moot
            warnings.filterwarnings("ignore", message=".*scheduler.step.. before .optimizer")
            for _ in range(runner.iter):  # as ParamSchedulerHook steps them after each iteration
                for scheduler in runner.param_schedulers:
                    scheduler.step()
        new_lr = runner.optim_wrapper.get_lr()["lr"][0]
        said.append(f"the learning-rate schedule changed ({_changes(changes['lr_schedule'])}): "
                    f"it is rebuilt for the new settings and continues at iteration "
                    f"{runner.iter} with lr {new_lr:.4g} (the checkpoint's schedule was at "
                    f"{old_lr:.4g})")
    if changes["optimizer"]:
        said.append(f"the optimizer settings changed ({_changes(changes['optimizer'])}) and "
                    "apply from here")
    if changes["other"]:
        said.append(f"also changed, from here on: {_changes(changes['other'])}")
    return "--resume: " + "; ".join(said)
