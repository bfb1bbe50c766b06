"""Solutions for when a learner is stuck: a short teaching solution, and the reference to read further.

The notebooks never paste solutions into their cells. A learner reveals one on purpose::

    from bevdistill.exercises import show_solution
    show_solution("step3")          # the teaching solution of step 3, folded until clicked

In Jupyter (JupyterLab and the book alike) :func:`show_solution` displays a collapsed HTML
``<details>`` block, so "Run All" leaves every solution hidden until the learner clicks it;
elsewhere it prints. The teaching solutions (``bevdistill/exercises/teaching/``, 20-40 lines,
tested against their checkers) are written for reading; the production code they point to
(:func:`solution_source`) solves the same problem with every check and option.

Which steps, exercises and modules there are comes from :mod:`bevdistill.exercises.steps`.
"""

from __future__ import annotations

import html
import inspect
from importlib import import_module

from bevdistill._jupyter import in_jupyter_kernel
from bevdistill.exercises.steps import EXERCISES, STEPS, Exercise, Step, resolve

# step -> (its title, the reference objects that answer it as "module:name")
SOLUTIONS: dict[str, tuple[str, tuple[str, ...]]] = {s.key: (s.title, s.reference) for s in STEPS}
# a step of several exercises -> their keys ('step5' -> ('step5a', 'step5b'))
PARTS: dict[str, tuple[str, ...]] = {
    s.key: tuple(ex.key for ex in s.exercises) for s in STEPS if len(s.exercises) > 1
}
_BY_KEY: dict[str, Step] = {s.key: s for s in STEPS}
_STEP_OF: dict[str, Step] = {ex.key: s for s in STEPS for ex in s.exercises}  # 'step5a' -> step 5


def _key(step: str | int) -> str:
    """'step3' from 3, '3', 'Step 3' or 'step3'; '5a' and 'step 5a' give 'step5a'."""
    key = str(step).strip().lower().replace(" ", "")
    return key if key.startswith("step") else f"step{key}"


def _unknown(step: str | int, known) -> KeyError:
    return KeyError(f"unknown step {step!r}; choose one of {sorted(known)} (or 1 to {len(STEPS)})")


def _step(step: str | int) -> Step:
    """The step ``step`` names; an exercise key ('step5a') names the step it belongs to."""
    key = _key(step)
    found = _BY_KEY.get(key) or _STEP_OF.get(key)
    if found is None:
        raise _unknown(step, SOLUTIONS)
    return found


def _exercises(step: str | int) -> tuple[Exercise, ...]:
    """The exercises ``step`` names: one ('step3', 'step5a'), or every part of 'step5'."""
    key = _key(step)
    if key in EXERCISES:
        return (EXERCISES[key],)
    if key in PARTS:
        return tuple(EXERCISES[k] for k in PARTS[key])
    raise _unknown(step, {*EXERCISES, *PARTS})


def solution_source(step: str | int) -> str:
    """The reference source of ``step`` ('step1'..'step6' or 1..6), helpers first."""
    s = _step(step)
    parts = [f"# Reference solution of {s.key}: {s.title}"]
    for target in s.reference:
        obj = resolve(target)
        parts.append(f"# --- {target.replace(':', '.')} ---\n{inspect.getsource(obj).rstrip()}")
    return "\n\n\n".join(parts) + "\n"


def teaching_source(step: str | int) -> str:
    """The teaching solution of ``step`` ('step3', 3, '5a', 'step6b'; 'step5' is both parts)."""
    parts = []
    for ex in _exercises(step):
        source = inspect.getsource(import_module(ex.teaching))
        parts.append(f"# Teaching solution of {ex.key}: {ex.writes}\n{source.rstrip()}")
    return "\n\n\n".join(parts) + "\n"


def read_further(step: str | int) -> str:
    """Where the production version of ``step`` lives, for the reader who wants every detail."""
    s = _STEP_OF[_exercises(step)[0].key]
    names = ", ".join(t.replace(":", ".") for t in s.reference)
    return f"Read further: {names} (print(solution_source({s.key!r})) shows it)."


class SolutionView:
    """A solution that stays folded: HTML ``<details>`` in Jupyter, a one-line note as text."""

    def __init__(self, step: str | int):
        self.keys = tuple(ex.key for ex in _exercises(step))
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
