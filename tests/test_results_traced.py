"""Every figure in the book comes from a result file; every result file names the commit of the
code that made it, from a clean tree (per run where a file aggregates runs), and every run
record keeps a command anyone can rerun: ``portable_command``, with no machine path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.runs import with_portable_commands

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COMMIT = re.compile(r"[0-9a-f]{40}")
MACHINE_PATH = re.compile(r"(^|[\s=])(/|~/|[A-Za-z]:\\)")  # an absolute path, anywhere in a command


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


def _not_portable(record: dict) -> list[str]:
    """Run records whose ``portable_command`` is missing, holds a machine path, or is not the
    one their ``command`` gives (empty: every run can be rerun anywhere)."""
    runs = record.get("runs")
    if not (isinstance(runs, list) and runs and all("command" in r for r in runs)):
        return []
    derived = with_portable_commands([{k: v for k, v in r.items() if k != "portable_command"}
                                      for r in runs])
    problems = []
    for run, expected in zip(runs, derived, strict=True):
        command = run.get("portable_command")
        if not command:
            problems.append(f"run {run.get('name')}: no portable_command")
        elif MACHINE_PATH.search(command):
            problems.append(f"run {run.get('name')}: machine path in {command!r}")
        elif command != expected["portable_command"]:
            problems.append(f"run {run.get('name')}: portable_command {command!r} is not the "
                            f"one its command gives, {expected['portable_command']!r}")
    return problems


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_run_record_keeps_a_portable_command(path):
    problems = _not_portable(json.loads(path.read_text()))
    assert not problems, (f"{path.name}: {len(problems)} run records cannot be rerun elsewhere, "
                          f"e.g. {problems[:2]}; run python -m benchmarks.add_portable_commands")


def test_the_portable_check_rejects_machine_paths_and_missing_commands():
    runs = [{"name": "a", "scenario": "s", "command": "-m bevdistill train student x --work-dir "
             "/srv/runs/s/a/seed0 --cfg-options train_dataset.cache_dir=/srv/runs/cache"},
            {"name": "a/test", "scenario": "s", "command": "-m bevdistill evaluate x "
             "/srv/runs/s/a/seed0/iter_4.pth --work-dir /srv/runs/s/a/seed0/test"},
            {"name": "teacher", "scenario": "s", "command": "-m bevdistill evaluate t "
             "/home/me/repo/bevdistill/assets/teacher.pth --work-dir /srv/runs/s/teacher"}]
    good = with_portable_commands(runs)  # the work root: /srv/runs/s, holding every work dir
    assert good[0]["portable_command"] == ("python -m bevdistill train student x --work-dir "
                                           "WORK_ROOT/a/seed0 --cfg-options")
    assert good[1]["portable_command"] == ("python -m bevdistill evaluate x WORK_ROOT/a/seed0/"
                                           "iter_4.pth --work-dir WORK_ROOT/a/seed0/test")
    assert good[2]["portable_command"] == ("python -m bevdistill evaluate t "
                                           "bevdistill/assets/teacher.pth --work-dir WORK_ROOT/teacher")
    assert _not_portable({"runs": good}) == []
    assert _not_portable({"runs": runs})  # no portable command at all
    leaked = [{**good[0], "portable_command": good[0]["portable_command"] + " --out /srv/x"},
              *good[1:]]
    assert "machine path" in _not_portable({"runs": leaked})[0]
    edited = [{**good[0], "portable_command": "python -m bevdistill train student y"}, *good[1:]]
    assert "is not the one its command gives" in _not_portable({"runs": edited})[0]
