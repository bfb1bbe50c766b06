"""The one declaration of the steps (bevdistill.exercises.steps) matches reality: the book's
table of contents, the notebooks, the checkers, their galleries and the teaching solutions.

The checks are helpers that take text or names, so each is also shown to catch a made-up
mistake (an undeclared notebook in the toc, a swapped order, a notebook calling another checker).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bevdistill import exercises
from bevdistill.exercises.steps import EXERCISES, STEPS, Exercise, resolve

ROOT = Path(__file__).resolve().parents[1]
TOC = ROOT / "_toc.yml"
EXERCISE_DIR = ROOT / "bevdistill" / "exercises"
STEPS_CAPTION = "The six steps (notebooks)"


def toc_problems(toc_text: str) -> list[str]:
    """What differs between the toc and the declaration; empty when they agree.

    The six-steps part lists the declared notebooks in the declared order, and no other part
    lists a notebook.
    """
    parts = yaml.safe_load(toc_text)["parts"]
    steps_parts = [p for p in parts if p.get("caption") == STEPS_CAPTION]
    if len(steps_parts) != 1:
        return [f"the toc needs exactly one part captioned {STEPS_CAPTION!r}"]
    declared = [str(Path(s.notebook).with_suffix("")) for s in STEPS]
    listed = [c["file"] for c in steps_parts[0]["chapters"]]
    elsewhere = [c["file"] for p in parts if p is not steps_parts[0] for c in p["chapters"]]
    problems = [f"{n} is in the toc but not declared" for n in listed if n not in declared]
    problems += [f"{n} is declared but not in the toc" for n in declared if n not in listed]
    problems += [f"{n} is listed outside {STEPS_CAPTION!r}" for n in elsewhere
                 if n.startswith("notebooks/")]
    if not problems and listed != declared:
        problems.append(f"the toc lists {listed}, the declaration {declared}")
    return problems


def notebook_problems(notebook_json: str, exercises_: tuple[Exercise, ...]) -> list[str]:
    """Declared checkers and solutions the notebook's code cells never call."""
    cells = json.loads(notebook_json)["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    problems = [f"never calls {ex.checker_name}(" for ex in exercises_
                if f"{ex.checker_name}(" not in code]
    problems += [f"never calls show_solution({ex.key!r})" for ex in exercises_
                 if f'show_solution("{ex.key}")' not in code]
    return problems


def undeclared(folder: Path, declared_modules: set[str]) -> list[str]:
    """The step modules (step<digit>*.py) in ``folder`` that the declaration does not name."""
    package = ".".join(folder.relative_to(ROOT).parts)
    return sorted(f"{package}.{p.stem}" for p in folder.glob("step[0-9]*.py")
                  if f"{package}.{p.stem}" not in declared_modules)


def _module(target: str) -> str:
    return target.split(":")[0]


# --- the table of contents --------------------------------------------------------------------

def test_the_toc_lists_exactly_the_declared_notebooks_in_order():
    assert toc_problems(TOC.read_text()) == []


def test_a_toc_that_strays_from_the_declaration_is_caught():
    text = TOC.read_text()
    last = f"      - file: {Path(STEPS[-1].notebook).with_suffix('')}"
    assert last in text
    extra = text.replace(last, f"{last}\n      - file: notebooks/07_unplanned")
    assert toc_problems(extra) == ["notebooks/07_unplanned is in the toc but not declared"]

    first, second = (str(Path(s.notebook).with_suffix("")) for s in STEPS[:2])
    swapped = text.replace(first, "PLACEHOLDER").replace(second, first).replace("PLACEHOLDER", second)
    assert len(toc_problems(swapped)) == 1 and "the toc lists" in toc_problems(swapped)[0]

    dropped = text.replace(f"{last}\n", "")
    assert toc_problems(dropped) == [f"{last.split()[-1]} is declared but not in the toc"]

    moved = text.replace("      - file: book/results\n", "      - file: notebooks/99_extra\n")
    assert toc_problems(moved) == ["notebooks/99_extra is listed outside 'The six steps (notebooks)'"]

    assert len(toc_problems(text.replace(STEPS_CAPTION, "Chapters"))) == 1


# --- the declaration itself -------------------------------------------------------------------

def test_numbers_run_from_one_and_keys_are_unique():
    assert [s.number for s in STEPS] == list(range(1, len(STEPS) + 1))
    keys = [ex.key for s in STEPS for ex in s.exercises]
    assert len(keys) == len(set(keys)) == len(EXERCISES)
    for s in STEPS:
        if len(s.exercises) == 1:
            assert s.exercises[0].key == s.key
        else:  # parts a, b, ... in notebook order
            assert [ex.key for ex in s.exercises] == [f"{s.key}{c}" for c in "abcdefgh"[: len(s.exercises)]]


def test_importing_the_declaration_imports_no_torch():
    code = ("import sys, bevdistill.exercises, bevdistill.exercises.steps; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# --- the code it names ------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.key)
def test_every_declared_name_resolves(step):
    for target in step.reference:
        assert resolve(target) is not None, target
    for ex in step.exercises:
        checker = resolve(ex.checker)
        assert callable(checker) and getattr(exercises, ex.checker_name) is checker
        assert callable(resolve(f"{ex.teaching}:{ex.stub}")), (ex.teaching, ex.stub)


def test_resolve_names_what_it_cannot_find():
    with pytest.raises(ValueError, match="module:name"):
        resolve("bevdistill.exercises.steps")
    with pytest.raises(AttributeError, match="no_such_checker"):
        resolve("bevdistill.exercises.steps:no_such_checker")


def test_every_checker_gallery_and_teaching_module_is_declared():
    assert undeclared(EXERCISE_DIR, {_module(ex.checker) for ex in EXERCISES.values()}) == []
    assert undeclared(EXERCISE_DIR / "teaching", {ex.teaching for ex in EXERCISES.values()}) == []


def test_an_undeclared_module_is_caught():
    declared = {ex.teaching for ex in EXERCISES.values()} - {EXERCISES["step3"].teaching}
    assert undeclared(EXERCISE_DIR / "teaching", declared) == [EXERCISES["step3"].teaching]


# --- the notebooks ----------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.key)
def test_each_notebook_calls_its_declared_checkers_and_solutions(step):
    path = ROOT / step.notebook
    assert path.is_file(), f"{step.notebook} is declared but does not exist"
    assert notebook_problems(path.read_text(), step.exercises) == []


def test_a_notebook_calling_another_checker_is_caught():
    text = (ROOT / STEPS[2].notebook).read_text()
    problems = notebook_problems(text, STEPS[3].exercises)
    assert f"never calls {STEPS[3].exercises[0].checker_name}(" in problems
    assert f"never calls show_solution({STEPS[3].key!r})" in problems

