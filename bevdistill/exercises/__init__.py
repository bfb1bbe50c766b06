"""Exercise checkers, one per tutorial step. Each returns a :class:`CheckResult`.

Usage in a notebook::

    from bevdistill.exercises import check_contrastive
    result = check_contrastive(MyContrastiveLoss)   # prints PASS/FAIL with hints
    ContrastiveLoss = result.impl                   # the learner's class, or the reference
"""

from importlib import import_module

from bevdistill.exercises._checking import CheckFailure, CheckResult, ExerciseFailed
from bevdistill.exercises.steps import STEPS

_CHECKERS = {
    **{ex.checker_name: ex.checker.split(":")[0] for step in STEPS for ex in step.exercises},
    "show_solution": "bevdistill.exercises.solutions",
    "teaching_source": "bevdistill.exercises.solutions",
}

__all__ = ["CheckFailure", "CheckResult", "ExerciseFailed", *_CHECKERS]


def __getattr__(name):
    if name in _CHECKERS:
        return getattr(import_module(_CHECKERS[name]), name)
    raise AttributeError(f"module 'bevdistill.exercises' has no attribute {name!r}")
