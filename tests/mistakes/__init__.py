"""Wrong answers the checkers must reject, with the root causes they must name.

The step modules hold the mistakes that once made up the checkers' galleries (what learners and
the tutorial this project corrects actually write); ``later_set`` holds a second set written
after the probes were final, to measure how often a diagnosis is right on mistakes the probes
were not designed from. Tests import them from here instead of copying them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mistake:
    """A wrong answer and the keys of the root causes its checker must name (all of them)."""

    name: str
    impl: Any
    causes: tuple[str, ...]
