"""Each notebook with a correct answer (written in notebook_solutions.py, not the reference
object) in its exercise cell, run top to bottom in strict mode: the check passes and the
learner's code flows through every picture and experiment after it.

The plain run with the exercises unfilled is nbmake's (``pytest --nbmake notebooks``).
"""

from __future__ import annotations

import pytest
from notebook_harness import fill, load, run, stream_text
from notebook_solutions import CORRECT

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")  # the kernel inherits the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_answer_passes_and_the_notebook_runs_with_it(name):
    nb, _ = load(name)
    fill(nb, CORRECT[name])
    run(nb)
    for part in CORRECT[name]:
        _, check = load(name, part)
        report = stream_text(nb.cells[check])
        assert "checks passed - PASS" in report, (part, report)
        assert "Your implementation is used from here on." in report
        assert "✗" not in report and "NOT IMPLEMENTED" not in report
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
