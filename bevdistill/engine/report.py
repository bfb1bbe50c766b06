"""The JSON record every command writes: what ran, on what, from which commit, with what result."""

from __future__ import annotations

import json
import math
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mmengine
import torch

from bevdistill.engine.checkpoint import atomic_write_bytes
from bevdistill.engine.runner import device_description

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def git_commit(cwd: str | Path = PACKAGE_ROOT) -> str | None:
    """The commit the package was run from, or None outside a git checkout / without git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
            check=False,
        )
    except FileNotFoundError:  # no git executable: the record says null, as documented
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


# The commit of the code this process imported, read once at import: a run records what it ran,
# not what the checkout holds when the run ends (a worktree may move on during a long run).
RUN_COMMIT = git_commit()


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float) or hasattr(value, "__float__"):
        f = float(value)
        return f if math.isfinite(f) else None
    return str(value)


def run_record(
    *,
    command: str,
    argv: Sequence[str],
    config: str | None,
    config_path: str | None,
    started: float,
    metrics: Mapping[str, float] | None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """A JSON-ready record of one run; ``started`` is a ``time.time()`` value."""
    return _json_safe({
        "command": command,
        "argv": shlex.join(["bevdistill", *argv]),
        "config": config,
        "config_path": config_path,
        "seed": seed,
        "metrics": dict(metrics) if metrics is not None else None,
        "commit": RUN_COMMIT,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "duration_s": round(time.time() - started, 3),
        "torch": torch.__version__,
        "mmengine": mmengine.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_description(),
        "executable": sys.executable,
        **dict(extra or {}),
    })


def write_json(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` atomically (a crash leaves the previous file or the complete new one)."""
    path = Path(path)
    atomic_write_bytes((json.dumps(record, indent=2, sort_keys=False) + "\n").encode(), str(path))
    return path


def _in_repository(path: str) -> str | None:
    """``path`` relative to the repository root if it is a file of this repository (of any
    checkout of it, e.g. a benchmark's git worktree), else None."""
    parts = Path(path).parts
    for i in range(1, len(parts)):
        if parts[i] == PACKAGE_ROOT.name and PACKAGE_ROOT.parent.joinpath(*parts[i:]).exists():
            return str(Path(*parts[i:]))
    return None


def portable_command(command: str) -> str:
    """A recorded command without this machine's paths, as the book and the shipped model cards
    show it: a file of the repository relative to its root, and an option or ``key=value`` whose
    value is any other absolute path (``--work-dir``, ``--out``, ``*.cache_dir=``) dropped, so
    that what is left runs anywhere with its defaults."""
    out: list[str] = []
    for token in command.split():
        key, eq, value = token.rpartition("=") if "=" in token else ("", "", token)
        if not value.startswith("/"):
            out.append(token)
        elif (inside := _in_repository(value)) is not None:
            out.append(f"{key}{eq}{inside}")
        elif not eq and out and out[-1].startswith("--"):
            out.pop()  # the option this local path was the value of
    return " ".join(out)
