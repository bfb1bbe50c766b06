"""Each notebook with a typical wrong answer in its exercise cell. In strict mode the check
cell, not an earlier one, raises ``ExerciseFailed`` and marks the failed case (the notebook is
cut after the check cell: strict mode stops there anyway). In a learner's (default) mode the
whole notebook runs to the end on the reference, and the expected output shows where the
answer differs.
"""

from __future__ import annotations

import pytest
from nbclient.exceptions import CellExecutionError
from notebook_harness import fill, load, run, stream_text
from notebook_solutions import CORRECT, CORRECT_ANSWERS, WRONG, WRONG_ANSWERS

from bevdistill.exercises.steps import EXERCISES, STEPS

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_every_notebook_has_a_wrong_answer_that_differs_from_the_correct_one():
    assert set(CORRECT_ANSWERS) == set(EXERCISES) and set(WRONG_ANSWERS) <= set(EXERCISES)
    assert set(WRONG) == set(CORRECT)
    for name, wrong in WRONG.items():
        assert len(wrong) == 1 and set(wrong) <= set(CORRECT[name])
        assert all(answer != CORRECT[name][part] for part, answer in wrong.items())


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_answer_fails_its_check(name):
    (part,) = WRONG[name]
    nb, check = load(name, part)
    nb.cells = nb.cells[: check + 1]
    fill(nb, {**CORRECT[name], **WRONG[name]})
    with pytest.raises(CellExecutionError) as failure:
        run(nb)
    assert failure.value.ename == "ExerciseFailed", failure.value
    outputs = nb.cells[check].outputs
    assert any(o.output_type == "error" and o.ename == "ExerciseFailed" for o in outputs), (
        "the check cell, not an earlier one, must be the one that failed"
    )
    assert "✗" in stream_text(nb.cells[check])  # the report marks the failed case


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_answer_in_a_learner_s_mode_runs_the_notebook_to_the_end(name, monkeypatch):
    monkeypatch.setenv("BEVDISTILL_STRICT", "0")
    (part,) = WRONG[name]
    nb, check = load(name, part)
    fill(nb, {**CORRECT[name], **WRONG[name]})
    run(nb)  # raises CellExecutionError, naming the cell, if any cell fails
    report = stream_text(nb.cells[check])
    assert "✗" in report and "- PASS" not in report, report
    (key,) = [ex.key for s in STEPS for ex in s.exercises if ex.stub == part]
    if f'expected_output("{key}"' in nb.cells[check].source:
        assert "<- differs" in report, report
