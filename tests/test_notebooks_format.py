"""The notebooks and the book, checked without running them (fast).

What a reader and CI rely on: notebooks committed without outputs (readable diffs), one
exercise cell per notebook followed by its check cell, folded solutions, explorer output kept
out of the book, a papermill ``parameters`` cell in notebook 6, no download in any cell, no
package code pasted into a notebook, every citation in the bibliography, and a table of
contents that lists exactly the notebooks and pages that exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from bevdistill.exercises.steps import STEPS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [step.notebook_name for step in STEPS]
# Each exercise, by the name its stub defines; notebooks 5 and 6 have two parts.
BY_STUB = {ex.stub: ex for step in STEPS for ex in step.exercises}
PARTS = {s.notebook_name: len(s.exercises) for s in STEPS if len(s.exercises) > 1}
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code(nb) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def test_the_six_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in _code(nb) if c.outputs or c.execution_count is not None]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs or execution counts; clear them "
        "(jupyter nbconvert --clear-output --inplace notebooks/*.ipynb) before committing"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_then_check_then_folded_solution(path):
    nb = _read(path)
    code = _code(nb)
    exercises = [k for k, (_, c) in enumerate(code) if "exercise" in _tags(c)]
    expected = PARTS.get(path.stem, 1)
    assert len(exercises) == expected, (
        f"{path.name}: expected {expected} cell(s) tagged 'exercise', found {len(exercises)}"
    )
    for k in exercises:
        stub = code[k][1].source
        assert "raise NotImplementedError" in stub and "TODO" in stub, "the stub must raise with its task"
        (exercise,) = {BY_STUB[n] for n in _defined_names(stub) if n in BY_STUB}
        checker = exercise.checker_name
        check = code[k + 1][1].source
        assert f"result = {checker}(" in check and "= result.impl" in check, (
            f"{path.name}: the cell after the exercise must run {checker} and use result.impl"
        )
        solution = code[k + 2][1]
        assert "solution" in _tags(solution)
        # show_solution displays a collapsed <details> block (test_teaching_solutions.py), so
        # the solution stays hidden after "Run All" in JupyterLab and in the book alike.
        assert re.search(rf'^show_solution\("{exercise.key}"\)$', solution.source, flags=re.M), (
            f"{path.name}: the solution cell must call show_solution({exercise.key!r})"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_explorers_stay_out_of_the_book(path):
    nb = _read(path)
    for _, cell in _code(nb):
        if re.search(r"viz\.\w+_explorer\(", cell.source):
            assert {"explorer", "remove-output"} <= _tags(cell), (
                f"{path.name}: explorer cell must be tagged 'explorer' and 'remove-output' "
                "(widgets are interactive in JupyterLab only)"
            )


def test_notebook6_has_a_papermill_parameters_cell():
    nb = _read(NOTEBOOK_DIR / "06_build_and_distill.ipynb")
    first = _code(nb)[0][1]
    assert "parameters" in _tags(first)
    names = {t.id for node in ast.parse(first.source).body for t in getattr(node, "targets", [])}
    assert {"MODE", "SHORT_ITERS", "MEDIUM_ITERS", "TEACHER_CHECKPOINT"} <= names


def test_notebook6_never_starts_the_full_schedule_by_itself(monkeypatch):
    """The book build and CI run short mode, also on a CUDA machine: full only when asked."""
    nb = _read(NOTEBOOK_DIR / "06_build_and_distill.ipynb")
    first = _code(nb)[0][1]
    monkeypatch.delenv("BEVDISTILL_NOTEBOOK_MODE", raising=False)
    namespace: dict = {}
    exec(first.source, namespace)
    assert namespace["MODE"] == "short"
    monkeypatch.setenv("BEVDISTILL_NOTEBOOK_MODE", "medium")
    exec(first.source, namespace)
    assert namespace["MODE"] == "medium"
    source = "".join(c.source for _, c in _code(nb))
    assert "cuda.is_available() else" not in source.split("mode = MODE")[0][-200:]
    assert "mode = MODE" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_cell_downloads_anything(path):
    nb = _read(path)
    for i, cell in _code(nb):
        for word in ("http://", "https://", "urllib", "requests", "wget", "curl ", "download(",
                     "hf_hub", "torch.hub", "pip install"):
            assert word not in cell.source, f"{path.name} cell {i} contains {word!r}"


def _defined_names(source: str) -> set[str]:
    tree = ast.parse(re.sub(r"^%.*$", "", source, flags=re.M))  # drop IPython magics
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def _package_names() -> set[str]:
    """Every function and class defined anywhere in the package."""
    names: set[str] = set()
    for py in (ROOT / "bevdistill").rglob("*.py"):
        names |= _defined_names(py.read_text())
    return names


def test_notebooks_import_instead_of_copying():
    package = _package_names()
    for path in NOTEBOOKS:
        nb = _read(path)
        source = "".join(c.source for _, c in _code(nb))
        assert "from bevdistill" in source
        for i, cell in _code(nb):
            if "exercise" in _tags(cell):
                continue
            copied = (_defined_names(cell.source) - {"run", "row"}) & package
            assert not copied, f"{path.name} cell {i} redefines package code {sorted(copied)}: import it"


def _bib_keys() -> set[str]:
    return set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))


def test_every_citation_is_in_the_bibliography():
    keys = _bib_keys()
    texts = [p.read_text() for p in (ROOT / "book").glob("*.md")]
    texts += ["".join(c.source for c in _read(p).cells if c.cell_type == "markdown") for p in NOTEBOOKS]
    cited = {k.strip() for text in texts for group in CITE.findall(text) for k in group.split(",")}
    assert cited, "no citation found: the {cite} role is how the book cites"
    assert not cited - keys, f"cited but not in book/references.bib: {sorted(cited - keys)}"
    for source in ("tian2020crd", "radford2021clip", "chen2020simclr", "zagoruyko2017at",
                   "yin2021centerpoint", "lang2019pointpillars", "liu2023bevfusion",
                   "chen2023bevdistill"):
        assert source in cited, f"{source} is never cited"


def test_toc_and_config_describe_the_book():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    for name in files:
        assert (ROOT / f"{name}.md").is_file() or (ROOT / f"{name}.ipynb").is_file(), name
    assert [f for f in files if f.startswith("notebooks/")] == [f"notebooks/{n}" for n in EXPECTED]
    for page in ("intro", "setup", "background", "results", "references"):
        assert f"book/{page}" in files
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    assert ".venv" in config["exclude_patterns"]
    assert all((ROOT / b).is_file() for b in config["bibtex_bibfiles"])
    assert "{bibliography}" in (ROOT / "book" / "references.md").read_text()
