"""The term diagnosis (``benchmarks/results/term_diagnosis.json``) as tables and named numbers.

The benchmark measures, for the taught loss's terms, the pull of each term's gradient next to
the detection loss's, how alike the student's and the teacher's maps are (linear CKA), and each
term's effect alone and left out. :func:`diagnosis_markdown` renders its tables (the benchmark
stores them in the file, the book shows them); :func:`diagnosis_numbers` gives the numbers the
book's prose states, by name, so that the prose is rendered from the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bevdistill.viz.results import load_benchmark

INIT, ALONE, TAUGHT = "init", "alone", "taught"


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _index(rows: Sequence[Mapping[str, Any]], *keys: str) -> dict[tuple, Mapping[str, Any]]:
    return {tuple(r[k] for k in keys): r for r in rows}


def gradient_keys(result: Mapping[str, Any]) -> list[str]:
    """The gradient rows' keys in reading order: terms, their layers' keys, detection, total."""
    keys = list(dict.fromkeys(r["key"] for r in result["gradients"]))
    terms = [k for k in keys if k.startswith("term:")]
    layers = [k for k in keys if k.startswith("loss_")]
    return terms + layers + [k for k in ("detection", "total") if k in keys]


def gradient_table(result: Mapping[str, Any]) -> str:
    """Each key's parameter-gradient norm over the detection loss's (cosine with it), at the
    initialisation, along the full recipe's run and at the end of the student alone's."""
    grads = _index(result["gradients"], "arm", "iter", "key")
    iters = sorted({r["iter"] for r in result["gradients"] if r["arm"] == TAUGHT})
    columns = [(INIT, 0)] + [(TAUGHT, i) for i in iters]
    end = result["budget"]["iters"]
    if (ALONE, end, "detection") in grads:
        columns.append((ALONE, end))
    rows = []
    for key in gradient_keys(result):
        cells = [key]
        for arm, it in columns:
            r = grads.get((arm, it, key))
            cells.append("-" if r is None else
                         f"{r['param_ratio_to_detection']:.3g} ({r['cosine_to_detection']:+.2f})")
        rows.append(cells)
    det = [f"{grads[(a, i, 'detection')]['param_norm']:.3g}" if (a, i, "detection") in grads
           else "-" for a, i in columns]
    rows.append(["detection gradient norm", *det])
    head = ["key", *(f"{'init' if a == INIT else a} @{i}" for a, i in columns)]
    return _table(head, rows)


def map_gradient_table(result: Mapping[str, Any], arm: str = TAUGHT) -> str:
    """Each key's gradient norm on each hooked map over the detection loss's there, at the
    initialisation and at the end of ``arm``."""
    grads = _index(result["gradients"], "arm", "iter", "key")
    layers = list(dict.fromkeys(k[len("map_ratio."):] for r in result["gradients"]
                                for k in r if k.startswith("map_ratio.")))
    end = result["budget"]["iters"]
    rows = []
    for key in [k for k in gradient_keys(result) if k.startswith("loss_")]:
        cells = [key]
        for layer in layers:
            for a, i in ((INIT, 0), (arm, end)):
                r = grads.get((a, i, key))
                cells.append(_f(None if r is None else r.get(f"map_ratio.{layer}"), ".3g"))
        rows.append(cells)
    head = ["key", *(f"{layer} {when}" for layer in layers for when in ("init", f"{arm} end"))]
    return _table(head, rows)


def cka_table(result: Mapping[str, Any]) -> str:
    """CKA of the student's maps with the teacher's per layer, over all cells and inside boxes:
    at the initialisation and at the end of every arm run."""
    cka = _index(result["cka"], "arm", "iter", "layer", "cells")
    end = result["budget"]["iters"]
    arms = [(INIT, 0)] + [(a, end) for a in result["arms_done"]]
    keys = list(dict.fromkeys((r["layer"], r["cells"]) for r in result["cka"]))
    rows = [[layer, cells, *(_f(cka[(a, i, layer, cells)]["cka"] if (a, i, layer, cells) in cka
                                else None) for a, i in arms)] for layer, cells in keys]
    return _table(["layer", "cells", *(a for a, _ in arms)], rows)


def effect_table(result: Mapping[str, Any]) -> str:
    """Tuning-split mAP of every arm, its gains and its foreground CKA at the end."""
    layers = list(dict.fromkeys(k[len("fg_cka."):] for r in result["effects"] for k in r
                                if k.startswith("fg_cka.")))
    rows = [[r["arm"], ", ".join(r["terms"]) or "-", _f(r["tune_mAP"]),
             _f(r["gain_vs_alone"], "+.3f"), _f(r["gain_vs_taught"], "+.3f"),
             "-" if r["arm"] == ALONE else _f(r.get("gap_recovered"), ".0%"), *(_f(r.get(f"fg_cka.{la}")) for la in layers)]
            for r in result["effects"]]
    head = ["arm", "terms", "tuning mAP", "vs alone", "vs taught", "gap recovered",
            *(f"fg CKA {la}" for la in layers)]
    return _table(head, rows)


def diagnosis_markdown(result: Mapping[str, Any]) -> str:
    """Every table of the diagnosis, with a line saying what each shows."""
    teacher = result.get("teacher_tune", {}).get("mAP")
    parts = [
        f"{result['what']}, world_version={result['world_version']} (the shipped teacher's); "
        f"{result['budget']['iters']} iterations, {result['budget']['train_samples']} training "
        f"scenes, seed {result['budget']['seed']}; teacher's tuning mAP {_f(teacher)}."
        + ("" if result["complete"] else
           f" **Partial**: not run: {', '.join(result['arms_not_run'])}."),
        "**Effect of each term** (tuning split, end of schedule):\n\n" + effect_table(result),
        "**Gradient on the student's weights**, norm over the detection loss's (cosine with "
        "it):\n\n" + gradient_table(result),
        "**Gradient on each hooked map**, norm over the detection loss's there:\n\n"
        + map_gradient_table(result),
        "**Linear CKA with the teacher's maps** (cells as samples; foreground: inside boxes):"
        "\n\n" + cka_table(result),
    ]
    return "\n\n".join(parts)


def diagnosis_numbers(result: Mapping[str, Any] | str = "term_diagnosis") -> dict[str, Any]:
    """The numbers the book's prose states, by name (``result``: the parsed file or its name).

    ``grad_<term>_<when>``: the term's parameter-gradient norm over the detection loss's
    (``when``: ``init``, ``end`` of the full recipe's run, ``run``: mean over the run's
    measurements after the initialisation); ``cos_<term>_<when>``: the cosine of the two; ``cka_<layer>_<cells>_<arm>``: CKA at the end of ``arm`` (``init``: before any
    step); ``map_<arm>``, ``gain_<arm>``: tuning mAP and gain over the student alone.
    """
    if isinstance(result, str):
        result = load_benchmark(result)
    end = result["budget"]["iters"]
    grads = _index(result["gradients"], "arm", "iter", "key")
    out: dict[str, Any] = {"iters": end, "teacher_map": result["teacher_tune"]["mAP"]}
    for t in result["recipe"]:
        for when, (arm, it) in (("init", (INIT, 0)), ("end", (TAUGHT, end))):
            r = grads.get((arm, it, f"term:{t['term']}"))
            if r is not None:
                out[f"grad_{t['term']}_{when}"] = r["param_ratio_to_detection"]
                out[f"cos_{t['term']}_{when}"] = r["cosine_to_detection"]
    for t in result["recipe"]:  # along the run, the initialisation left out
        along = [r for r in result["gradients"] if r["arm"] == TAUGHT
                 and r["key"] == f"term:{t['term']}"]
        if along:
            out[f"grad_{t['term']}_run"] = sum(r["param_ratio_to_detection"]
                                               for r in along) / len(along)
            out[f"cos_{t['term']}_run"] = sum(r["cosine_to_detection"] for r in along) / len(along)
    total = {r["layer"]: r["n"] for r in result["cka"] if r["arm"] == INIT and r["cells"] == "all"}
    for r in result["cka"]:
        if r["arm"] == INIT and r["cells"] == "foreground" and total.get(r["layer"]):
            out[f"fg_share_{r['layer']}"] = r["n"] / total[r["layer"]]
    for r in result["cka"]:
        if r["iter"] in (0, end):
            out[f"cka_{r['layer']}_{r['cells']}_{r['arm']}"] = r["cka"]
    for r in result["effects"]:
        out[f"map_{r['arm']}"] = r["tune_mAP"]
        out[f"gain_{r['arm']}"] = r["gain_vs_alone"]
    return out


def plot_diagnosis(result: Mapping[str, Any] | str = "term_diagnosis", axes=None):
    """Two panels: each term's parameter-gradient norm over the detection loss's along the full
    recipe's run (log scale), and the foreground CKA with the teacher per layer at the end of
    the student alone's and the full recipe's runs (and at the initialisation)."""
    from bevdistill.viz._deps import pyplot

    if isinstance(result, str):
        result = load_benchmark(result)
    plt = pyplot()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    left, right = axes
    end = result["budget"]["iters"]
    for t in result["recipe"]:
        key = f"term:{t['term']}"
        points = sorted((r["iter"], r["param_ratio_to_detection"]) for r in result["gradients"]
                        if r["key"] == key and (r["arm"] == TAUGHT or r["arm"] == INIT))
        left.plot(*zip(*points, strict=True), marker="o", label=f"{t['term']} (weight "
                  f"{t['weight']:g})")
    left.axhline(1.0, color="grey", lw=0.8, ls="--")
    left.set(yscale="log", xlabel="iteration of the full recipe's run",
             ylabel="|grad term| / |grad detection|", title="pull on the student's weights")
    left.legend(fontsize=8)
    layers = list(dict.fromkeys(r["layer"] for r in result["cka"]))
    cka = _index(result["cka"], "arm", "iter", "layer", "cells")
    bars = [(INIT, 0)] + [(a, end) for a in (ALONE, TAUGHT) if a in result["arms_done"]]
    width = 0.8 / len(bars)
    for k, (arm, it) in enumerate(bars):
        values = [(cka.get((arm, it, la, "foreground")) or {}).get("cka") or 0.0 for la in layers]
        right.bar([i + k * width for i in range(len(layers))], values, width,
                  label="initialisation" if arm == INIT else f"{arm}, iteration {it}")
    right.set_xticks([i + width * (len(bars) - 1) / 2 for i in range(len(layers))], layers)
    right.set(ylim=(0, 1), ylabel="linear CKA with the teacher",
              title="student vs teacher maps, cells inside boxes")
    right.legend(fontsize=8)
    return axes


def diagnosis_findings(result: Mapping[str, Any] | str = "term_diagnosis") -> str:
    """The measurements the book's prose reasons from, as Markdown bullets rendered from the
    file: each term's effect alone and left out, its pull and its direction, and how far the
    student's maps moved towards the teacher's inside boxes."""
    if isinstance(result, str):
        result = load_benchmark(result)
    n = diagnosis_numbers(result)
    terms = [t["term"] for t in result["recipe"]]
    done = set(result["arms_done"])
    base, full, teacher = n.get("map_alone"), n.get("map_taught"), n["teacher_map"]
    lines = []
    if base is not None and full is not None:
        lines.append(
            f"**Effect.** After {n['iters']} iterations the full recipe scores {full:.3f} "
            f"tuning mAP against {base:.3f} for the student alone ({full - base:+.3f}, "
            f"{(full - base) / (teacher - base):.0%} of the gap to the teacher's {teacher:.3f}).")
        alone = [f"{t} {n[f'gain_only_{t}']:+.3f}" for t in terms if f"only_{t}" in done]
        left = [f"{t} {n[f'map_without_{t}'] - full:+.3f}" for t in terms
                if f"without_{t}" in done]
        if alone:
            lines.append("Each term alone, over the student alone: " + ", ".join(alone) + ".")
        if left:
            lines.append("Each term left out, against the full recipe: " + ", ".join(left)
                         + ".")
    pulls = [f"{t} {n[f'grad_{t}_init']:.2f}x at the start, {n[f'grad_{t}_run']:.2f}x along "
             f"the run (cosine {n[f'cos_{t}_run']:+.2f})" for t in terms
             if f"grad_{t}_run" in n]
    if pulls:
        lines.append("**Pull.** Gradient norm on the student's weights over the detection "
                     "loss's, and the cosine between the two: " + "; ".join(pulls) + ".")
    reach = []
    for layer in dict.fromkeys(r["layer"] for r in result["cka"]):
        keys = [f"cka_{layer}_foreground_{a}" for a in ("init", "alone", "taught")]
        if all(n.get(k) is not None for k in keys):
            reach.append(f"{layer} {n[keys[0]]:.2f} at the start, {n[keys[1]]:.2f} alone, "
                         f"{n[keys[2]]:.2f} distilled")
    if reach:
        lines.append("**Reach.** CKA with the teacher's maps inside boxes: " + "; ".join(reach)
                     + ".")
    shares = [f"{layer} {n[f'fg_share_{layer}']:.1%}" for layer in
              dict.fromkeys(r["layer"] for r in result["cka"]) if f"fg_share_{layer}" in n]
    if shares:
        lines.append("**Where the objects are.** Share of the cells inside ground-truth boxes: "
                     + ", ".join(shares) + ".")
    return "\n".join(f"* {line}" for line in lines)
