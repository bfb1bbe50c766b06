"""Solutions for when a learner is stuck: a short teaching solution, and the reference to read further.

The notebooks never paste solutions into their cells. A learner reveals one on purpose::

    from bevdistill.exercises import show_solution
    show_solution("step3")          # the teaching solution of step 3, folded until clicked

In Jupyter (JupyterLab and the book alike) :func:`show_solution` displays a collapsed HTML
``<details>`` block, so "Run All" leaves every solution hidden until the learner clicks it;
elsewhere it prints. The teaching solutions (``bevdistill/exercises/teaching/``, 20-40 lines,
tested against their checkers) are written for reading; the production code they point to
(:func:`solution_source`) solves the same problem with every check and option.
"""

from __future__ import annotations

import html
import inspect
from importlib import import_module

from bevdistill._jupyter import in_jupyter_kernel
from bevdistill.exercises.steps import STEPS

# Derived from the one declaration of the steps (bevdistill.exercises.steps).
# step -> (what the learner writes, the reference objects that answer it, "module:name").
SOLUTIONS: dict[str, tuple[str, tuple[str, ...]]] = {s.key: (s.title, s.reference) for s in STEPS}

def _normalise_step(step: str | int) -> str:
    key = f"step{step}" if isinstance(step, int) else str(step).strip().lower().replace(" ", "")
    if key not in SOLUTIONS:
        raise KeyError(f"unknown step {step!r}; choose one of {sorted(SOLUTIONS)} (or 1 to 6)")
    return key


def solution_source(step: str | int) -> str:
    """The reference source of ``step`` ('step1'..'step6' or 1..6), helpers first."""
    key = _normalise_step(step)
    title, targets = SOLUTIONS[key]
    parts = [f"# Reference solution of {key}: {title}"]
    for target in targets:
        module_name, name = target.split(":")
        obj = getattr(import_module(module_name), name)
        parts.append(f"# --- {module_name}.{name} ---\n{inspect.getsource(obj).rstrip()}")
    return "\n\n\n".join(parts) + "\n"


# exercise -> (what the learner writes, the teaching module, the step whose reference reads further)
TEACHING: dict[str, tuple[str, str, str]] = {
    ex.key: (ex.writes, ex.key, step.key) for step in STEPS for ex in step.exercises
}
PARTS = {s.key: tuple(ex.key for ex in s.exercises) for s in STEPS if len(s.exercises) > 1}


def _teaching_keys(step: str | int) -> tuple[str, ...]:
    key = f"step{step}" if isinstance(step, int) else str(step).strip().lower().replace(" ", "")
    if not key.startswith("step"):
        key = f"step{key}"
    if key in PARTS:
        return PARTS[key]
    if key not in TEACHING:
        known = sorted({*TEACHING, *PARTS})
        raise KeyError(f"unknown step {step!r}; choose one of {known} (or 1 to 6)")
    return (key,)


def teaching_source(step: str | int) -> str:
    """The teaching solution of ``step`` ('step3', 3, '5a', 'step6b'; 'step5' is both parts)."""
    parts = []
    for key in _teaching_keys(step):
        title, module, _ = TEACHING[key]
        source = inspect.getsource(import_module(f"bevdistill.exercises.teaching.{module}"))
        parts.append(f"# Teaching solution of {key}: {title}\n{source.rstrip()}")
    return "\n\n\n".join(parts) + "\n"


def read_further(step: str | int) -> str:
    """Where the production version of ``step`` lives, for the reader who wants every detail."""
    reference = TEACHING[_teaching_keys(step)[0]][2]
    names = ", ".join(f"{t.replace(':', '.')}" for t in SOLUTIONS[reference][1])
    return f"Read further: {names} (print(solution_source({reference!r})) shows it)."


class SolutionView:
    """A solution that stays folded: HTML ``<details>`` in Jupyter, a one-line note as text."""

    def __init__(self, step: str | int):
        self.keys = _teaching_keys(step)
        self.source = teaching_source(step)
        self.further = read_further(step)

    def _repr_html_(self) -> str:
        lines = self.source.count("\n")
        return (
            "<details>"
            f"<summary><b>Solution of {' and '.join(self.keys)}</b> ({lines} lines): click to show</summary>"
            f'<pre><code class="language-python">{html.escape(self.source)}</code></pre>'
            f"<p>{html.escape(self.further)}</p>"
            "</details>"
        )

    def __repr__(self) -> str:  # what a plain-text front end shows: no spoiler
        return (
            f"<solution of {' and '.join(self.keys)}, hidden; "
            f"print(teaching_source({self.keys[0]!r})) shows it>"
        )


def show_solution(step: str | int) -> None:
    """Show the teaching solution of ``step``: folded in Jupyter, printed elsewhere."""
    view = SolutionView(step)
    if in_jupyter_kernel():
        from IPython.display import display

        display(view)
    else:
        print(view.source + "\n# " + view.further)
