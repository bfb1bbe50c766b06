"""viz.expected_output: the reference column is computed by the teaching solution, a correct
answer written independently matches it, a wrong one differs, and a stub or a crash is shown
as such instead of stopping the notebook."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from notebook_solutions import CORRECT_ANSWERS, WRONG_ANSWERS

from bevdistill import ContrastiveLoss, viz
from bevdistill.exercises.steps import EXERCISES, STEPS
from bevdistill.viz.expected import _DEPENDS, EXAMPLES

ROOT = Path(__file__).resolve().parents[1]


def _answer(key: str, source: str):
    namespace: dict = {}
    if key == "step5b":  # the notebook's 5b uses the learner's heatmap_kd of 5a
        exec(CORRECT_ANSWERS["step5a"], namespace)
    exec(source, namespace)
    return namespace[EXERCISES[key].stub]


@pytest.mark.parametrize("step", [s for s in STEPS if s.number <= 5], ids=lambda s: s.notebook_name)
def test_every_exercise_of_notebooks_1_to_5_shows_its_expected_output(step):
    nb = nbformat.read(ROOT / step.notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for exercise in step.exercises:
        assert exercise.key in EXAMPLES
        k = next(i for i, c in enumerate(code) if "exercise" in c.metadata.get("tags", [])
                 and exercise.stub in c.source)
        check = code[k + 1].source  # the check cell: it prints the table after the report
        assert f'viz.expected_output("{exercise.key}", {exercise.stub})' in check, (
            f"{step.notebook_name}: the check cell of {exercise.key} must print its expected output"
        )


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_an_independent_correct_answer_gives_the_expected_output(key):
    result = viz.expected_output(key, _answer(key, CORRECT_ANSWERS[key]), show=False)
    assert result.yours is not None, result.error
    # 5b's contrastive and response rows hang on the projectors' construction and on 5a: the
    # independent answer builds its own projectors, so only the other rows must agree.
    same = {k: v for k, v in result.reference.items() if not any(d in k for d in _DEPENDS.values())}
    assert same and all(result.yours[k] == v for k, v in same.items()), result.report()


@pytest.mark.parametrize("key", sorted(set(WRONG_ANSWERS) & set(EXAMPLES)))
def test_a_wrong_answer_shows_a_difference(key):
    result = viz.expected_output(key, _answer(key, WRONG_ANSWERS[key]), show=False)
    assert not result.matches
    assert "<- differs" in result.report()


def test_the_reference_column_is_the_package_s_value():
    result = viz.expected_output("step3", ContrastiveLoss, show=False)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    assert result.matches
    assert result.reference["loss, tau = 0.07, B = 4"] == f"{float(ContrastiveLoss(0.07)(s, t)):.4f}"


def test_a_stub_and_a_crash_are_reported_not_raised(capsys):
    class Stub(torch.nn.Module):
        def forward(self, s, t):
            raise NotImplementedError("Step 4: write it")

    class Crashes(torch.nn.Module):
        def forward(self, s, t):
            return s @ t  # shapes that do not multiply

    stub = viz.expected_output("step4", Stub)
    assert stub.yours is None and "not written yet" in stub.error
    assert "reference: 0.0000" in capsys.readouterr().out  # the expected numbers still show
    crash = viz.expected_output("step4", Crashes, show=False)
    assert crash.yours is None and "RuntimeError" in crash.error


def test_an_unknown_exercise_is_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="step3"):
        viz.expected_output("step9", ContrastiveLoss)
