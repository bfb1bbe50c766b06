"""The one base class of every error a user can fix (a config, a file, a command, a value).

The command line catches :class:`UserError` in one place and prints its message in at most two
lines with exit status 2 (``--debug`` shows the traceback); anything else is a bug and keeps
its traceback. Each subclass also derives from the builtin type callers already catch
(``ValueError``, ``KeyError``, ``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Raised for a mistake in what the user gave (config, files, options), never for a bug.

    The message says what was wrong and how to fix it.
    """


class ExperimentConfigError(UserError, ValueError):
    """An experiment config is missing, unknown, unreadable or inconsistent, or one of its keys
    (in the file or in ``--cfg-options``) is unknown or holds a value out of range."""
