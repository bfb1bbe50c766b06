"""How hard loss terms pull, as pictures: grouped bars on a log scale (notebooks 4 and 5) and the
attention-transfer gradient against grid size (``benchmarks/attention_magnitude.py``).

A table of ratios from 1e-11 to 1 hides its trend among the exponents; a log axis shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bevdistill.viz._deps import pyplot


def plot_ratio_bars(groups: Mapping[str, Mapping[str, float]], *, ax=None, xlabel: str = "",
                    title: str = "", reference: Mapping[str, float] | None = None):
    """Horizontal bars on a log axis, one block per group (``{group: {label: value}}``), each
    bar labelled with its value; ``reference`` draws named vertical lines (``{"equal pull": 1}``).
    A value of 0 (a term with no gradient) is labelled but has no bar on a log axis; negative
    or NaN values raise. Returns the axes."""
    plt = pyplot()
    rows = [(group, label, float(v)) for group, values in groups.items() for label, v in values.items()]
    if not rows:
        raise ValueError("plot_ratio_bars: nothing to plot, groups are empty")
    bad = [(g, label, v) for g, label, v in rows if not v >= 0]
    if bad:
        raise ValueError(f"plot_ratio_bars: values must be >= 0 (ratios, norms), got {bad}")
    positive = [v for *_, v in rows if v > 0] or [1.0]
    lo = min(positive)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 0.5 * len(groups) + 1.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    y, ticks, names = 0.0, [], []
    for k, (group, values) in enumerate(groups.items()):
        for label, value in values.items():
            if value > 0:
                ax.barh(y, value, color=colours[k % len(colours)],
                        label=group if label == next(iter(values)) else None)
            ax.text(max(value, lo / 3), y, f" {value:.1e}" if value else " 0 (no gradient)",
                    va="center", fontsize=7)
            ticks.append(y)
            names.append(label)
            y -= 1
        y -= 0.6  # a gap between groups
    ax.set_xscale("log")
    ax.set_yticks(ticks, names, fontsize=8)
    for k, (name, x) in enumerate((reference or {}).items()):
        ax.axvline(x, color="grey", ls=("--", ":", "-.")[k % 3], lw=1, label=name)
    hi = max(positive + list((reference or {}).values()))
    ax.set_xlim(lo / 3, hi * 30)  # room for the value labels
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    if len(groups) > 1 or reference:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def plot_attention_magnitude(result: Mapping[str, Any], ax=None):
    """The ratio of each attention-transfer variant's weight gradient to the focal loss's
    against the number of BEV cells, log-log, from ``benchmarks/attention_magnitude.py``'s
    result (its ``rows``). Returns the axes."""
    plt = pyplot()
    if "rows" not in result:
        raise KeyError("expected the result of benchmarks/attention_magnitude.py (a 'rows' list); "
                       f"got the keys {sorted(result)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    variants = dict.fromkeys(r["variant"] for r in result["rows"])
    for variant in variants:
        rows = [r for r in result["rows"] if r["variant"] == variant]
        cells = [int(r["grid"].split("x")[0]) * int(r["grid"].split("x")[1]) for r in rows]
        ax.plot(cells, [r["weight_grad_ratio_to_focal"] for r in rows], marker="o", label=variant)
        for c, r in zip(cells, rows, strict=True):
            ax.annotate(r["grid"], (c, r["weight_grad_ratio_to_focal"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="as hard as the detection loss")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("BEV cells H x W")
    ax.set_ylabel("|dW| attention term / |dW| focal loss")
    ax.set_title("how hard attention transfer pulls, by grid size", fontsize=9)
    ax.legend(fontsize=7)
    return ax
