"""Warn once per distinct cause, so a degenerate batch inside a long run does not flood the log."""

from __future__ import annotations

import warnings

_seen: set[str] = set()


class DegenerateInputWarning(UserWarning):
    """A loss got an input on which it cannot teach anything (e.g. InfoNCE at batch size 1)."""


def warn_once(key: str, message: str, category: type[Warning] = DegenerateInputWarning) -> None:
    """Emit ``message`` the first time ``key`` is seen in this process."""
    if key in _seen:
        return
    _seen.add(key)
    warnings.warn(message, category, stacklevel=3)
