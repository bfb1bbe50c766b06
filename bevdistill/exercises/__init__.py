"""Exercise checkers, one per tutorial exercise. Each returns a :class:`CheckResult`.

Usage in a notebook::

    from bevdistill.exercises import check_contrastive
    result = check_contrastive(MyContrastiveLoss)   # prints PASS/FAIL with hints
    ContrastiveLoss = result.impl                   # the learner's class, or the reference

The checkers are the ones declared in :mod:`bevdistill.exercises.steps`. Names are resolved
lazily, so importing this package (or the declaration) imports no torch.
"""

from importlib import import_module

from bevdistill.exercises.steps import EXERCISES

_EXPORTS = {
    "CheckFailure": "bevdistill.exercises._checking",
    "CheckResult": "bevdistill.exercises._checking",
    "ExerciseFailed": "bevdistill.exercises._checking",
    **{ex.checker_name: ex.checker.split(":")[0] for ex in EXERCISES.values()},
    "show_solution": "bevdistill.exercises.solutions",
    "teaching_source": "bevdistill.exercises.solutions",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bevdistill.exercises' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
