"""Teaching solutions (issue 10, section 2) pass their checkers and stay hidden until asked for.

``show_solution`` displays a collapsed HTML ``<details>`` block in Jupyter, so "Run All"
reveals no solution, in JupyterLab and in the book alike: proven here on an executed notebook.
"""

from __future__ import annotations

import inspect
from importlib import import_module

import nbformat
import pytest
from nbclient import NotebookClient

from bevdistill import exercises
from bevdistill.exercises.solutions import PARTS, SolutionView, show_solution, teaching_source
from bevdistill.exercises.steps import EXERCISES

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_teaching_solution_passes_its_checker(key):
    ex = EXERCISES[key]
    impl = getattr(import_module(ex.teaching), ex.stub)
    result = getattr(exercises, ex.checker_name)(impl, verbose=False)
    assert result.passed, result.report()


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_teaching_solution_is_teaching_sized(key):
    module = import_module(EXERCISES[key].teaching)
    code = [line for line in inspect.getsource(module).splitlines() if line.strip()]
    assert 8 <= len(code) <= 40, f"{key}: {len(code)} non-blank lines"


def test_show_solution_prints_outside_jupyter_and_names_the_reference(capsys):
    show_solution(3)
    out = capsys.readouterr().out
    assert "class MyContrastiveLoss" in out and "F.cross_entropy(logits.T, labels)" in out
    assert "Read further: bevdistill.losses.contrastive.ContrastiveLoss" in out.replace(
        "symmetric_info_nce, bevdistill.losses.contrastive.", ""
    )
    assert teaching_source("step5").count("# Teaching solution of") == len(PARTS["step5"])
    with pytest.raises(KeyError, match="step5a"):
        teaching_source("step7")


def test_the_html_view_is_collapsed_and_the_text_view_gives_nothing_away():
    view = SolutionView("step4")
    html = view._repr_html_()
    assert html.startswith("<details>") and "<details open" not in html
    assert "adaptive_avg_pool2d" in html  # the code is inside the fold
    assert "adaptive_avg_pool2d" not in repr(view) and "hidden" in repr(view)


@pytest.mark.slow
def test_run_all_leaves_every_solution_hidden(tmp_path):
    """Execute a notebook of solution cells as "Run All" does; every output stays folded."""
    steps = [*EXERCISES, *PARTS]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from bevdistill.exercises import show_solution")]
    nb.cells += [nbformat.v4.new_code_cell(f'show_solution("{s}")') for s in steps]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for step, cell in zip(steps, nb.cells[1:], strict=True):
        (output,) = cell.outputs
        assert output.output_type == "display_data", (step, output)
        html = output.data["text/html"]
        assert html.startswith("<details>") and "<details open" not in html, step
        assert "class " in html or "def " in html  # the solution is there, folded
        assert "def " not in output.data["text/plain"], step  # no spoiler in the text view
