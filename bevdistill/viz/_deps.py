"""Optional dependencies of the pictures, imported with an install hint when missing."""

from __future__ import annotations

from types import ModuleType

LAB_HINT = "install the lab extra: pip install -e '.[lab]' (or pip install matplotlib ipywidgets)"


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, or a ModuleNotFoundError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"bevdistill.viz draws with matplotlib, which is missing: {LAB_HINT}") from exc
    return plt


def ipywidgets() -> ModuleType:
    """``ipywidgets``, or a ModuleNotFoundError that says how to install it."""
    try:
        import ipywidgets as widgets
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the explorers need ipywidgets, which is missing: {LAB_HINT}. The static figures "
            "(bevdistill.viz.plot_*) work without it."
        ) from exc
    return widgets
