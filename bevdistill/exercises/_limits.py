"""Time limits of the exercise checkers: how long each case may run.

The limit is enforced by :mod:`bevdistill.exercises._sandbox`, which kills the child process
running the learner's code when a case runs past it.
"""

from __future__ import annotations

import os

DEFAULT_TIME_LIMIT_S = 10.0
TIME_LIMIT_ENV = "BEVDISTILL_CASE_TIME_LIMIT"


def case_time_limit(time_limit_s: float | None = None) -> float:
    """Seconds each case may run: the argument, else ``BEVDISTILL_CASE_TIME_LIMIT``, else 10."""
    if time_limit_s is not None:
        value, source = time_limit_s, "time_limit_s"
    elif os.environ.get(TIME_LIMIT_ENV, "").strip():
        value, source = os.environ[TIME_LIMIT_ENV], TIME_LIMIT_ENV
    else:
        return DEFAULT_TIME_LIMIT_S
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{source} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ValueError(f"{source} must be positive, got {value!r}")
    return seconds
