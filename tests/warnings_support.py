"""Warnings that ``bevdistill`` shows once per process, shown again for the test that expects one."""

from bevdistill import _warnings


def reset_warnings() -> None:
    """Forget which warnings were shown (a test observing a warning must not depend on order)."""
    _warnings._seen.clear()
