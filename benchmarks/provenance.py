"""Where a benchmark's figures came from: command, commit, clean or dirty tree, date, machine.

Every result file under ``benchmarks/results/`` starts with :func:`provenance`, so a figure can
be traced to the code that made it (``tests/test_results_traced.py`` checks that it is).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from bevdistill.engine.report import git_commit

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """Where a figure was measured: enough to judge whether two figures compare."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def tree_is_dirty(root: Path = REPO_ROOT) -> bool | None:
    """Whether the tracked code differs from the commit (results then come from uncommitted
    code, which the record should say). Result files are outputs, not code: a benchmark that
    rewrites one does not make the next benchmark's record dirty."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                              f":(exclude){RESULTS_DIR.relative_to(REPO_ROOT).as_posix()}"],
                             cwd=root, capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def provenance(module: str, argv: list[str] | None) -> dict[str, Any]:
    """The command, commit, date and machine of a benchmark record."""
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": " ".join(["python -m", module, *map(shlex.quote, args)]),
        "git_commit": git_commit(),
        "uncommitted_changes": tree_is_dirty(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def shown_path(path: str | None) -> str | None:
    """A path as the record shows it: relative to the repository where it lies inside it."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path
