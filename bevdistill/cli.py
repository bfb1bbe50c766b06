"""``bevdistill``: train a teacher or a student, distil, evaluate, export the student.

    bevdistill train teacher|student [CONFIG] [--work-dir D] [--max-iters N] [--resume]
                                     [--launcher none|pytorch] [--cfg-options k=v ...]
    bevdistill distill [CONFIG] [same options]
    bevdistill train MMDET3D_CONFIG.py [same options]
    bevdistill evaluate CONFIG CHECKPOINT [--num-samples N] [--work-dir D]
    bevdistill export CONFIG CHECKPOINT OUT
    bevdistill list

CONFIG is a shipped experiment name (``bevdistill list``) or a config file. An mmdet3d config
(``default_scope = 'mmdet3d'``, e.g. bevdistill/configs/mmdet3d/*.py with a BEVDistiller model)
runs as it is on mmengine's Runner in the mmdet3d scope; export then writes the student's
weights and a plain mmdet3d config (OUT and OUT with suffix .py). Every command writes
a JSON record of its metrics (``WORK_DIR/metrics.json``; ``OUT.json`` for export). Many
processes: ``torchrun --nproc_per_node=N -m bevdistill train student --launcher pytorch``.

A user error (a bad path, a corrupt checkpoint, a diverged run, a config mistake) ends with a
one- or two-line message, exit status 2, and the fix in ``--cfg-options key=value`` form where
it is a config key; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import DictAction

from bevdistill.engine.checkpoint import MissingCheckpointError
from bevdistill.engine.lock import work_dir_lock
from bevdistill.errors import ExperimentConfigError, UserError


class WorkDirError(UserError, ValueError):
    """``--work-dir`` is a file, or a folder that cannot be created."""


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` with a usage error, not a traceback, for an entry without '='."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if "=" not in v or not v.split("=", 1)[0].strip()]
        if bad:
            fix = (f"write e.g. {option_string} {bad[0]}=VALUE" if "=" not in bad[0]
                   else "the key before '=' is empty")
            raise argparse.ArgumentError(
                self, f"{bad[0]!r} is not KEY=VALUE; {fix} (a dotted key such as "
                "schedule.lr=1e-3)")
        super().__call__(parser, namespace, values, option_string)


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors in two lines, as every other user error (argparse prints the whole usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` shows the usage)\n")


# Python-form advice in library messages, and its command-line form.
CLI_FORM = {
    "pass driver=dict(strict_teacher=False)": "pass --cfg-options model.driver.strict_teacher=False",
    "set strict_teacher=False": "set --cfg-options model.driver.strict_teacher=False",
}
TEACHER_FIX = ("Fix: --cfg-options model.teacher_ckpt=PATH with a checkpoint of this teacher "
               "config (from `bevdistill train teacher`), or model.teacher_ckpt=None to distil "
               "from a random teacher.")
DEFAULT_CONFIG = {"teacher": "train_teacher", "student": "train_student", "distill": "distill"}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", help="output folder (default: work_dirs/<config name>)")
    p.add_argument("--max-iters", type=int, help="override schedule.max_iters (rescales the schedule)")
    p.add_argument("--resume", action="store_true",
                   help="continue from WORK_DIR/last_checkpoint (exactly, after a crash)")
    p.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                   help="'pytorch' under torchrun for DDP (gloo on CPU, nccl on GPU)")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={},
                   help="override config keys, e.g. schedule.lr=1e-3 data.num_workers=2")
    _add_debug(p)


def _add_debug(p: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    # SUPPRESS on subcommands: their default would otherwise override `bevdistill --debug CMD`.
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the full traceback of an error instead of a short message")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="bevdistill",
        description="Knowledge distillation for BEV detectors:" + __doc__.split(":", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a teacher or a student detector alone")
    train.add_argument("role", metavar="teacher|student|MMDET3D_CONFIG",
                       help="which model to train, or an mmdet3d config file to run as it is")
    train.add_argument("config", nargs="?", help="experiment name or config file")
    _add_run_options(train)

    distill = sub.add_parser("distill", help="train a student with a frozen teacher")
    distill.add_argument("config", nargs="?", help="experiment name or config file")
    _add_run_options(distill)

    evaluate = sub.add_parser("evaluate", help="validation metrics of a checkpoint")
    evaluate.add_argument("config")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--num-samples", type=int, help="evaluate on the first N val samples")
    evaluate.add_argument("--work-dir", help="output folder (default: work_dirs/eval_<config>)")
    evaluate.add_argument("--launcher", choices=("none", "pytorch"), default="none")
    evaluate.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    _add_debug(evaluate)

    export = sub.add_parser("export", help="student-only checkpoint from a distillation checkpoint")
    export.add_argument("config", help="the distill config the checkpoint was trained with")
    export.add_argument("checkpoint")
    export.add_argument("out")
    export.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default={})
    _add_debug(export)

    _add_debug(sub.add_parser("list", help="list the shipped experiment configs"))
    return parser


def _check_teacher_ckpt(exp) -> None:
    ckpt = exp.model.get("teacher_ckpt")
    if not isinstance(ckpt, (str, os.PathLike)):
        return
    if Path(ckpt).is_file():
        _warn_other_world(ckpt, exp)
        return
    state = "is a folder, not a checkpoint file" if Path(ckpt).is_dir() else "does not exist"
    raise MissingCheckpointError(
        f"teacher checkpoint {os.path.normpath(ckpt)!r} (model.teacher_ckpt) {state}. Train one "
        "with `bevdistill train teacher` and pass --cfg-options model.teacher_ckpt=PATH/iter_N.pth"
    )


def _warn_other_world(ckpt, exp) -> None:
    """Warn when a shipped teacher was trained on another synthetic world than the one it is
    about to teach on (its card's ``world_version``): its scores there are not its card's."""
    import warnings

    from bevdistill.data import world_version_of
    from bevdistill.pretrained import shipped_world_version

    taught = shipped_world_version(ckpt)
    world = world_version_of(exp.train_dataset) if "train_dataset" in exp else None
    if taught is not None and world is not None and taught != world:
        warnings.warn(
            f"the teacher {os.path.normpath(ckpt)!r} was trained on world_version {taught} (its "
            f"card) and now teaches on world_version {world}; retrain the teacher on world "
            f"{world}, or distill on its world with --cfg-options "
            f"train_dataset.world_version={taught} val_dataset.world_version={taught}",
            UserWarning, stacklevel=2)


def _prepare_work_dir(work_dir: Path) -> Path:
    """Create ``work_dir`` now, so that a bad one fails in one line before any model is built."""
    if work_dir.exists() and not work_dir.is_dir():
        raise WorkDirError(f"--work-dir {work_dir} is a file, not a folder; pass another --work-dir")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkDirError(
            f"cannot create --work-dir {work_dir}: {exc.strerror or exc}; pass a folder you can "
            "write to, e.g. --work-dir work_dirs/NAME"
        ) from exc
    return work_dir


def _finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _mmdet3d_config(args: argparse.Namespace) -> str | None:
    """The mmdet3d config file this command was given, if it was given one."""
    from bevdistill.mmdet3d.train import is_mmdet3d_config

    given = [getattr(args, "role", None), args.config]
    return next((c for c in given if c and is_mmdet3d_config(c)), None)


def cmd_train_mmdet3d(args: argparse.Namespace, argv: Sequence[str], config: str) -> dict:
    from mmengine.dist import is_main_process

    from bevdistill.engine.report import run_record, write_json
    from bevdistill.mmdet3d.train import make_mmdet3d_runner

    started = time.time()
    if args.command == "train" and args.config:
        raise ExperimentConfigError(
            f"an mmdet3d config is the whole job: `bevdistill train {config}` takes no second "
            f"config (got {args.config!r})"
        )
    work_dir = _prepare_work_dir(Path(args.work_dir or Path("work_dirs") / Path(config).stem))
    with work_dir_lock(work_dir, argv):
        runner = make_mmdet3d_runner(config, work_dir, launcher=args.launcher, resume=args.resume,
                                     max_iters=args.max_iters, cfg_options=args.cfg_options)
        runner.train()
        last = work_dir / "last_checkpoint"
        logs = runner.message_hub.log_scalars
        metrics = {k: round(float(v.current()), 6) for k, v in logs.items() if k.startswith("train/")}
        record = run_record(
            command=args.command, argv=argv, config=Path(config).stem, config_path=config,
            started=started, metrics=metrics, seed=runner.seed,
            extra=dict(work_dir=str(work_dir), max_iters=runner.max_iters, iters_done=runner.iter,
                       resumed=bool(args.resume), world_size=runner.world_size, scope="mmdet3d",
                       cfg_options=dict(args.cfg_options),
                       checkpoint=last.read_text().strip() if last.is_file() else None),
        )
        if is_main_process():
            path = write_json(work_dir / "metrics.json", record)
            print(f"bevdistill: last training losses {metrics} -> {path}")
    _finish_distributed()
    return record


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    import bevdistill.distiller  # noqa: F401  registers Distiller whatever custom_imports says
    from bevdistill.engine.runner import experiment_name, load_experiment, make_runner

    mmdet3d_config = _mmdet3d_config(args)
    if mmdet3d_config:
        return cmd_train_mmdet3d(args, argv, mmdet3d_config)
    if args.command == "train" and args.role not in ("teacher", "student"):
        raise ExperimentConfigError(
            f"`bevdistill train` takes teacher, student or an mmdet3d config file "
            f"(default_scope = 'mmdet3d'); got {args.role!r}"
        )
    started = time.time()
    role = "distill" if args.command == "distill" else args.role
    exp = load_experiment(args.config or DEFAULT_CONFIG[role], args.cfg_options)
    name = experiment_name(exp)
    if exp.role != role:
        verb = "bevdistill distill" if exp.role == "distill" else f"bevdistill train {exp.role}"
        raise ExperimentConfigError(
            f"config {name!r} is a {exp.role!r} experiment, not {role!r}; run `{verb} {name}`"
        )
    if role == "distill":
        _check_teacher_ckpt(exp)
    work_dir = _prepare_work_dir(Path(args.work_dir or Path("work_dirs") / name))
    with work_dir_lock(work_dir, argv):
        runner = make_runner(exp, work_dir, launcher=args.launcher, resume=args.resume,
                             max_iters=args.max_iters)
        runner.train()
        return _write_train_record(args, argv, exp, runner, work_dir, started, role)


def _write_train_record(args, argv, exp, runner, work_dir: Path, started: float, role: str) -> dict:
    from mmengine.dist import is_main_process

    from bevdistill.data import world_version_of
    from bevdistill.engine.hooks import LastMetricsHook
    from bevdistill.engine.report import run_record, write_json
    from bevdistill.engine.runner import experiment_name

    name = experiment_name(exp)
    metrics = next(h.metrics for h in runner.hooks if isinstance(h, LastMetricsHook))
    last = work_dir / "last_checkpoint"
    record = run_record(
        command=args.command, argv=argv, config=name, config_path=exp.filename, started=started,
        metrics=metrics, seed=exp.get("seed", 0),
        extra=dict(
            role=role, work_dir=str(work_dir), max_iters=runner.max_iters, iters_done=runner.iter,
            resumed=bool(args.resume), resume=runner.resume_report,
            schedule=runner.cfg.experiment.schedule, world_size=runner.world_size,
            amp=runner.cfg.experiment.amp, cfg_options=dict(args.cfg_options),
            checkpoint=last.read_text().strip() if last.is_file() else None,
            teacher_ckpt=exp.model.get("teacher_ckpt") if role == "distill" else None,
            world_version=world_version_of(exp.train_dataset) if "train_dataset" in exp else None,
        ),
    )
    if is_main_process():
        path = write_json(work_dir / "metrics.json", record)
        print(f"bevdistill: metrics {record['metrics']} -> {path}")
    _finish_distributed()
    return record


def cmd_evaluate(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from mmengine.dist import is_main_process

    import bevdistill.distiller  # noqa: F401  registers Distiller whatever custom_imports says
    from bevdistill.data import world_version_of
    from bevdistill.engine.checkpoint import verify_shipped_weights
    from bevdistill.engine.evaluate import evaluate_checkpoint
    from bevdistill.engine.report import run_record, write_json
    from bevdistill.engine.runner import experiment_name, load_experiment
    from bevdistill.pretrained import shipped_world_version

    started = time.time()
    exp = load_experiment(args.config, args.cfg_options)
    verify_shipped_weights(args.checkpoint)  # a shipped model: its card's SHA-256
    world = shipped_world_version(args.checkpoint)
    if world is not None and not any("world_version" in key for key in args.cfg_options):
        exp.val_dataset.world_version = world  # its card's scores are on its own world
        print(f"bevdistill: scoring a shipped model on its card's world (world_version={world})")
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ExperimentConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
        exp.val_dataset.num_samples = args.num_samples
    name = experiment_name(exp)
    work_dir = _prepare_work_dir(Path(args.work_dir or Path("work_dirs") / f"eval_{name}"))
    with work_dir_lock(work_dir, argv):
        metrics = evaluate_checkpoint(exp, args.checkpoint, work_dir, launcher=args.launcher)
        record = run_record(
            command="evaluate", argv=argv, config=name, config_path=exp.filename, started=started,
            metrics=metrics, seed=exp.get("seed", 0),
            extra=dict(checkpoint=str(Path(args.checkpoint).resolve()),
                       num_samples=exp.val_dataset.get("num_samples"), work_dir=str(work_dir),
                       world_version=world_version_of(exp.val_dataset)),
        )
        if is_main_process():
            path = write_json(work_dir / "metrics.json", record)
            print(f"bevdistill: metrics {record['metrics']} -> {path}")
    _finish_distributed()
    return record


def cmd_export(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """The student of a distillation checkpoint, written alone by the core's export path."""
    from bevdistill.engine.report import run_record, write_json

    started = time.time()
    export = _export_mmdet3d if _mmdet3d_config(args) else _export_experiment
    out, config, config_path, seed, extra = export(args)
    record = run_record(
        command="export", argv=argv, config=config, config_path=config_path, started=started,
        metrics=None, seed=seed,
        extra=dict(checkpoint=str(Path(args.checkpoint).resolve()), out=str(out.resolve()),
                   **extra),
    )
    write_json(Path(f"{out}.json"), record)
    return record


def _export_experiment(args: argparse.Namespace) -> tuple[Path, str, str, int, dict]:
    from mmengine.registry import MODELS

    import bevdistill.distiller  # noqa: F401  registers Distiller whatever custom_imports says
    from bevdistill.engine.checkpoint import read_state_dict
    from bevdistill.engine.runner import experiment_name, load_experiment, register_modules
    from bevdistill.engine.weights import check_state_dict
    from bevdistill.models.build import build_model

    exp = load_experiment(args.config, args.cfg_options)
    name = experiment_name(exp)
    if exp.role != "distill":
        raise ExperimentConfigError(
            f"export takes the student out of a distillation checkpoint, so CONFIG must be a "
            f"distill config; {name!r} is a {exp.role!r} experiment (its checkpoints already "
            "hold a detector alone)"
        )
    state = read_state_dict(args.checkpoint)
    register_modules()
    exp.model.teacher_ckpt = None  # the teacher's weights play no part in the export
    distiller = MODELS.build(exp.model)
    check_state_dict(distiller, state, args.checkpoint)
    distiller.load_state_dict(state, strict=True)
    out = distiller.export_student(args.out, meta=dict(
        source_checkpoint=str(Path(args.checkpoint).resolve()), config=name,
    ))
    # The export must load into the student alone: check it here, not in the user's next job.
    student = build_model(exp.model.student, "student")
    check_state_dict(student, read_state_dict(out, "exported student"), str(out))
    print(f"bevdistill: student written to {out} (record {out}.json)")
    return out, name, exp.filename, exp.get("seed", 0), dict(
        student_tensors=len(student.state_dict()))


def _export_mmdet3d(args: argparse.Namespace) -> tuple[Path, str, str, int, dict]:
    from bevdistill.mmdet3d.export import export_student_checkpoint
    from bevdistill.mmdet3d.train import load_mmdet3d_config

    cfg = load_mmdet3d_config(args.config, args.cfg_options)
    if cfg.model.get("type") != "BEVDistiller":
        raise ExperimentConfigError(
            f"export takes the student out of a BEVDistiller checkpoint; {args.config} declares "
            f"model type {cfg.model.get('type')!r}"
        )
    out, config_out = export_student_checkpoint(
        cfg, args.checkpoint, args.out, meta=dict(config=str(Path(args.config).resolve()))
    )
    print(f"bevdistill: student written to {out} and {config_out}; load it with "
          f"mmdet3d.apis.init_model('{config_out}', '{out}')")
    return out, Path(args.config).stem, args.config, cfg.get("randomness", {}).get("seed", 0), \
        dict(student_config=str(config_out.resolve()))


def cmd_list(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from bevdistill.engine.runner import EXPERIMENT_DIR, list_experiments

    names = list_experiments()
    print(f"experiments in {EXPERIMENT_DIR}:")
    for n in names:
        print(f"  {n}")
    mmdet3d_dir = EXPERIMENT_DIR.parent / "mmdet3d"
    mmdet3d = sorted(str(p) for p in mmdet3d_dir.glob("*.py"))
    print("mmdet3d configs (bevdistill train CONFIG.py; needs `make mmdet3d`):")
    for path in mmdet3d:
        print(f"  {path}")
    return {"experiments": names, "mmdet3d_configs": mmdet3d}


COMMANDS = {"train": cmd_train, "distill": cmd_train, "evaluate": cmd_evaluate,
            "export": cmd_export, "list": cmd_list}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bevdistill`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # The record's commit is read when bevdistill.engine.report is first imported: import it
    # before the command runs, so that a long run records the commit it started from.
    import bevdistill.engine.report  # noqa: F401

    try:
        COMMANDS[args.command](args, argv)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or args.debug:
            raise
        parser.exit(2, f"bevdistill {args.command}: error: {message} "
                       "(--debug shows the traceback)\n")
    return 0


def user_error_message(exc: BaseException) -> str | None:
    """The message for an error the user can fix, in one line plus at most one line of fix;
    None for a bug (shown as a traceback)."""
    if isinstance(exc, OSError) and not isinstance(exc, UserError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if not isinstance(exc, UserError):
        return None
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    for python_form, cli_form in CLI_FORM.items():
        message = message.replace(python_form, cli_form)
    if type(exc).__name__ == "TeacherCheckpointError":
        message = f"{message}\n{TEACHER_FIX}"
    return message


if __name__ == "__main__":
    sys.exit(main())
