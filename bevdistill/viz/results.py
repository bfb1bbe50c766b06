"""Benchmark results for the book and the notebooks, read from ``benchmarks/results/*.json``.

Every benchmark writes one JSON with the ``command`` that made it and the ``machine`` it ran
on; :func:`benchmark_markdown` turns any such file into Markdown (the command, the machine, a
table per list of rows, the other numbers as a key/value table), so a new benchmark shows up in
the results chapter without new rendering code.

The package reads the result files only: it never imports the benchmarks' code (they import
the package, never the reverse). The ``benchmarks/results/`` folder belongs to the source
checkout, not to an installed wheel; these functions find it next to the package
(``pip install -e .``) and say so when it is absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bevdistill

RESULTS_DIR = Path(bevdistill.__file__).resolve().parent.parent / "benchmarks" / "results"
MAX_TABLE_ROWS = 60
LONG_TEXT = 120  # characters: longer strings (commands of every run) stay in the JSON file
PER_RUN_KEYS = ("runs", "results")  # what a benchmark's own summary table already sums up


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found at {path}: benchmarks live in the source checkout (git clone, then "
            "pip install -e .), not in an installed wheel"
        )
    return path


def list_benchmarks() -> list[str]:
    """Names of the result files (``benchmarks/results/<name>.json``), sorted."""
    return sorted(p.stem for p in _require(RESULTS_DIR, "benchmark results").glob("*.json"))


def load_benchmark(name: str) -> dict:
    """The parsed ``benchmarks/results/<name>.json``."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(list_benchmarks()) or "none"
        raise FileNotFoundError(f"no benchmark result {name!r} in {RESULTS_DIR} (known: {known})")
    with open(path) as f:
        return json.load(f)


# --- Markdown ---------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """Numbers with 4 significant digits, everything else as text safe inside a table cell."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], max_rows: int = MAX_TABLE_ROWS) -> str:
    """A Markdown table of dict rows; columns in first-seen order, missing cells left empty."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:max_rows]:
        lines.append("| " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |")
    if len(rows) > max_rows:
        lines.append(f"\n({len(rows) - max_rows} more rows in the JSON file)")
    return "\n".join(lines)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, list]]:
    """Scalars under dotted keys, and lists of dicts (tables) under their dotted keys."""
    scalars: dict[str, Any] = {}
    tables: dict[str, list] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            sub_scalars, sub_tables = _flatten(value, f"{name}.")
            scalars.update(sub_scalars)
            tables.update(sub_tables)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables[name] = value
        else:
            scalars[name] = value
    return scalars, tables


def benchmark_markdown(data: str | Mapping[str, Any], title: str | None = None) -> str:
    """Markdown for one benchmark result: how to reproduce it, where it ran, what it measured."""
    name = data if isinstance(data, str) else title or "benchmark"
    result = load_benchmark(data) if isinstance(data, str) else data
    if not isinstance(result, Mapping):
        raise TypeError(f"a benchmark result is a JSON object, got {type(result).__name__}")
    result = dict(result)
    command = result.pop("command", None) or result.pop("command_pattern", None)
    if command:
        from bevdistill.engine.report import portable_command  # torch: not at import

        command = portable_command(command)  # no path of the machine that ran it
    machine = result.pop("machine", None)
    parts = [f"**{title or name}** (`benchmarks/results/{name}.json`)" if isinstance(data, str)
             else f"**{title or name}**"]
    parts.append(f"Reproduce with:\n\n```bash\n{command}\n```" if command else
                 "*This result file does not record the command that made it.*")
    if isinstance(machine, Mapping):
        scalars, _ = _flatten(machine)
        parts.append("Measured on: " + "; ".join(f"{k} {format_value(v)}" for k, v in scalars.items()))
    elif machine:
        parts.append(f"Measured on: {format_value(machine)}")
    summary = result.pop("markdown", None)
    if summary:  # the benchmark's own table; its per-run rows stay in the JSON file
        for key in PER_RUN_KEYS:
            result.pop(key, None)
    scalars, tables = _flatten(result)
    if summary:
        parts.append(summary)
    else:
        for key, rows in tables.items():
            parts.append(f"**{key}**\n\n{markdown_table(rows)}")
    long = [k for k, v in scalars.items() if isinstance(v, str) and len(v) > LONG_TEXT]
    shown = {k: v for k, v in scalars.items() if k not in long}
    if shown:
        parts.append(markdown_table([{"quantity": k, "value": v} for k, v in shown.items()]))
    if long:
        parts.append(f"Also in the JSON file: {', '.join(f'`{k}`' for k in long)}.")
    return "\n\n".join(parts)


def show_benchmark(name: str, title: str | None = None, missing_ok: bool = False) -> None:
    """Display :func:`benchmark_markdown` of ``name`` in a notebook (rendered by the book).

    ``missing_ok``: where the result file does not exist yet, say how to make it instead of
    raising.
    """
    from IPython.display import Markdown, display

    if missing_ok and not (RESULTS_DIR / f"{name}.json").is_file():
        display(Markdown(
            f"*No result file `benchmarks/results/{name}.json` yet.* Make it with:\n\n"
            f"```bash\nOMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.{name}\n```"
        ))
        return
    display(Markdown(benchmark_markdown(name, title)))
