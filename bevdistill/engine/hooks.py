"""Small mmengine hooks: progress bars, the final metrics of a run, per-rank weight dumps,
divergence detection."""

from __future__ import annotations

import math
import os
import os.path as osp
import signal
import sys
from collections.abc import Mapping

import torch
from mmengine.dist import get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bevdistill._jupyter import in_jupyter_kernel
from bevdistill.errors import UserError


def make_progress(disable: bool = False) -> Progress:
    """A rich progress bar on stderr (mmengine's logger owns stdout).

    Inside a Jupyter kernel the bar is off: rich's background refresh thread writing to the
    kernel's streams can stall headless notebook runs, and mmengine's log lines already show
    progress there. Off a terminal (CI logs) it redraws only when advanced, from the main thread.
    """
    console = Console(file=sys.stderr)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=disable or in_jupyter_kernel(),
        auto_refresh=console.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """Progress bars for training iterations and for every validation/test pass (rank 0 only)."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._train_task = None
        self._eval_task = None

    def _ensure(self) -> Progress:
        if self._progress is None:
            self._progress = make_progress(disable=not is_main_process())
            self._progress.start()
        return self._progress

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._train_task = self._eval_task = None

    def before_train(self, runner) -> None:
        self._train_task = self._ensure().add_task(
            "train", total=runner.max_iters, completed=runner.iter, status=""
        )

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._train_task is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        status = f"loss {float(loss):.4f}" if loss is not None else ""
        self._progress.update(self._train_task, completed=runner.iter + 1, status=status)

    def after_train(self, runner) -> None:
        self._stop()

    def _start_eval(self, name: str, dataloader) -> None:
        self._eval_task = self._ensure().add_task(name, total=len(dataloader), status="")

    def _advance_eval(self) -> None:
        if self._eval_task is not None:
            self._progress.advance(self._eval_task)

    def _end_eval(self) -> None:
        self._eval_task = None  # the finished bar stays: one line per validation pass
        if self._train_task is None:  # a standalone evaluation
            self._stop()

    def before_val_epoch(self, runner) -> None:
        self._start_eval("val", runner.val_loop.dataloader)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._advance_eval()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._end_eval()

    def before_test_epoch(self, runner) -> None:
        self._start_eval("test", runner.test_loop.dataloader)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._advance_eval()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._end_eval()


@HOOKS.register_module()
class LastMetricsHook(Hook):
    """Keeps the metrics of the latest validation pass, for the run's metrics JSON."""

    priority = "LOW"

    def __init__(self) -> None:
        self.metrics: dict[str, float] | None = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics is not None:
            self.metrics = {k: float(v) for k, v in metrics.items()}

    after_test_epoch = after_val_epoch


@HOOKS.register_module()
class RankWeightsHook(Hook):
    """After training, every rank writes its own parameters to ``work_dir/rank_weights/rank{r}.pth``.

    DDP keeps replicas identical only if every gradient is all-reduced; comparing these files
    is the direct check (a parameter that some rank never updated, or updated alone, shows).
    """

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        params = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
        folder = osp.join(runner.work_dir, "rank_weights")
        os.makedirs(folder, exist_ok=True)
        torch.save(params, osp.join(folder, f"rank{get_rank()}.pth"))


@HOOKS.register_module()
class CrashHook(Hook):
    """Fault injection for resume drills: the process kills itself after iteration ``at_iter``.

    SIGKILL, not an exception: no ``finally`` block, no atexit handler, no flush runs, exactly
    as when the OOM killer or a pre-empted node ends a job. Runs after the checkpoint hook, so
    a checkpoint due at the same iteration is written first. Set it with
    ``--cfg-options crash_at_iter=N``.
    """

    priority = "LOWEST"

    def __init__(self, at_iter: int) -> None:
        if at_iter < 1:
            raise ValueError(f"at_iter must be >= 1, got {at_iter}")
        self.at_iter = int(at_iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at_iter:
            runner.logger.warning(f"CrashHook: killing the process after iteration {self.at_iter}")
            for handler in runner.logger.handlers:
                handler.flush()
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


class DivergenceError(UserError, RuntimeError):
    """Training produced a non-finite loss, gradient norm or weight; the run was stopped."""


DIVERGENCE_CAUSES = (
    "Usual causes: a learning rate too high (restart with e.g. --cfg-options schedule.lr=1e-3), "
    "gradient clipping off (schedule.grad_clip=10), fp16 overflow (amp=False) or NaN/inf in "
    "the input data."
)


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an inf.

    One device synchronisation per device when all is well (this runs every iteration).
    """
    floats = {k: t for k, t in tensors.items()
              if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()}
    by_device: dict[torch.device, list[str]] = {}
    for name, t in floats.items():
        by_device.setdefault(t.device, []).append(name)
    bad = []
    for names in by_device.values():
        flags = torch.stack([torch.isfinite(floats[n]).all() for n in names]).tolist()
        bad += [n for n, ok in zip(names, flags, strict=True) if not ok]
    return bad


def _as_float(value: object) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)):
        return float(value)
    return None


@HOOKS.register_module()
class DivergenceHook(Hook):
    """Stops training at the first iteration whose loss, gradient norm or weights are not finite.

    A run that diverged would otherwise train on NaN to the end, rotate its good checkpoints
    out for NaN ones and report mAP 0 with exit status 0. This hook runs after the optimizer
    step and before the checkpoint hook (priority ABOVE_NORMAL vs VERY_LOW), so the state of a
    diverged iteration is never saved and the checkpoints already on disk are kept.
    ``BEVRunner.save_checkpoint`` refuses non-finite weights as well (a second line of defence
    for saves outside this hook). The gradient norm is checked where mmengine logs one (with
    gradient clipping) and not under AMP, whose loss scaler skips steps with inf gradients.
    """

    priority = "ABOVE_NORMAL"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        problems = []
        terms = {k: _as_float(v) for k, v in (outputs or {}).items()}
        bad_terms = {k: v for k, v in terms.items() if v is not None and not math.isfinite(v)}
        if bad_terms:
            problems.append("loss terms " + ", ".join(f"{k}={v}" for k, v in bad_terms.items()))
        grad = runner.message_hub.log_scalars.get("train/grad_norm")
        amp = type(runner.optim_wrapper).__name__.startswith("Amp")
        if grad is not None and not amp and not math.isfinite(float(grad.current())):
            problems.append(f"gradient norm {float(grad.current())}")
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bad_weights = nonfinite_tensors(dict(model.named_parameters()))
        if bad_weights:
            problems.append(f"{len(bad_weights)} weight tensors (e.g. {bad_weights[:3]})")
        if not problems:
            return
        finite = {k: v for k, v in terms.items() if v is not None and k not in bad_terms}
        last = runner.message_hub.get_info("last_ckpt")
        raise DivergenceError(
            f"training diverged at iteration {runner.iter + 1} of {runner.max_iters}: "
            f"non-finite {'; '.join(problems)}"
            + (f" (finite terms: {', '.join(f'{k}={v:.4g}' for k, v in finite.items())})"
               if finite else "")
            + ". The run was stopped and this state was not saved; "
            + (f"the last finite checkpoint is {last}. " if last else "no checkpoint was written yet. ")
            + DIVERGENCE_CAUSES
        )
