"""`make test`'s notebook reruns: a notebook whose cell raised fails at once; one whose cell timed
out is tried again, and the summary says which cell timed out (tests/notebook_reruns.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

TESTS = Path(__file__).resolve().parent


def _notebook(path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_only_a_cell_timeout_reruns_a_notebook_and_the_reason_is_printed(tmp_path):
    failing = _notebook(tmp_path / "failing.ipynb", "raise ValueError('a wrong answer')")
    stalling = _notebook(tmp_path / "stalling.ipynb", "import time\ntime.sleep(120)")
    # as `make test` runs the notebooks (two workers), with a 3 s cell timeout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "notebook_reruns", "-p", "no:cacheprovider",
         "-n", "2", "--dist", "loadfile", "--rootdir", str(tmp_path), "--nbmake",
         "--nbmake-timeout=3", str(failing), str(stalling)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 failed" in out and "2 rerun" in out, out
    assert "notebook reruns (cell timeouts only)" in out, out
    summary = out.split("notebook reruns (cell timeouts only)", 1)[1]
    reruns = [line for line in summary.splitlines() if line.startswith("RERUN ")]
    assert len(reruns) == 2, out  # the stalling notebook, twice; the failing one never
    for line in reruns:
        assert "stalling.ipynb" in line and "cell 1: A cell timed out" in line, line
