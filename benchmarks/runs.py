"""Benchmark runs as subprocesses, each traced to the commit and command that made it.

A run is one ``bevdistill`` command with its own work dir. When it finishes, ``provenance.json``
is written beside its ``metrics.json``: commit, whether the tree was clean, start time, duration
and the command. A later invocation reuses a finished run only when commit and command are the
same; a run from another commit or command is moved aside (``<dir>.stale-<n>``, nothing is
deleted) and run again, and so is every run that depends on a rerun one. So one aggregate never
mixes code versions, and a benchmark killed halfway resumes where it stopped.

Each record also keeps its command without this machine's paths (``portable_command``, see
:func:`with_portable_commands`): a reader reruns it from the repository root.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.provenance import REPO_ROOT, tree_is_dirty
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.report import git_commit, portable_command, write_json

PROVENANCE = "provenance.json"
WORK_ROOT = "WORK_ROOT"  # in a portable command: the benchmark's --work-root, wherever it lies


@dataclass(frozen=True)
class RunSpec:
    """One command; ``after`` names the run whose outputs it reads (it starts once that ends).
    ``start_from``: a checkpoint put into the work dir before the command starts, for a run that
    continues another with ``--resume`` (a longer schedule) and keeps its own folder."""

    name: str
    command: list[str]
    work_dir: Path
    after: str | None = None
    start_from: Path | None = None


def _identity(command: list[str]) -> list[str]:
    """The command without the interpreter's path: the same run on another venv still matches."""
    return command[1:]


def _finished(spec: RunSpec, commit: str | None) -> tuple[bool, str]:
    """(reusable, why not) for a run already on disk."""
    prov_path = spec.work_dir / PROVENANCE
    if not (spec.work_dir / "metrics.json").is_file() or not prov_path.is_file():
        return False, "not finished"
    prov = json.loads(prov_path.read_text())
    if prov.get("commit") != commit:
        return False, f"made by commit {prov.get('commit')}, this is {commit}"
    if prov.get("command") != _identity(spec.command):
        return False, "made by another command (config or budget differ)"
    return True, ""


def _move_aside(work_dir: Path) -> Path | None:
    if not work_dir.exists():
        return None
    n = 1
    while work_dir.with_name(f"{work_dir.name}.stale-{n}").exists():
        n += 1
    target = work_dir.with_name(f"{work_dir.name}.stale-{n}")
    work_dir.rename(target)
    return target


def run_all(specs: list[RunSpec], parallel: int, env: dict[str, str], cwd: Path = REPO_ROOT
            ) -> list[dict]:
    """Run ``specs`` (``parallel`` at a time, dependencies first); returns one provenance
    record per run, with ``reused`` saying whether it was done by an earlier invocation."""
    commit, dirty = git_commit(REPO_ROOT), tree_is_dirty()
    names = {s.name for s in specs}
    for s in specs:
        if s.after is not None and s.after not in names:
            raise ValueError(f"run {s.name!r} depends on {s.after!r}, which is not in the list")
    rerun: set[str] = set()
    todo: list[RunSpec] = []
    for spec in specs:  # a run comes after the run it depends on in ``specs``
        ok, why = _finished(spec, commit)
        if ok and spec.after not in rerun:
            continue
        if spec.work_dir.exists():
            moved = _move_aside(spec.work_dir)
            print(f"rerun {spec.name}: {why or 'its input was rerun'} (old run kept in {moved})",
                  flush=True)
        rerun.add(spec.name)
        todo.append(spec)
    print(f"{len(specs) - len(todo)} of {len(specs)} runs already done; {len(todo)} to go",
          flush=True)

    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    done: set[str] = {s.name for s in specs} - rerun
    failed: list[str] = []
    while todo or running:
        for spec in list(todo):
            if len(running) >= parallel:
                break
            if spec.after is not None and spec.after not in done:
                continue
            todo.remove(spec)
            spec.work_dir.mkdir(parents=True, exist_ok=True)
            if spec.start_from is not None:
                _place_checkpoint(spec.start_from, spec.work_dir)
            log = open(spec.work_dir / "run.log", "w")  # noqa: SIM115 - closed when it ends
            log.write(" ".join(spec.command) + "\n")
            log.flush()
            proc = subprocess.Popen(spec.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd)
            running[spec.name] = (proc, time.time(), log)
            print(f"[{time.strftime('%H:%M:%S')}] start {spec.name}", flush=True)
        if not running and todo:
            blocked = [s.name for s in todo]
            raise RuntimeError(f"runs {blocked} wait for runs that failed: {failed}")
        time.sleep(0.5)
        for name, (proc, started, log) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            log.close()
            spec = next(s for s in specs if s.name == name)
            took = time.time() - started
            if proc.returncode != 0:
                failed.append(name)
                print(f"[{time.strftime('%H:%M:%S')}] FAILED (exit {proc.returncode}) {name}; "
                      f"see {spec.work_dir / 'run.log'}", flush=True)
                continue
            done.add(name)
            write_json(spec.work_dir / PROVENANCE, {
                "commit": commit, "dirty": dirty,
                "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
                .isoformat(timespec="seconds"),
                "duration_s": round(took, 1), "command": _identity(spec.command)})
            print(f"[{time.strftime('%H:%M:%S')}] done {name} in {took:.0f}s", flush=True)
    if failed:
        raise RuntimeError(f"runs failed: {failed}; see run.log in their work dirs, then rerun "
                           "the same command (finished runs are reused)")
    records = []
    for spec in specs:
        prov = json.loads((spec.work_dir / PROVENANCE).read_text())
        records.append({"name": spec.name, **prov, "command": " ".join(prov["command"]),
                        "reused": spec.name not in rerun})
    return with_portable_commands(records)


def _place_checkpoint(checkpoint: Path, work_dir: Path) -> None:
    """``checkpoint`` in ``work_dir`` under its own name, where ``--resume`` finds it (a hard
    link where the file system allows, else a copy)."""
    target = work_dir / checkpoint.name
    if not checkpoint.is_file():
        raise FileNotFoundError(f"cannot continue from {checkpoint}: the run before did not "
                                "write it (see its run.log)")
    if not target.exists():
        try:
            os.link(checkpoint, target)
        except OSError:
            shutil.copy2(checkpoint, target)


def _work_dir(command: str) -> str | None:
    tokens = command.split()
    return tokens[tokens.index("--work-dir") + 1] if "--work-dir" in tokens[:-1] else None


def portable_run_command(command: str, work_root: str) -> str:
    """A run's recorded command (``-m bevdistill ...``, without the interpreter) as anyone can
    rerun it: ``python`` in front, the runs' own folders (work dirs and the checkpoints in them)
    written under ``WORK_ROOT/``, then :func:`~bevdistill.engine.report.portable_command`
    (repository files relative to its root, any other machine path dropped with its option)."""
    root = work_root.rstrip("/") + "/"
    tokens = []
    for token in command.split():
        key, eq, value = token.rpartition("=") if "=" in token else ("", "", token)
        if value == root.rstrip("/") or value.startswith(root):
            value = WORK_ROOT + value[len(root.rstrip("/")):]
        tokens.append(f"{key}{eq}{value}")
    return portable_command(" ".join(["python", *tokens]))


def with_portable_commands(records: list[dict]) -> list[dict]:
    """``records`` with ``portable_command`` added to each, derived from its ``command`` alone:
    the work root is the deepest folder holding every ``--work-dir`` of the records of one
    scenario (of all of them where records name none), so the same records always give the
    same portable commands (``benchmarks/add_portable_commands.py`` adds them to older files)."""
    groups: dict[Any, list[str]] = {}
    for r in records:
        work_dir = _work_dir(r["command"])
        if work_dir is not None:
            groups.setdefault(r.get("scenario"), []).append(work_dir)
    roots = {k: os.path.commonpath(dirs) if len(dirs) > 1 else str(Path(dirs[0]).parent)
             for k, dirs in groups.items()}
    return [{**r, "portable_command": portable_run_command(r["command"], roots[r.get("scenario")])
             if r.get("scenario") in roots else portable_command(f"python {r['command']}")}
            for r in records]


def scalars_history(work_dir: Path) -> list[dict[str, Any]]:
    """Validation metrics over iterations, from mmengine's ``vis_data/scalars.json`` files
    (one per start of the run: a resumed run has several; later lines win)."""
    by_iter: dict[int, dict[str, Any]] = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "bev/mAP" not in row:
                continue  # a training-loss line
            by_iter[int(row["step"])] = {
                "iter": int(row["step"]), "mAP": row["bev/mAP"],
                **{k[len("bev/"):]: v for k, v in row.items()
                   if k.startswith("bev/AP_") and "@" not in k}}
    return [by_iter[i] for i in sorted(by_iter)]


def step_seconds(work_dirs: list[Path]) -> list[float]:
    """The seconds per training iteration the runs in ``work_dirs`` logged (mmengine's ``time``
    of each training-loss line: the whole iteration, data loading included), in log order."""
    times = []
    for work_dir in work_dirs:
        for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
            times += [row["time"] for row in map(json.loads, path.read_text().splitlines())
                      if "time" in row and "bev/mAP" not in row]
    return times


def read_scores(metrics_json: Path) -> dict[str, float]:
    """The mAP and per-class AP a ``bevdistill evaluate`` run wrote to ``metrics_json``."""
    metrics = json.loads(metrics_json.read_text())["metrics"]
    if not metrics or "bev/mAP" not in metrics:
        raise KeyError(f"{metrics_json} has no 'bev/mAP' (metrics: {metrics})")
    return {"mAP": metrics["bev/mAP"], **{f"AP_{c}": metrics[f"bev/AP_{c}"] for c in CLASS_NAMES}}


def run_env(preset: dict) -> dict[str, str]:
    """The environment of a run: the preset's threads per process, and no GPU on a CPU preset."""
    env = dict(os.environ)
    if preset["threads"] is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(preset["threads"])
    if preset["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env
