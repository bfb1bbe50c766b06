"""Helpers of the notebook tests: load a notebook, fill its exercise cells, run it headless.

A notebook has one or more cells tagged ``exercise`` (notebooks 5 and 6 have two graded parts);
an answer is matched to its cell by a name the cell's stub defines (``MyContrastiveLoss``,
``heatmap_kd``, ...).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
TIMEOUT_S = 240  # per cell: the longest CI-mode cell takes well under a minute


def tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def defined_names(source: str) -> set[str]:
    """Top-level functions and classes a cell defines (IPython magics dropped)."""
    tree = ast.parse(re.sub(r"^%.*$", "", source, flags=re.M))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def exercise_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "exercise" in tags(c)]


def load(name: str, exercise: str | None = None) -> tuple[nbformat.NotebookNode, int]:
    """The notebook and the index of the check cell (the code cell after) of the exercise cell
    that defines ``exercise``; by default the last exercise."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    cells = exercise_cells(nb)
    if exercise is not None:
        cells = [i for i in cells if exercise in defined_names(nb.cells[i].source)]
        assert cells, f"{name}: no exercise cell defines {exercise!r}"
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return nb, next(i for i in code if i > cells[-1])


def fill(nb: nbformat.NotebookNode, answers: dict[str, str]) -> None:
    """Replace each exercise cell's stub with the answer keyed by a name the stub defines."""
    cells = exercise_cells(nb)
    for i in cells:
        keys = [k for k in answers if k in defined_names(nb.cells[i].source)]
        if not keys and len(cells) == 1 and len(answers) == 1:
            keys = list(answers)  # one exercise, one answer: the stub's names may have changed
        assert len(keys) == 1, f"exercise cell {i} defines {defined_names(nb.cells[i].source)}; answers for {sorted(answers)}"
        nb.cells[i].source = answers[keys[0]].strip()


def run(nb: nbformat.NotebookNode) -> None:
    """Execute in place, in the notebooks' folder, as nbmake and the book build do."""
    NotebookClient(
        nb, timeout=TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    ).execute()


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def imports_of(source: str) -> list[str]:
    """The top-level import statements of a cell, as written."""
    tree = ast.parse(re.sub(r"^%.*$", "", source, flags=re.M))
    return [ast.get_source_segment(source, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]


def without_imports(source: str) -> str:
    """The cell's code with its top-level import statements dropped."""
    tree = ast.parse(source)
    lines = source.splitlines()
    drop = {i for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
            for i in range(n.lineno - 1, n.end_lineno)}
    return "\n".join(line for i, line in enumerate(lines) if i not in drop).strip()


def fill_below_imports(nb: nbformat.NotebookNode, answers: dict[str, str]) -> None:
    """As a learner fills a cell: the stub's own imports kept, the answer's code below them
    (its own imports dropped), so a name the task uses but no cell imports fails."""
    cells = exercise_cells(nb)
    for i in cells:
        keys = [k for k in answers if k in defined_names(nb.cells[i].source)]
        assert len(keys) == 1, f"exercise cell {i}: answers for {sorted(answers)}"
        stub_imports = "\n".join(imports_of(nb.cells[i].source))
        nb.cells[i].source = f"{stub_imports}\n\n\n{without_imports(answers[keys[0]])}"
