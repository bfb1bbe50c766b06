"""Time limits of the exercise checkers: learner code cannot hang a checker.

Every case runs under a SIGALRM timer where the checker runs in the main thread of a POSIX
process (as in a Jupyter kernel); elsewhere cases run without one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

DEFAULT_TIME_LIMIT_S = 10.0
TIME_LIMIT_ENV = "BEVDISTILL_CASE_TIME_LIMIT"


class CaseTimedOut(BaseException):
    """Raised inside learner code when a case runs past its time limit.

    A ``BaseException`` so that a learner's ``except Exception`` cannot swallow it, and not a
    ``TimeoutError`` so that a learner's own ``TimeoutError`` is never taken for it.
    """


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


def time_limits_available() -> bool:
    """SIGALRM interrupts Python code only in the main thread, and only on POSIX systems."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CaseTimedOut` in the running code after ``seconds``; restore any earlier timer.

    The alarm repeats every 0.25 s until the block ends, so learner code that catches
    everything (``except BaseException``) once is still stopped. Where no limit can be set
    (see :func:`time_limits_available`) the block runs without one.
    """
    if not time_limits_available():
        yield
        return
    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:
            raise CaseTimedOut(seconds)

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    started = time.monotonic()
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:  # someone else's timer (e.g. pytest-timeout) keeps running
            remaining = max(previous_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)
