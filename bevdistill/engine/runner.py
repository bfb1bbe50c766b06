"""Experiment config -> mmengine ``Runner``: the one place where training is wired together.

An *experiment config* (``bevdistill/configs/experiments/*.py``) states what to train in a few
high-level keys: ``model``, ``train_dataset``/``val_dataset``, ``data`` (batch size, workers),
``schedule`` (iterations, learning rate, warm-up, clipping, intervals), ``seed``, ``amp``.
:func:`build_runner_config` expands them into a full mmengine runner config, so that
``--max-iters`` or ``--cfg-options schedule.lr=...`` rescale the warm-up/cosine schedule and
the intervals consistently instead of leaving stale numbers in five places.

What the expansion fixes once for every experiment:

* AdamW with gradient clipping; ``AmpOptimWrapper`` only when CUDA is there and ``amp=True``
  (mmengine's AMP wrapper refuses to build on a CPU, and CPU autocast would gain nothing here);
* linear warm-up then cosine decay, per iteration (``IterBasedTrainLoop``);
* keyed, resumable randomness (:mod:`bevdistill.engine.randomness`) and atomic checkpoints with
  ``weights_only``-safe loading (:mod:`bevdistill.engine.checkpoint`);
* divergence stops the run (:class:`~bevdistill.engine.hooks.DivergenceHook`) and a checkpoint
  with non-finite weights is never written, so the last finite one stays on disk;
* ``resume=True`` starts from the newest checkpoint that loads completely (a stale pointer or
  a corrupt newest file is skipped, with a warning) after removing killed writes' temp files;
  ``init_from=<checkpoint>`` starts a new run from those weights, every key checked;
* DDP through mmengine's launcher. mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and
  so fails on a CPU-only torch; without CUDA :func:`setup_distributed` opens the gloo process
  group itself from torchrun's environment before the Runner exists (the Runner then skips
  ``init_dist``) and the model is wrapped with ``device_ids=None``, as CPU DDP requires.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.dist import is_main_process, master_only
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from bevdistill._io import atomic_write_bytes, atomic_write_with
from bevdistill.engine.checkpoint import (
    allow_mmengine_checkpoint_globals,
    newest_complete_checkpoint,
    remove_stale_temp_files,
)
from bevdistill.engine.hooks import DIVERGENCE_CAUSES, DivergenceError, nonfinite_tensors
from bevdistill.engine.validate import ROLES, check_experiment, check_section, load_config_file
from bevdistill.errors import ExperimentConfigError, UserError
from bevdistill.losses._checks import NonFiniteLossError
from bevdistill.models.build import CONFIG_DIR, list_presets

EXPERIMENT_DIR = CONFIG_DIR / "experiments"
LAUNCHERS = ("none", "pytorch")

DEFAULT_DATA = dict(batch_size=4, val_batch_size=4, num_workers=0)
DEFAULT_SCHEDULE = dict(
    max_iters=1000,
    lr=2e-3,
    weight_decay=0.01,
    betas=(0.9, 0.99),
    warmup_iters=100,
    warmup_start_factor=0.1,
    min_lr_ratio=0.01,
    grad_clip=10.0,
    val_interval=None,  # None: validate once, at the end
    checkpoint_interval=None,  # None: one checkpoint, at the end
    max_keep_ckpts=2,
    log_interval=50,
)


class NoGradientError(UserError, RuntimeError):
    """The training loss has no gradient: the model computed it with gradients off."""


class LaunchError(UserError, ValueError):
    """``--launcher pytorch`` was used outside torchrun (its environment variables are missing)."""


# --- finding and loading experiment configs ---------------------------------------------------


def list_experiments() -> list[str]:
    """Names of the shipped experiment configs (``bevdistill/configs/experiments``)."""
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """A config file from a path or a shipped experiment name (``train_student_ci``)."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    stem = Path(text).name.removesuffix(".py")
    candidate = EXPERIMENT_DIR / f"{stem}.py"
    if candidate.is_file() and (Path(text).parent in (Path("."), Path("experiments"))):
        return candidate

    raise ExperimentConfigError(
        f"config {text!r} is neither an existing file nor a shipped experiment. Shipped "
        f"experiments: {', '.join(list_experiments())} (in {EXPERIMENT_DIR}); model presets "
        f"for a config's _base_: {', '.join(list_presets())}."
    )


def load_experiment(
    name_or_path: str | os.PathLike, cfg_options: Mapping[str, Any] | None = None
) -> Config:
    """Load an experiment config and apply ``--cfg-options`` style overrides."""
    path = resolve_config(name_or_path)
    cfg = load_config_file(path)
    file_keys = set(cfg)
    if cfg_options:
        try:
            cfg.merge_from_dict(dict(cfg_options))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExperimentConfigError(
                f"--cfg-options {dict(cfg_options)} cannot be applied to {path.name}: {exc}"
            ) from exc
    missing = [k for k in ("model", "val_dataset") if k not in cfg]
    if missing:
        raise ExperimentConfigError(
            f"{path} lacks {missing}: an experiment config needs a model and a val_dataset "
            f"(see {EXPERIMENT_DIR / 'train_student.py'})"
        )
    role = cfg.get("role")
    if role not in ROLES:
        raise ExperimentConfigError(f"{path}: role must be one of {ROLES}, got {role!r}")
    check_model_registered(cfg, path)
    register_modules()  # the registered classes' signatures are the known model keys
    check_experiment(cfg, file_keys)
    return cfg


def check_model_registered(cfg: Config, path: Any) -> None:
    """The model's ``type`` is in mmengine's registry, or an error naming ``custom_imports``."""
    from mmengine.registry import MODELS

    register_modules()
    kind = cfg.model.get("type") if isinstance(cfg.model, Mapping) else None
    if isinstance(kind, str) and MODELS.get(kind) is None:
        raise ExperimentConfigError(
            f"{path}: model type {kind!r} is not registered. Name the module that defines it in "
            "the config's custom_imports; a config that sets its own custom_imports replaces its "
            "base's list, so keep the base's modules in it, e.g. custom_imports = dict(imports="
            "['bevdistill.distiller', 'my_terms'])"
        )


def experiment_name(cfg: Config) -> str:
    return Path(cfg.filename).stem if cfg.filename else "experiment"


# --- registering the project's components -----------------------------------------------------


def register_modules() -> None:
    """Import the modules that register datasets, models, metric, hooks in mmengine's registries.

    Models built on top of the engine (the ``Distiller``) are not imported here: the configs that
    use them name their module in ``custom_imports``, as mmengine intends, so that the engine
    never imports the layers above it.
    """
    import bevdistill.data  # noqa: F401  SyntheticBEVDataset, bev_collate
    import bevdistill.engine.checkpoint  # noqa: F401  AtomicCheckpointHook
    import bevdistill.engine.hooks  # noqa: F401  ProgressBarHook, LastMetricsHook, ...
    import bevdistill.engine.metric  # noqa: F401  BEVDetectionMetric
    import bevdistill.engine.randomness  # noqa: F401  keyed sampler/dataset, RNG hook, loop
    import bevdistill.models.detector  # noqa: F401  PillarBEVDetector


# --- devices and processes -------------------------------------------------------------------


def setup_distributed(launcher: str) -> None:
    """Open the process group for ``launcher='pytorch'`` when mmengine cannot (no CUDA).

    With CUDA, mmengine's ``init_dist`` (nccl) runs inside the Runner as usual.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "none" or torch.cuda.is_available() or torch_dist.is_initialized():
        return
    needed = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    missing = [k for k in needed if k not in os.environ]
    if missing:
        raise LaunchError(
            f"--launcher pytorch needs torchrun's environment; {missing} are not set. Start "
            "with: torchrun --nproc_per_node=N -m bevdistill train ... --launcher pytorch"
        )
    torch_dist.init_process_group(
        backend="gloo",
        init_method="env://",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timedelta(minutes=30),
    )


def device_description() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"
    return "cpu"


# --- config expansion ------------------------------------------------------------------------


def _merged(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, what: str) -> dict:
    check_section(what, given)
    return {**defaults, **dict(given or {})}


_RUNS_IN_PROCESS = itertools.count()


def _unique_name(stem: str) -> str:
    # mmengine keys its logger and message hub by experiment name, and its default name has a
    # one-second resolution: two runners built within a second (a notebook training a teacher
    # then a student) would share one message hub and mix their logs.
    return f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUNS_IN_PROCESS)}"


def _param_schedulers(s: Mapping[str, Any]) -> list[dict]:
    max_iters = s["max_iters"]
    warmup = min(int(s["warmup_iters"]), max_iters // 2)  # short CI runs keep a cosine phase
    if warmup < 2:
        # mmengine's LinearLR over a single step never leaves start_factor: the cosine phase
        # would then decay from a tenth of the learning rate.
        warmup = 0
    schedulers = []
    if warmup > 0:
        schedulers.append(dict(
            type="LinearLR", start_factor=s["warmup_start_factor"], by_epoch=False,
            begin=0, end=warmup,
        ))
    schedulers.append(dict(
        type="CosineAnnealingLR", by_epoch=False, begin=warmup, end=max_iters,
        T_max=max_iters - warmup, eta_min_ratio=s["min_lr_ratio"],
    ))
    return schedulers


def _dataloader(dataset: Mapping, batch_size: int, num_workers: int, sampler: dict) -> dict:
    return dict(
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        sampler=sampler,
        collate_fn=dict(type="bev_collate"),
        dataset=copy.deepcopy(dict(dataset)),
    )


def build_runner_config(
    exp: Config,
    work_dir: str | os.PathLike,
    *,
    launcher: str = "none",
    resume: bool = False,
    max_iters: int | None = None,
    train: bool = True,
) -> Config:
    """Expand an experiment config into an mmengine runner config (see the module docstring).

    ``train=False`` leaves out the training parts (for evaluation).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    sched = _merged(DEFAULT_SCHEDULE, exp.get("schedule"), "schedule")
    data = _merged(DEFAULT_DATA, exp.get("data"), "data")
    if max_iters is not None:
        sched["max_iters"] = int(max_iters)
    if sched["max_iters"] < 1:
        raise ExperimentConfigError(f"max_iters must be >= 1, got {sched['max_iters']}")
    n = sched["max_iters"]
    val_interval = min(sched["val_interval"] or n, n)
    ckpt_interval = min(sched["checkpoint_interval"] or n, n)
    seed = int(exp.get("seed", 0))
    use_amp = bool(exp.get("amp", False)) and torch.cuda.is_available()
    distributed = launcher != "none"

    cfg = dict(
        model=copy.deepcopy(exp.model.to_dict() if isinstance(exp.model, ConfigDict) else exp.model),
        work_dir=os.fspath(work_dir),
        experiment_name=exp.get("experiment_name") or _unique_name(experiment_name(exp)),
        launcher=launcher,
        resume=resume,
        load_from=None,
        randomness=dict(seed=seed, deterministic=bool(exp.get("deterministic", False)),
                        diff_rank_seed=False),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl" if torch.cuda.is_available() else "gloo"),
        ),
        val_dataloader=_dataloader(
            exp.val_dataset, data["val_batch_size"], data["num_workers"],
            dict(type="DefaultSampler", shuffle=False),
        ),
        val_cfg=dict(type="ValLoop"),
        val_evaluator=copy.deepcopy(dict(exp.get("val_evaluator", dict(type="BEVDetectionMetric")))),
        default_hooks=dict(
            runtime_info=dict(type="RuntimeInfoHook"),
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=max(1, min(sched["log_interval"], n)),
                        log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="AtomicCheckpointHook", by_epoch=False, interval=ckpt_interval,
                            max_keep_ckpts=sched["max_keep_ckpts"], save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        custom_hooks=[dict(type="RNGStateHook"), dict(type="ProgressBarHook"),
                      dict(type="LastMetricsHook"), dict(type="DivergenceHook")],
        log_processor=dict(by_epoch=False, window_size=max(1, min(sched["log_interval"], n))),
        log_level=exp.get("log_level", "INFO"),
        default_scope="mmengine",
        # Kept for the record (checkpoint meta, the metrics JSON): the experiment as given.
        experiment=dict(name=experiment_name(exp), role=exp.role, schedule=sched, data=data,
                        seed=seed, amp=use_amp, init_from=exp.get("init_from")),
    )
    if train:
        if "train_dataset" not in exp:
            raise ExperimentConfigError("the experiment config has no train_dataset")
        optimizer = dict(type="AdamW", lr=sched["lr"], weight_decay=sched["weight_decay"],
                         betas=tuple(sched["betas"]))
        cfg.update(
            train_dataloader=_dataloader(
                dict(type="KeyedDataset", dataset=exp.train_dataset, seed=seed),
                data["batch_size"], data["num_workers"],
                dict(type="KeyedInfiniteSampler", shuffle=True),
            ),
            train_cfg=dict(type="FastForwardIterBasedTrainLoop", max_iters=n,
                           val_interval=val_interval),
            optim_wrapper=dict(
                type="AmpOptimWrapper" if use_amp else "OptimWrapper",
                optimizer=optimizer,
                clip_grad=dict(max_norm=sched["grad_clip"], norm_type=2)
                if sched["grad_clip"] else None,
                **(dict(dtype=exp.get("amp_dtype", "float16")) if use_amp else {}),
            ),
            param_scheduler=_param_schedulers(sched),
        )
        if exp.get("save_rank_weights", False):
            cfg["custom_hooks"].append(dict(type="RankWeightsHook"))
        if exp.get("crash_at_iter") is not None:
            cfg["custom_hooks"].append(dict(type="CrashHook", at_iter=int(exp.crash_at_iter)))
    if distributed:
        cfg["model_wrapper_cfg"] = dict(
            type="MMDistributedDataParallel",
            broadcast_buffers=False,
            find_unused_parameters=bool(exp.get("find_unused_parameters", False)),
            # CPU DDP needs device_ids=None; with CUDA mmengine fills in [LOCAL_RANK].
            **({} if torch.cuda.is_available() else dict(device_ids=None)),
        )
    return Config(cfg)


# --- the runner ---------------------------------------------------------------------------------


@contextmanager
def _built_from_config(section: str) -> Iterator[None]:
    """A constructor's ValueError/TypeError/KeyError while mmengine builds ``section`` from the
    config is a config value no check caught (``model.voxel_size=[0, 1, 8]``): a user error."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ExperimentConfigError(
            f"the experiment's {section} cannot be built from its config: {message}. Fix the "
            f"value in the config file or with --cfg-options {section}.KEY=VALUE"
        ) from exc


class BEVRunner(Runner):
    """mmengine ``Runner`` whose checkpoints are written atomically (temp file + ``os.replace``),
    never hold non-finite weights, and are resumed from the newest complete one."""

    resume_report: dict | None = None  # what --resume continued, for the run record

    def build_model(self, model):
        with _built_from_config("model"):
            return super().build_model(model)

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        section = dataloader.get("dataset", {}) if isinstance(dataloader, dict) else {}
        with _built_from_config("train_dataset" if section.get("type") == "KeyedDataset"
                                else "val_dataset"):
            return Runner.build_dataloader(dataloader, seed, diff_rank_seed)

    def train(self):
        """Train; NaN/inf in a loss is reported as divergence with its iteration (in a distill
        run the losses check their inputs, so it stops inside the forward, before DivergenceHook)."""
        try:
            return super().train()
        except RuntimeError as exc:
            if "does not require grad" not in str(exc):
                raise
            raise NoGradientError(
                f"training step {self.iter + 1}: the loss has no gradient ({exc}). The model's "
                "loss() ran with gradients off: a torch.no_grad() around the student's forward, or "
                "requires_grad_(False) on all its parameters. Only a teacher may run without them"
            ) from exc
        except NonFiniteLossError as exc:
            last = self.message_hub.get_info("last_ckpt")
            raise DivergenceError(
                f"training diverged at iteration {self.iter + 1} of {self.max_iters}: {exc}. "
                "The run was stopped; "
                + (f"the last finite checkpoint is {last}. " if last else "no checkpoint was written yet. ")
                + DIVERGENCE_CAUSES
            ) from exc

    def load_or_resume(self) -> None:
        """Clean up killed writes; on resume pick the newest complete checkpoint and say so."""
        if is_main_process():
            removed = remove_stale_temp_files(self.work_dir)
            if removed:
                self.logger.warning(
                    f"removed {len(removed)} temporary file(s) of interrupted checkpoint writes "
                    f"in {self.work_dir}: {removed}"
                )
        if self._resume and self._load_from is None and not self._has_loaded:
            self._load_from = self._complete_checkpoint()
            if self._load_from is None:
                self._resume = False  # nothing to resume: train from scratch
        super().load_or_resume()
        init_from = self.cfg.get("experiment", {}).get("init_from")
        if init_from and not self._resume:  # a resumed run has its own weights already
            from bevdistill.engine.weights import load_weights

            model = self.model.module if is_model_wrapper(self.model) else self.model
            self.logger.info(f"init_from: {load_weights(model, init_from, what='init_from')}")

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True, map_location="default") -> None:
        """mmengine's resume, after checking the checkpoint is this experiment's; a changed
        learning-rate schedule is rebuilt for the new settings (see :mod:`.resume`)."""
        from bevdistill.engine.resume import check_resumable, rebuild_lr_schedule

        now = self.cfg.get("experiment", {})
        model = self.model.module if is_model_wrapper(self.model) else self.model
        changes = check_resumable(filename, now, model)
        rebuild = bool(changes["lr_schedule"])
        super().resume(filename, resume_optimizer,
                       resume_param_scheduler and not rebuild, map_location)
        self.resume_report = dict(checkpoint=filename, from_iter=self.iter, **changes)
        if any(changes.values()):
            self.logger.warning(rebuild_lr_schedule(self, now["schedule"], changes))
        self.resume_report["lr_at_resume"] = self.optim_wrapper.get_lr()["lr"][0]

    def _complete_checkpoint(self) -> str | None:
        path, skipped = newest_complete_checkpoint(self.work_dir)
        for reason in skipped:
            self.logger.warning(f"--resume: skipping a checkpoint: {reason}")
        pointer = os.path.join(self.work_dir, "last_checkpoint")
        named = Path(pointer).read_text().strip() if os.path.isfile(pointer) else None
        if path is None:
            self.logger.warning(
                f"--resume: no complete checkpoint in {self.work_dir}; training from scratch"
            )
            return None
        if named is None or os.path.abspath(named) != os.path.abspath(path):
            self.logger.warning(
                f"--resume: last_checkpoint names {named!r}, but the newest complete checkpoint "
                f"is {path}; resuming from {path} and pointing last_checkpoint at it"
            )
            if is_main_process():
                atomic_write_bytes(path.encode(), pointer)
        return path

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, file_client_args=None,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta: dict | None = None, by_epoch: bool = True,
                        backend_args: dict | None = None) -> None:
        if "://" in os.fspath(out_dir) or file_client_args or backend_args:
            raise ValueError(
                "BEVRunner writes checkpoints atomically to local folders only; got "
                f"out_dir={out_dir!r}, backend_args={backend_args}. Save locally and copy."
            )
        self._check_finite_weights(filename)
        save = super().save_checkpoint  # mmengine writes out_dir/<name>: it gets the temp name
        atomic_write_with(
            os.path.join(out_dir, filename),
            lambda tmp: save(out_dir, os.path.basename(tmp), save_optimizer=save_optimizer,
                             save_param_scheduler=save_param_scheduler, meta=meta,
                             by_epoch=by_epoch),
        )

    def _check_finite_weights(self, filename: str) -> None:
        model = self.model.module if is_model_wrapper(self.model) else self.model
        bad = nonfinite_tensors(model.state_dict())
        if bad:
            raise DivergenceError(
                f"refusing to write checkpoint {filename} at iteration {self.iter}: "
                f"{len(bad)} tensors hold NaN or inf (e.g. {bad[:3]}); the checkpoints already on "
                f"disk are kept. {DIVERGENCE_CAUSES}"
            )


def make_runner(
    exp: Config,
    work_dir: str | os.PathLike,
    *,
    launcher: str = "none",
    resume: bool = False,
    max_iters: int | None = None,
    train: bool = True,
) -> BEVRunner:
    """Build the :class:`BEVRunner` for an experiment (registers modules, sets up DDP)."""
    register_modules()
    allow_mmengine_checkpoint_globals()
    setup_distributed(launcher)
    cfg = build_runner_config(exp, work_dir, launcher=launcher, resume=resume,
                              max_iters=max_iters, train=train)
    return BEVRunner.from_cfg(cfg)


