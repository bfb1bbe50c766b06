"""Add ``portable_command`` to every run record of the result files that predate it.

Run records written by :func:`benchmarks.runs.run_all` carry the command of each run both as
it ran (``command``, with this machine's paths) and as anyone reruns it from the repository root
(``portable_command``). Older files hold only ``command``; this derives ``portable_command``
from it with the same function (:func:`benchmarks.runs.with_portable_commands`), changing
nothing else: no measured value, no other field, the order of the records and the
file's indentation kept.

    .venv/bin/python -m benchmarks.add_portable_commands            # every results/*.json
    .venv/bin/python -m benchmarks.add_portable_commands --check    # exit 1 where one is missing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.provenance import RESULTS_DIR
from benchmarks.runs import with_portable_commands
from bevdistill.engine.report import write_json


def run_records(data: dict) -> list[dict] | None:
    """The file's list of run records (each with a ``command``), or None where it has none."""
    runs = data.get("runs")
    if isinstance(runs, list) and runs and all(isinstance(r, dict) and "command" in r
                                               for r in runs):
        return runs
    return None


def add(path: Path) -> bool:
    """Add the field to ``path``'s run records; True where the file changed."""
    data = json.loads(path.read_text())
    runs = run_records(data)
    if runs is None:
        return False
    derived = with_portable_commands([{k: v for k, v in r.items() if k != "portable_command"}
                                      for r in runs])
    if derived == runs:
        return False
    data["runs"] = derived
    text = path.read_text()
    indent = len(text.split("\n", 2)[1]) - len(text.split("\n", 2)[1].lstrip(" "))
    if indent == 2:
        write_json(path, data)  # as the benchmarks write their files
    else:  # an older file written with another indent keeps it, so the diff shows only the field
        path.write_text(json.dumps(data, indent=indent) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where a "
                        "run record lacks its portable command or it differs from the derived one")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        runs = run_records(json.loads(path.read_text()))
        if runs is None:
            continue
        if args.check:
            if with_portable_commands([{k: v for k, v in r.items() if k != "portable_command"}
                                       for r in runs]) != runs:
                stale.append(path.name)
        elif add(path):
            print(f"{path.name}: portable_command added to {len(runs)} run records")
    if stale:
        print(f"run records without their derived portable_command: {stale}; run "
              "python -m benchmarks.add_portable_commands", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
