"""Test-wide settings: one torch thread per pytest worker (two workers share two cores)."""

import notebook_reruns
import torch

torch.set_num_threads(1)


def pytest_configure(config):
    # Notebooks (pytest --nbmake) are rerun only after a cell timeout, with the reason printed.
    if not config.pluginmanager.is_registered(notebook_reruns):
        config.pluginmanager.register(notebook_reruns, "notebook_reruns")


# --- the fault suite's one-line summary (tests/test_faults.py) ---------------------------------
# Each fault case records its outcome with record_property("fault", outcome); the counts are
# taken from the test reports, so the summary is right under pytest-xdist too.
FAULT_OUTCOMES = ("clear", "handled", "silent", "lost", "traceback", "hang")
_fault_counts = dict.fromkeys(FAULT_OUTCOMES, 0)


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "fault" and value in _fault_counts:
            _fault_counts[value] += 1


def pytest_terminal_summary(terminalreporter):
    c = _fault_counts
    tried = c["clear"] + c["handled"] + c["silent"] + c["traceback"] + c["hang"]
    if tried or c["lost"]:
        terminalreporter.write_line(
            f"fault suite: {tried} cases tried, {c['clear']} clear errors, {c['handled']} "
            f"recovered or computed correctly, {c['silent']} silent results (goal 0), "
            f"{c['lost']} data lost (goal 0), {c['traceback']} raw tracebacks (goal 0), "
            f"{c['hang']} hangs (goal 0)"
        )
