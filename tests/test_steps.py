"""The one declaration of the six steps (bevdistill.exercises.steps) matches the book, the
notebooks, the checkers and the teaching solutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bevdistill import exercises
from bevdistill.exercises.steps import STEPS, resolve

ROOT = Path(__file__).resolve().parents[1]
TOC = ROOT / "_toc.yml"


def toc_step_notebooks(toc_text: str) -> list[str]:
    """The notebooks of the toc's six-steps part, in order."""
    toc = yaml.safe_load(toc_text)
    part = next(p for p in toc["parts"] if "step" in p["caption"].lower())
    return [c["file"] for c in part["chapters"]]


def toc_problems(toc_text: str) -> list[str]:
    """What differs between the toc's six-steps part and the declaration."""
    declared = [str(Path(s.notebook).with_suffix("")) for s in STEPS]
    listed = toc_step_notebooks(toc_text)
    problems = [f"{n} is in the toc but not declared" for n in listed if n not in declared]
    problems += [f"{n} is declared but not in the toc" for n in declared if n not in listed]
    if not problems and listed != declared:
        problems.append(f"the toc lists {listed}, the declaration {declared}")
    return problems


def test_the_toc_lists_exactly_the_declared_notebooks_in_order():
    assert toc_problems(TOC.read_text()) == []


def test_a_toc_that_strays_from_the_declaration_is_caught():
    text = TOC.read_text()
    extra = text.replace("      - file: notebooks/06_build_and_distill",
                         "      - file: notebooks/06_build_and_distill\n"
                         "      - file: notebooks/07_unplanned")
    assert toc_problems(extra) == ["notebooks/07_unplanned is in the toc but not declared"]
    swapped = text.replace("notebooks/01_feature_hooks", "notebooks/XX").replace(
        "notebooks/02_projection", "notebooks/01_feature_hooks").replace(
        "notebooks/XX", "notebooks/02_projection")
    assert len(toc_problems(swapped)) == 1


def test_numbers_run_from_one_and_every_checker_module_is_declared():
    assert [s.number for s in STEPS] == list(range(1, len(STEPS) + 1))
    declared = {ex.checker.split(":")[0].rsplit(".", 1)[1] for s in STEPS for ex in s.exercises}
    on_disk = {p.stem for p in (ROOT / "bevdistill" / "exercises").glob("step*_*.py")}
    assert on_disk == declared


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.key)
def test_every_declared_name_resolves(step):
    for target in step.reference:
        assert resolve(target) is not None
    for ex in step.exercises:
        assert getattr(exercises, ex.checker_name) is resolve(ex.checker)
        teaching = __import__(ex.teaching_module, fromlist=["_"])
        assert hasattr(teaching, ex.stub), (ex.key, ex.stub)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.key)
def test_each_notebook_calls_its_declared_checkers(step):
    path = ROOT / step.notebook
    assert path.is_file(), path
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "code")
    for ex in step.exercises:
        assert f"{ex.checker_name}(" in code, (step.notebook, ex.checker_name)
