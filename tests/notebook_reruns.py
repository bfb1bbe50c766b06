"""A notebook is run again only when one of its cells timed out, and every rerun says why.

A headless notebook run can stall where a kernel stops answering; nbmake then reports the cell
timeout (nbclient's ``CellTimeoutError``, caught by nbmake and raised again as
``NotebookFailedException``, the exception it raises for every failing notebook). That report, and
only that one, earns up to ``RERUNS`` more tries: a notebook whose cell raised fails at once, and
so does every other test. Each rerun is listed with its notebook, cell and reason at the end of
the test run (``make test`` registers this plugin from ``tests/conftest.py``).
"""

from __future__ import annotations

import pytest
from nbmake.pytest_items import NotebookFailedException, NotebookItem

RERUNS = 2
# The first line of nbclient's CellTimeoutError message, which nbmake keeps as the summary.
TIMEOUT_SUMMARY = "A cell timed out while it was being executed"
REASON = "rerun_reason"  # the report property that carries a rerun's reason to the summary

_reruns: list[str] = []


def cell_timeout(error: BaseException | None) -> str | None:
    """Why ``error`` earns a rerun (which cell timed out), or None: it is not a cell timeout."""
    if not isinstance(error, NotebookFailedException) or not error.args:
        return None
    failure = getattr(error.args[0], "error", None)
    if failure is None or not failure.summary.startswith(TIMEOUT_SUMMARY):
        return None
    return f"cell {failure.failing_cell_index}: {failure.summary}"


def _rerun_if_a_cell_timed_out(error: BaseException | None) -> bool:
    return cell_timeout(error) is not None


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, NotebookItem):
            item.add_marker(pytest.mark.flaky(reruns=RERUNS, condition=_rerun_if_a_cell_timed_out))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    reason = cell_timeout(call.excinfo.value) if call.excinfo is not None else None
    if reason is not None:  # a property travels with the report, also from an xdist worker
        outcome.get_result().user_properties.append((REASON, reason))


def pytest_runtest_logreport(report):
    if report.outcome == "rerun":
        reasons = [value for name, value in report.user_properties if name == REASON]
        _reruns.append(f"{report.nodeid} (try {getattr(report, 'rerun', 0) + 1}): "
                       f"{reasons[-1] if reasons else 'no reason recorded'}")


def pytest_terminal_summary(terminalreporter):
    if _reruns:
        terminalreporter.section("notebook reruns (cell timeouts only)")
        for line in _reruns:
            terminalreporter.write_line(f"RERUN {line}")
