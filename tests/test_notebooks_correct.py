"""Each notebook with a correct answer (written in notebook_solutions.py, not the reference
object) in its exercise cell, run top to bottom in strict mode: the check passes and the
learner's code flows through every picture and experiment after it.

The plain run with the exercises unfilled is nbmake's (``pytest --nbmake notebooks``).
"""

from __future__ import annotations

import ast
import builtins

import nbformat
import pytest
from notebook_harness import (
    NOTEBOOK_DIR,
    defined_names,
    exercise_cells,
    fill,
    fill_below_imports,
    imports_of,
    load,
    run,
    stream_text,
    without_imports,
)
from notebook_solutions import CORRECT, CORRECT_ANSWERS

from bevdistill.exercises.steps import EXERCISES, STEPS

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


@pytest.mark.parametrize("name", ["03_contrastive_loss", "04_attention_transfer"])
def test_a_correct_answer_written_below_the_cell_s_own_imports_passes(name):
    """A fresh kernel, the learner's code under the imports the exercise cell gives (notebook 4
    once named F in its task without importing it: every answer failed with a NameError)."""
    nb, check = load(name)
    nb.cells = nb.cells[: check + 1]
    fill_below_imports(nb, CORRECT[name])
    run(nb)
    assert "checks passed - PASS" in stream_text(nb.cells[check])


@pytest.mark.parametrize("key", ["step1", "step2", "step3", "step4", "step5a"])
def test_every_name_a_correct_answer_uses_is_imported_by_its_exercise_cell(key):
    """The exercise cell alone gives the names a solution needs (torch, nn, F), so it runs after
    a kernel restart without hunting for an import in the setup cell."""
    exercise = EXERCISES[key]
    step = next(s for s in STEPS if exercise in s.exercises)
    nb = nbformat.read(NOTEBOOK_DIR / f"{step.notebook_name}.ipynb", as_version=4)
    (cell,) = [nb.cells[i] for i in exercise_cells(nb) if exercise.stub in defined_names(nb.cells[i].source)]
    given = set()
    for statement in imports_of(cell.source):
        for alias in ast.parse(statement).body[0].names:
            given.add((alias.asname or alias.name).split(".")[0])
    answer = ast.parse(without_imports(CORRECT_ANSWERS[key]))
    defined = {n.id for n in ast.walk(answer) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined |= {n.name for n in ast.walk(answer) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {a.arg for n in ast.walk(answer) if isinstance(n, ast.arguments)
                for a in n.args + n.kwonlyargs + n.posonlyargs}
    used = {n.id for n in ast.walk(answer) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    missing = used - defined - given - set(dir(builtins))
    assert not missing, f"{step.notebook_name}: the exercise cell does not import {sorted(missing)}"
