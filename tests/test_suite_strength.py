"""The test suite must catch a broken reference: each mutant below has to make a test fail.

Each case copies the package to a temporary folder, applies one textual mutation to a
reference implementation, and runs the tests that guard it against the copy in a subprocess.
A mutation whose text is no longer in the source fails loudly, so this file follows the code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (id, file, original text, mutated text, tests that must catch it)
MUTANTS = [
    (
        "projection-without-l2-normalisation",
        "bevdistill/projection.py",
        "return F.normalize(self.layer2(h), dim=1, eps=NORM_EPS)",
        "return self.layer2(h)",
        "tests/test_projection.py",
    ),
    (
        "infonce-without-temperature",
        "bevdistill/losses/contrastive.py",
        "return symmetric_info_nce(s @ t.T / self.temperature)",
        "return symmetric_info_nce(s @ t.T)",
        "tests/test_contrastive.py",
    ),
    (
        "attention-without-grid-alignment",
        "bevdistill/losses/attention.py",
        "a_s, a_t = resize_bev(a_s, size), resize_bev(a_t, size)",
        "a_s, a_t = a_s, a_t",
        "tests/test_attention.py",
    ),
    (
        "recorder-keeps-stale-features",
        "bevdistill/capture.py",
        "        self.clear()\n        self._recording = True",
        "        self._recording = True",
        "tests/test_capture.py",
    ),
    (
        "teacher-captures-keep-their-graph",
        "bevdistill/capture.py",
        "return value.detach() if detach else value",
        "return value",
        "tests/test_capture.py",
    ),
]


def _mutated_copy(tmp_path: Path, file: str, original: str, mutated: str) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "bevdistill", copy / "bevdistill", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / file
    source = target.read_text()
    assert source.count(original) == 1, (
        f"mutation site not found exactly once in {file}; update MUTANTS to the current code"
    )
    target.write_text(source.replace(original, mutated))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("name,file,original,mutated,tests", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_is_caught(tmp_path, name, file, original, mutated, tests):
    copy = _mutated_copy(tmp_path, file, original, mutated)
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", tests],
        cwd=copy, env=env, capture_output=True, text=True, timeout=300,
    )
    # pytest exits 1 when tests fail; anything else (2 = interrupted, 4 = usage) is a broken setup.
    assert run.returncode == 1, f"mutant {name} survived (rc={run.returncode}):\n{run.stdout[-2000:]}"
    assert "failed" in run.stdout


def test_the_copy_is_what_gets_imported(tmp_path):
    """Control: without this, a mutant could 'survive' only because the original was imported."""
    copy = _mutated_copy(tmp_path, *MUTANTS[0][1:4])
    env = {**os.environ, "PYTHONPATH": str(copy)}
    run = subprocess.run(
        [sys.executable, "-c", "import bevdistill; print(bevdistill.__file__)"],
        cwd=copy, env=env, capture_output=True, text=True, check=True,
    )
    assert Path(run.stdout.strip()).resolve().is_relative_to(copy.resolve())
