"""Helpers of the notebook tests: load a notebook, fill its exercise cell, run it headless."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
TIMEOUT_S = 240  # per cell: the longest CI-mode cell takes well under a minute


def tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def load(name: str) -> tuple[nbformat.NotebookNode, int]:
    """The notebook and the index of its check cell (the code cell after the exercise)."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    exercise = next(i for i in code if "exercise" in tags(nb.cells[i]))
    return nb, next(i for i in code if i > exercise)


def fill(nb: nbformat.NotebookNode, answer: str) -> None:
    """Replace the exercise cell's stub with ``answer``."""
    for cell in nb.cells:
        if "exercise" in tags(cell):
            cell.source = answer.strip()


def run(nb: nbformat.NotebookNode) -> None:
    """Execute in place, in the notebooks' folder, as nbmake and the book build do."""
    NotebookClient(
        nb, timeout=TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    ).execute()


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
