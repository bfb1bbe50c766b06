"""Exercise checkers, one per tutorial step. Each returns a :class:`CheckResult`.

Usage in a notebook::

    from bevdistill.exercises import check_contrastive
    result = check_contrastive(MyContrastiveLoss)   # prints PASS/FAIL with hints
    ContrastiveLoss = result.impl                   # the learner's class, or the reference
"""

from importlib import import_module

from bevdistill.exercises._checking import CheckFailure, CheckResult, ExerciseFailed

_CHECKERS = {
    "check_wrapper": "bevdistill.exercises.step1_wrapper",
    "check_projection": "bevdistill.exercises.step2_projection",
    "check_contrastive": "bevdistill.exercises.step3_contrastive",
    "check_attention": "bevdistill.exercises.step4_attention",
    "check_heatmap_kd": "bevdistill.exercises.step5a_response",
    "check_distillation_loss": "bevdistill.exercises.step5_loss",
    "check_channels": "bevdistill.exercises.step6a_channels",
    "check_build": "bevdistill.exercises.step6_build",
    "show_solution": "bevdistill.exercises.solutions",
    "teaching_source": "bevdistill.exercises.solutions",
}

__all__ = ["CheckFailure", "CheckResult", "ExerciseFailed", *_CHECKERS]


def __getattr__(name):
    if name in _CHECKERS:
        return getattr(import_module(_CHECKERS[name]), name)
    raise AttributeError(f"module 'bevdistill.exercises' has no attribute {name!r}")
