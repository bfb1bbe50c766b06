"""Every figure in the book comes from a result file; every result file names the commit of the
code that made it, from a clean tree (per run where a file aggregates runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COMMIT = re.compile(r"[0-9a-f]{40}")


def _untraced(record: dict) -> list[str]:
    """What is missing for ``record`` to trace its figures to clean code (empty: traced)."""
    runs = record.get("runs")
    if isinstance(runs, list) and runs and "commit" in runs[0]:
        return [f"run {r.get('name')}: commit {r.get('commit')!r}, dirty {r.get('dirty')!r}"
                for r in runs if not COMMIT.fullmatch(str(r.get("commit")))
                or r.get("dirty") is not False]
    commit, dirty = record.get("git_commit"), record.get("uncommitted_changes")
    if COMMIT.fullmatch(str(commit)) and dirty is False:
        return []
    return [f"git_commit {commit!r}, uncommitted_changes {dirty!r}"]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_result_file_traces_its_figures_to_a_clean_commit(path):
    problems = _untraced(json.loads(path.read_text()))
    assert not problems, (f"{path.name} does not trace its figures to committed code: "
                          f"{problems[:3]}; rerun its benchmark from a clean tree")


def test_the_check_rejects_untraced_records():
    run = {"name": "a", "commit": "0" * 40, "dirty": False}
    assert _untraced({"runs": [run]}) == []
    assert _untraced({"runs": [run, {**run, "dirty": True}]})
    assert _untraced({"runs": [{**run, "commit": None}]})
    assert _untraced({"git_commit": "0" * 40, "uncommitted_changes": False}) == []
    assert _untraced({"git_commit": "0" * 40, "uncommitted_changes": True})
    assert _untraced({"command": "python -m x"})  # no commit at all
