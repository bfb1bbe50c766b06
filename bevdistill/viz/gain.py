"""What distillation bought, read from ``benchmarks/results/distill_gain.json``: readable tables,
mAP-over-iterations curves and per-class bars, for the book's Results chapter and notebook 6;
and the teachers' own curves at two schedules (``teacher_schedule.json``).

The file's ``summary`` holds one row per (scenario, option, budget, split); ``curves`` the
tuning-split mAP of every run over its iterations (see ``benchmarks/distill_gain.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bevdistill.data.classes import CLASS_NAMES
from bevdistill.viz.results import load_benchmark, markdown_table

BUDGET_NAMES = {"equal": "short (equal) budget", "converged": "full schedule",
                "teacher": "student alone, longer schedule"}


def _result(result: str | Mapping[str, Any]) -> Mapping[str, Any]:
    data = load_benchmark(result) if isinstance(result, str) else result
    if "summary" not in data or "scenarios" not in data:
        raise KeyError("this distill_gain result predates the summary/scenarios schema; rerun "
                       "python -m benchmarks.distill_gain")
    return data


def scenario_rows(result: str | Mapping[str, Any], scenario: str, split: str = "test"
                  ) -> list[dict[str, Any]]:
    """The summary rows of one scenario and split, in the file's order."""
    data = _result(result)
    if scenario not in data["scenarios"]:
        raise KeyError(f"no scenario {scenario!r} in the result; it has "
                       f"{sorted(data['scenarios'])}")
    return [r for r in data["summary"] if r["scenario"] == scenario and r["split"] == split]


def best_option(result: str | Mapping[str, Any], scenario: str) -> str | None:
    """The option the benchmark chose on the TUNING split, as its result file records it
    (``scenarios.<name>.best_option``; the rule is the benchmark's, ``choose_best`` in
    ``benchmarks/distill_gain.py``)."""
    data = _result(result)
    if scenario not in data["scenarios"]:
        raise KeyError(f"no scenario {scenario!r} in the result; it has {sorted(data['scenarios'])}")
    described = data["scenarios"][scenario]
    if "best_option" not in described:
        raise KeyError(f"scenario {scenario!r} records no best_option; rerun "
                       "python -m benchmarks.distill_gain for it")
    return described["best_option"]


def run_label(result: str | Mapping[str, Any], scenario: str, option: str) -> str:
    """How a run is named everywhere (tables, legends, bars): ``student alone`` for the
    baseline, ``alone: <option>`` for other students trained without a teacher beside them
    (``teacher_init`` starts from the teacher's weights, then trains alone), ``distilled:
    <option>`` for the rest."""
    if option == "baseline":
        return "student alone"
    described = _result(result)["scenarios"].get(scenario, {}).get("options", {})
    return f"{'alone' if described.get(option, {}).get('trained_alone') else 'distilled'}: {option}"


def gain_table(result: str | Mapping[str, Any], scenario: str, split: str = "test") -> str:
    """A Markdown table a reader can scan: per option and budget, mAP with its seed spread,
    per-class AP, the gain over the student alone and the share of the gap it recovers."""
    data = _result(result)
    teacher = data["scenarios"][scenario]["teacher"].get(split)
    rows = []
    for r in scenario_rows(data, scenario, split):
        is_base = r["option"] == "baseline"
        rec = r.get("gap_recovered")
        rows.append({
            "model": run_label(data, scenario, r["option"]),
            "budget": f"{r['iters']} iterations" if "iters" in r
                      else BUDGET_NAMES.get(r["budget"], r["budget"]),
            "seeds": len(r["seeds"]),
            "mAP": f"{r['mAP_mean']:.3f} ± {r['mAP_std']:.3f}",
            **{f"AP {c}": f"{r[f'AP_{c}_mean']:.3f}" for c in CLASS_NAMES},
            "gain": "" if is_base and r["budget"] != "teacher" else f"{r['gain']:+.3f}",
            "gap recovered": "" if rec is None or (is_base and r["budget"] != "teacher")
            else f"{rec:.0%}",
            "gain > 2 x seed spread": "" if is_base else (
                "n/a (1 seed)" if len(r["seeds"]) < 2
                else "yes" if r["gain_exceeds_2x_spread"] else "no"),
        })
    if teacher:
        rows.append({"model": "teacher", "budget": "", "seeds": 1,
                     "mAP": f"{teacher['mAP']:.3f}",
                     **{f"AP {c}": f"{teacher[f'AP_{c}']:.3f}" for c in CLASS_NAMES},
                     "gain": "", "gap recovered": "100%", "gain > 2 x seed spread": ""})
    return markdown_table(rows)


def gap_by_class(result: str | Mapping[str, Any], scenario: str, option: str,
                 budget: str = "converged", split: str = "test") -> list[dict[str, Any]]:
    """Where the teacher-student gap lies, class by class, and how much of each class's gap
    ``option`` closed (per-class AP: teacher, student alone, distilled)."""
    data = _result(result)
    rows = {r["option"]: r for r in scenario_rows(data, scenario, split) if r["budget"] == budget}
    if option not in rows or "baseline" not in rows:
        raise KeyError(f"no {option!r} or baseline row at budget {budget!r}; options: "
                       f"{sorted(rows)}")
    teacher = data["scenarios"][scenario]["teacher"][split]
    base, best = rows["baseline"], rows[option]
    if base["seeds"] != best["seeds"]:
        raise ValueError(f"{option!r} ran on seeds {best['seeds']}, the baseline row averages "
                         f"{base['seeds']}: compare class by class only options run on every seed")
    total = sum(teacher[f"AP_{c}"] - base[f"AP_{c}_mean"] for c in CLASS_NAMES)
    table = []
    for c in CLASS_NAMES:
        gap = teacher[f"AP_{c}"] - base[f"AP_{c}_mean"]
        gain = best[f"AP_{c}_mean"] - base[f"AP_{c}_mean"]
        table.append({
            "class": c, "AP teacher": teacher[f"AP_{c}"], "AP student alone": base[f"AP_{c}_mean"],
            f"AP {option}": best[f"AP_{c}_mean"],
            "share of the gap": f"{gap / total:.0%}" if total else "-",
            "class gap recovered": f"{gain / gap:.0%}" if gap > 0 else "-",
        })
    return table


def curve_band(runs: Mapping[str, list[dict]]) -> tuple[list[int], list[float], list[float]]:
    """Iterations, mean and standard deviation over seeds of the tuning-split mAP."""
    per_seed = [{h["iter"]: h["mAP"] for h in history} for history in runs.values()]
    iters = sorted(set.intersection(*(set(p) for p in per_seed)))
    means = [statistics.fmean(p[i] for p in per_seed) for i in iters]
    stds = [statistics.stdev([p[i] for p in per_seed]) if len(per_seed) > 1 else 0.0
            for i in iters]
    return iters, means, stds


def plot_gain_curves(result: str | Mapping[str, Any], scenario: str,
                     options: list[str] | None = None, ax=None):
    """Tuning-split mAP over iterations: student alone vs distilled (mean ± std over seeds),
    the student alone at the teacher's budget, and the teacher's level."""
    from bevdistill.viz._deps import pyplot

    plt = pyplot()
    data = _result(result)
    curves = data["curves"][scenario]
    options = options or [o for o in curves if o != "baseline_teacher_budget"]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    for option in options:
        iters, mean, std = curve_band(curves[option])
        label = run_label(data, scenario, option)
        label += f", {len(curves[option])} seed{'s' if len(curves[option]) > 1 else ''}"
        line, = ax.plot(iters, mean, marker="o", ms=3, label=label)
        ax.fill_between(iters, [m - s for m, s in zip(mean, std, strict=True)],
                        [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2,
                        color=line.get_color())
    if "baseline_teacher_budget" in curves:
        iters, mean, _ = curve_band(curves["baseline_teacher_budget"])
        ax.plot(iters, mean, ls=":", color="grey", label=f"student alone, {iters[-1]} iterations")
    teacher = data["scenarios"][scenario]["teacher"].get("val")
    if teacher:
        ax.axhline(teacher["mAP"], color="black", ls="--", lw=1, label="teacher")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("mAP (tuning split)")
    ax.set_title(data["scenarios"][scenario]["what"], fontsize=10)
    ax.legend(fontsize=7)
    return ax


def plot_teacher_schedule(result: str | Mapping[str, Any] = "teacher_schedule", axes=None):
    """Tuning-split mAP of each scenario's teacher over iterations, at the shipped schedule and a
    longer one (``benchmarks/teacher_schedule.py``): does the longer schedule end higher?"""
    from bevdistill.viz._deps import pyplot

    plt = pyplot()
    data = load_benchmark(result) if isinstance(result, str) else result
    names = list(data["curves"])
    if axes is None:
        _, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.8), squeeze=False)
        axes = axes[0]
    for ax, name in zip(axes, names, strict=True):
        for schedule, history in data["curves"][name].items():
            iters = [h["iter"] for h in history]
            ax.plot(iters, [h["mAP"] for h in history], marker="o", ms=3,
                    label=f"{schedule}: {iters[-1]} iterations" if iters else schedule)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("mAP (tuning split)")
        ax.set_title(f"{name} teacher ({data['scenarios'][name]['experiment']})", fontsize=10)
        ax.legend(fontsize=8)
    return axes


def plot_class_bars(result: str | Mapping[str, Any], scenario: str, option: str,
                    budget: str = "converged", split: str = "test", ax=None):
    """Per-class AP on the held-out split: student alone, distilled, teacher."""
    import numpy as np

    from bevdistill.viz._deps import pyplot

    plt = pyplot()
    table = gap_by_class(result, scenario, option, budget, split)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.5))
    x = np.arange(len(table))
    for k, (key, label) in enumerate((("AP student alone", "student alone"),
                                      (f"AP {option}", run_label(result, scenario, option)),
                                      ("AP teacher", "teacher"))):
        ax.bar(x + (k - 1) * 0.27, [r[key] for r in table], width=0.27, label=label)
    ax.set_xticks(x, [r["class"] for r in table])
    ax.set_ylabel(f"AP ({'held-out test' if split == 'test' else split} split)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return ax


# The fair comparison's arms, in the order they are drawn (issue 19's baselines a, b and c).
FAIR_ARMS = {"baseline": "alone, at its plateau (a)",
             "baseline_compute_matched": "alone, same compute (b)",
             "pseudo_label": "teacher's boxes as labels (c)", "combined": "taught loss",
             "combined_pseudo_label": "taught loss + (c)"}


def plot_fair_class_bars(result: str | Mapping[str, Any], scenario: str, split: str = "test",
                         ax=None):
    """Per-class AP of every arm of a fair comparison (mean over seeds, with the seed spread as
    an error bar) beside the teacher's: where each baseline and the taught loss stand."""
    import numpy as np

    from bevdistill.viz._deps import pyplot

    plt = pyplot()
    data = _result(result)
    rows = {r["option"]: r for r in scenario_rows(data, scenario, split)
            if r["budget"] in ("plateau", "compute_matched")}
    arms = [a for a in FAIR_ARMS if a in rows]
    if not arms:
        raise KeyError(f"{scenario!r} has no fair-protocol rows on {split!r}: run "
                       f"python -m benchmarks.distill_gain --scenario {scenario} --protocol fair")
    teacher = data["scenarios"][scenario]["teacher"][split]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(CLASS_NAMES))
    width = 0.8 / (len(arms) + 1)
    for k, arm in enumerate(arms):
        per_class = rows[arm]["per_class"]
        ax.bar(x + (k - len(arms) / 2) * width, [per_class[c]["mean"] for c in CLASS_NAMES],
               width=width, yerr=[per_class[c]["std"] for c in CLASS_NAMES], capsize=2,
               label=FAIR_ARMS[arm])
    ax.bar(x + len(arms) / 2 * width, [teacher[f"AP_{c}"] for c in CLASS_NAMES], width=width,
           color="0.6", label="teacher")
    ax.set_xticks(x, list(CLASS_NAMES))
    ax.set_ylabel(f"AP ({'held-out test' if split == 'test' else split} split)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    return ax


POINT_BINS = (0, 1, 5, 20)  # student-scan points inside a box: none, 1-4, 5-19, 20 or more
DISTANCE_BINS = (0.0, 10.0, 20.0, 32.0)  # metres from the ego to the box centre (BEV)


def found_in_bins(values: Sequence[float], found: Sequence[bool], edges: Sequence[float]
                  ) -> list[tuple[int, int]]:
    """``(found, objects)`` per bin of the ground-truth objects, for any binning: bin ``k``
    holds the objects whose ``values`` lie in ``[edges[k], edges[k + 1])``, the last bin
    ``[edges[-1], inf)``. ``found`` says which objects a model found (:func:`found_mask`).
    A value below ``edges[0]`` is an error: a binning must not drop objects silently."""
    import numpy as np

    values, found = np.asarray(values, dtype=np.float64), np.asarray(found, dtype=bool)
    edges = np.asarray(edges, dtype=np.float64)
    if values.shape != found.shape or values.ndim != 1:
        raise ValueError(f"values and found must be 1-D and of one length (one per object), "
                         f"got shapes {values.shape} and {found.shape}")
    if len(edges) == 0 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be increasing lower bin edges, got {edges.tolist()}")
    if np.any(values < edges[0]):
        raise ValueError(f"{int((values < edges[0]).sum())} objects lie below the first edge "
                         f"{edges[0]:g}: start the bins at or below {values.min():g}")
    index = np.searchsorted(edges, values, side="right") - 1
    return [(int(found[index == k].sum()), int((index == k).sum())) for k in range(len(edges))]


def bin_labels(edges: Sequence[float], integer: bool = False, unit: str = "") -> list[str]:
    """Names of :func:`found_in_bins`' bins: ``0``, ``1-4``, ``5-19``, ``20+`` for integer
    counts (upper bounds included), ``0-10 m``, ``10-20 m``, ``20+ m`` otherwise."""
    bounds = [*edges[1:], None]
    suffix = f" {unit}" if unit else ""
    labels = []
    for lo, hi in zip(edges, bounds, strict=True):
        if hi is None:
            labels.append(f"{lo:g}+{suffix}")
        elif integer:
            labels.append(f"{lo:g}" if hi == lo + 1 else f"{lo:g}-{hi - 1:g}")
        else:
            labels.append(f"{lo:g}-{hi:g}{suffix}")
    return labels


def ground_truth_objects(dataset, num_scenes: int) -> dict[str, Any]:
    """Every ground-truth object of the first ``num_scenes`` scenes, in scene order: its class
    index (``label``), the distance of its centre from the ego in BEV (``distance``, m) and how
    many points of the scan the model reads (``inputs['points']``) fall inside it
    (``points``)."""
    import numpy as np

    from bevdistill.data.geometry import count_points_in_boxes

    labels, distances, points = [], [], []
    for i in range(min(num_scenes, len(dataset))):
        item = dataset[i]
        boxes = item["data_samples"]["gt_boxes"].numpy()
        labels.append(item["data_samples"]["gt_labels"].numpy())
        distances.append(np.hypot(boxes[:, 0], boxes[:, 1]))
        points.append(count_points_in_boxes(item["inputs"]["points"].numpy(), boxes))
    return {"label": np.concatenate(labels), "distance": np.concatenate(distances),
            "points": np.concatenate(points)}


def predict_scenes(dataset, model, num_scenes: int, key: str = "points",
                   batch_size: int = 1) -> tuple[list[dict], list[dict]]:
    """``model``'s predictions on the first ``num_scenes`` scenes and their ground truth
    (``data_samples``), in scene order. ``model`` reads each batch as training collates it
    (camera inputs included), with ``inputs[key]`` as its scan."""
    import torch

    from bevdistill.data import bev_collate

    n = min(num_scenes, len(dataset))
    predictions, samples = [], []
    for start in range(0, n, batch_size):
        batch = bev_collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        inputs = {**batch["inputs"], "points": batch["inputs"][key]}
        with torch.no_grad():
            predictions += model.predict(inputs)
        samples += batch["data_samples"]
    return predictions, samples


def found_objects(predictions: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]]
                  ) -> Any:
    """Which ground-truth objects (in :func:`ground_truth_objects`' order) the predictions
    find (:func:`~bevdistill.viz.bev.found_mask`), from :func:`predict_scenes`' output."""
    import numpy as np

    from bevdistill.viz.bev import found_mask

    found = [found_mask(pred, sample["gt_boxes"], sample["gt_labels"])
             for pred, sample in zip(predictions, samples, strict=True)]
    return np.concatenate(found) if found else np.zeros(0, dtype=bool)


def found_by_points(dataset, models: Mapping[str, tuple[Any, str]], num_scenes: int = 40,
                    bins: tuple[int, ...] = POINT_BINS) -> list[dict[str, Any]]:
    """Share of ground-truth objects each model finds, by how many points of the *student's*
    scan fall inside the object: where a gap lives that no teacher can close (no points) and
    where it can. ``models`` maps a name to ``(model, input key)``, the key being
    ``'points'`` or ``'teacher_points'`` of a two-sensor dataset's items."""
    counts = ground_truth_objects(dataset, num_scenes)["points"]
    per_model = {name: found_in_bins(counts, found_objects(*predict_scenes(
        dataset, model, num_scenes, key)), bins) for name, (model, key) in models.items()}
    totals = [total for _, total in found_in_bins(counts, [False] * len(counts), bins)]
    rows = []
    for k, label in enumerate(bin_labels(bins, integer=True)):
        row: dict[str, Any] = {"student-scan points in the box": label, "objects": totals[k]}
        for name, bins_found in per_model.items():
            found, total = bins_found[k]
            row[f"found by {name}"] = f"{found / total:.0%}" if total else "-"
        rows.append(row)
    return rows


def typical_scene(differences: Sequence[int]) -> int:
    """The index of the *typical* scene: the one whose difference is the median of all the
    scenes' differences (sorted by difference, then by index; the lower middle one of an even
    number), so that a picture shows what usually happens, not the most striking case."""
    if not differences:
        raise ValueError("no scenes to choose from: num_scenes must be at least 1")
    order = sorted(range(len(differences)), key=lambda i: (differences[i], i))
    return order[(len(order) - 1) // 2]


TYPICAL_RULE = ("the scene, of the first {n}, whose difference in found objects (found by {a} "
                "minus found by {b}; same class, centre within 2 m, score at least 0.3) is the "
                "median of the {n} scenes' differences")


def side_by_side(dataset, models: Mapping[str, tuple[Any, str]], compare: tuple[str, str],
                 num_scenes: int = 12, point_cloud_range: Sequence[float] | None = None):
    """Detections of every model on the *typical* scene of the first ``num_scenes``
    (:func:`typical_scene`: the median difference between the two models named in
    ``compare``): a picture of what usually happens, not a measure of it. ``models`` maps a
    panel title to ``(model, input key)`` (``'points'`` or ``'teacher_points'``). Returns
    ``(figure, scene index, differences)``, the differences being found by ``compare[0]``
    minus found by ``compare[1]``, per scene; :data:`TYPICAL_RULE` says the rule in words."""
    import torch

    from bevdistill.viz.bev import count_found, plot_detections

    missing = [name for name in compare if name not in models]
    if missing:
        raise KeyError(f"compare names {missing}, which are not among the models {list(models)}")

    def detect(item):
        clouds = {name: item["inputs"][key] for name, (_, key) in models.items()}
        with torch.no_grad():
            preds = {name: model.predict({"points": [clouds[name]]})[0]
                     for name, (model, _) in models.items()}
        return clouds, preds

    scenes, differences = [], []
    for i in range(min(num_scenes, len(dataset))):
        item = dataset[i]  # a synthetic scene is scanned when indexed: once per scene
        clouds, preds = detect(item)
        sample = item["data_samples"]
        first, second = (count_found(preds[name], sample["gt_boxes"], sample["gt_labels"])
                         for name in compare)
        scenes.append((sample, clouds, preds))
        differences.append(first - second)
    index = typical_scene(differences)
    sample, clouds, preds = scenes[index]
    fig = plot_detections(clouds, sample["gt_boxes"], sample["gt_labels"], preds,
                          point_cloud_range=point_cloud_range)
    return fig, index, differences


def show_gain(result_name: str, scenarios: Sequence[str] | None = None) -> Mapping[str, Any]:
    """Display the scenarios (default: every one) of one distill_gain result file, in a notebook
    or the book: where each came from, its curves, per-class bars and tables."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from bevdistill.engine.report import portable_command  # torch and mmengine: not at import

    result = _result(result_name)
    unknown = sorted(set(scenarios or ()) - set(result["scenarios"]))
    if unknown:
        raise KeyError(f"{result_name} has no scenario {unknown}; it has {sorted(result['scenarios'])}")
    for name, sc in result["scenarios"].items():
        if scenarios is not None and name not in scenarios:
            continue
        prov = sc["provenance"]
        best = sc.get("best_option")
        runs = [r for r in result["runs"] if r["scenario"] == name]
        commits = sorted({r["commit"][:10] for r in runs})
        display(Markdown(
            f"### Scenario `{name}`: {sc['what']}\n\n"
            f"From `benchmarks/results/{result_name}.json`. Reproduce with "
            f"`{portable_command(prov['command'])}`. Its {len(runs)} runs (training "
            f"runs and held-out scorings) took {sum(r['duration_s'] for r in runs) / 60:.0f} "
            f"minutes in all on a {prov['machine']['cpu_count']}-core CPU, all at "
            f"commit `{', '.join(commits)}`, "
            f"{'some from a tree with uncommitted changes' if any(r['dirty'] for r in runs) else 'clean tree'}"
            f" (the JSON lists each run, when it started and whether a later invocation reused "
            f"it). Budget: {sc['budget']['iters']} iterations of batch "
            f"{sc['budget']['batch_size']} on {sc['budget']['train_samples']} training scenes; "
            f"{sc['budget']['tune_samples']} tuning and {sc['budget']['test_samples']} held-out "
            f"scenes. Option chosen on the tuning split: **{best}**."))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        plot_gain_curves(result, name, ax=axes[0])
        if sc.get("protocol") == "fair":
            plot_fair_class_bars(result, name, ax=axes[1])
            axes[1].set_title("held-out split, every arm at its plateau", fontsize=10)
            plt.show()
            display(Markdown("**Held-out (test) split**\n\n" + gain_table(result, name, "test")))
            continue
        # class bars compare seed means: only an option run on every seed has them
        rows = scenario_rows(result, name, "test")
        every_seed = {r["option"] for r in rows if r["option"] != "baseline"
                      and r["seeds"] == next(b["seeds"] for b in rows if b["option"] == "baseline")}
        bars = best if best in every_seed else next(iter(sorted(every_seed)), None)
        if bars:
            plot_class_bars(result, name, bars, ax=axes[1])
            axes[1].set_title(f"held-out split, full schedule ({bars})", fontsize=10)
        plt.show()
        display(Markdown("**Held-out (test) split**\n\n" + gain_table(result, name, "test")))
        display(Markdown("**Tuning split** (what the options were chosen on)\n\n"
                         + gain_table(result, name, "val")))
    return result
