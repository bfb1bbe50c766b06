"""What the lab's measurements say, read from ``benchmarks/results/*.json`` at build time.

The Results chapter and notebook 6 state their numbers through this module, never by typing
them: :func:`results_numbers` gives every number the chapter's prose uses, by name, and the
page glues them in (MyST-NB ``{glue:text}``), so the text cannot disagree with the files
(``tests/test_viz_findings.py`` checks that the prose types none).

:func:`check_summary` reads the ``summary`` rows of ``distill_gain.json`` against the schema the
capstone's claim needs (issue 19): each row names its scenario, option, split, budget and the
loss terms it trains, its seeds, mean mAP and seed spread, its gain and share of the gap over
the student alone at its plateau (baseline a) and its gain over the student alone given the
same compute (baseline b). Rows of older runs lack the newer fields; the check reports which
instead of failing, and :func:`goal_status` says whether any complete row meets the goal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bevdistill.viz.results import load_benchmark

# The fields of a distill_gain summary row the claim is checked on, and what each must hold.
SUMMARY_FIELDS: dict[str, str] = {
    "scenario": "str", "option": "str", "split": "'val' or 'test'", "budget": "str",
    "terms": "list of loss keys, e.g. 'loss_kd.heatmap'", "seeds": "non-empty list of int",
    "mAP_mean": "number in [0, 1]", "seed_spread": "number >= 0 or null",
    "gain": "number", "gap_recovered": "number or null",
    "gain_vs_compute_matched": "number or null", "spread_vs_compute_matched": "number >= 0 or null",
}
HELD_OUT, PLATEAU = "test", "plateau"
# The fair baselines of the claim, as the benchmark names their options: (b) the student alone
# given the distilled run's compute, (c) the teacher's boxes as pseudo-labels.
COMPUTE_MATCHED, PSEUDO_LABEL = "baseline_compute_matched", "pseudo_label"
TAUGHT = "combined"  # the option that trains the step-5 loss (spatial InfoNCE + AT + heatmap KD)
# Where the taught loss's runs are, newest protocol first: the later runs land in distill_gain.
TAUGHT_SOURCES = ("distill_gain", "distill_gain_scratch")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one present field, or None."""
    if name in ("scenario", "option", "budget"):
        ok = isinstance(value, str) and bool(value)
    elif name == "split":
        ok = value in ("val", HELD_OUT)
    elif name == "terms":
        ok = isinstance(value, list) and all(
            isinstance(t, str) and t.startswith("loss_") and "." in t for t in value)
    elif name == "seeds":
        ok = isinstance(value, list) and bool(value) and all(
            isinstance(s, int) and not isinstance(s, bool) for s in value)
    elif name == "mAP_mean":
        ok = _is_number(value) and 0.0 <= value <= 1.0
    elif name in ("seed_spread", "spread_vs_compute_matched"):
        ok = value is None or (_is_number(value) and value >= 0)
    elif name == "gain":
        ok = _is_number(value)
    else:  # gap_recovered, gain_vs_compute_matched
        ok = value is None or _is_number(value)
    return None if ok else f"{name}={value!r} (expected {SUMMARY_FIELDS[name]})"


@dataclass
class SchemaReport:
    """What :func:`check_summary` found: rows read, fields missing (field -> rows lacking it),
    wrong values (one line each) and the rows that hold every field."""

    rows: int
    missing: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    complete: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No wrong value (missing fields are tolerated: older runs predate them)."""
        return not self.wrong

    def markdown(self) -> str:
        lines = [f"{self.rows} summary rows read; {len(self.complete)} hold every field of the "
                 "schema."]
        if self.missing:
            lines.append("Fields still missing (they come with the next benchmark): " + ", ".join(
                f"`{name}` ({n} rows)" for name, n in self.missing.items()) + ".")
        lines += [f"Wrong value: {w}" for w in self.wrong]
        return "\n\n".join(lines)


def check_summary(result: str | Mapping[str, Any] = "distill_gain",
                  strict: bool = False) -> SchemaReport:
    """Check the ``summary`` rows of a distill_gain result against :data:`SUMMARY_FIELDS`.

    Missing fields are reported (``SchemaReport.missing``), wrong values too; ``strict``
    raises ``ValueError`` on either, for a file that must be complete (the later runs)."""
    data = load_benchmark(result) if isinstance(result, str) else result
    rows = data.get("summary") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        raise ValueError("a distill_gain result has a 'summary' list of rows; this one has "
                         "none: rerun python -m benchmarks.distill_gain")
    report = SchemaReport(rows=len(rows))
    for i, row in enumerate(rows):
        absent = [name for name in SUMMARY_FIELDS if name not in row]
        for name in absent:
            report.missing[name] = report.missing.get(name, 0) + 1
        wrong = [p for name in SUMMARY_FIELDS if name in row
                 and (p := _field_problem(name, row[name])) is not None]
        report.wrong += [f"row {i} ({row.get('scenario')}, {row.get('option')}): {p}"
                         for p in wrong]
        if not absent and not wrong:
            report.complete.append(row)
    if strict and (report.missing or report.wrong):
        raise ValueError("distill_gain summary does not follow the schema:\n" + report.markdown())
    return report


def goal_status(result: str | Mapping[str, Any] = "distill_gain") -> str:
    """Whether a held-out plateau row of the taught loss meets the goal: at least the file's
    ``goal.gap_recovered_at_least`` of the gap, a gain above twice the seed spread over the
    student alone at its plateau and over the student alone given the same compute. A spread
    needs two seeds at least: a one-seed row (spread 0) meets nothing."""
    data = load_benchmark(result) if isinstance(result, str) else result
    share = data.get("goal", {}).get("gap_recovered_at_least", 0.5)
    rows = [r for r in check_summary(data).complete  # the taught loss, alone or on top of (c)
            if r["split"] == HELD_OUT and r["budget"] == PLATEAU
            and (r["option"] == TAUGHT or r["option"].startswith(f"{TAUGHT}_"))]
    if not rows:
        return (f"Not measured yet: no held-out row with both arms at their plateau holds every "
                f"field the goal is checked on (at least {share:.0%} of the gap, a gain above "
                "twice the seed spread over the student alone and over the compute-matched one).")
    met = [r for r in rows if len(r["seeds"]) >= 2 and (r["gap_recovered"] or 0) >= share
           and r["gain"] > 2 * (r["seed_spread"] or 0)
           and (r["gain_vs_compute_matched"] or 0) > 2 * (r["spread_vs_compute_matched"] or 0)]
    if met:
        return "Met by: " + ", ".join(f"{r['option']} ({r['scenario']}, {r['gap_recovered']:.0%} "
                                      "of the gap)" for r in met) + "."
    best = max(rows, key=lambda r: r["gap_recovered"] or 0)
    return (f"Not met: the best held-out plateau row, {best['option']} ({best['scenario']}), "
            f"recovers {best['gap_recovered'] or 0:.0%} of the gap.")


def baselines_measured(result: str | Mapping[str, Any] = "distill_gain") -> dict[str, bool]:
    """Which fair baselines the file holds rows of: the compute-matched student alone and the
    teacher's pseudo-labels (both come with the next benchmark where absent)."""
    data = load_benchmark(result) if isinstance(result, str) else result
    options = {r.get("option") for r in data.get("summary", [])}
    return {"compute-matched": COMPUTE_MATCHED in options or any(
        "gain_vs_compute_matched" in r for r in data.get("summary", [])),
            "pseudo-label": PSEUDO_LABEL in options}


# --- the numbers of the Results chapter --------------------------------------------------------


def taught_loss_source(scenario: str = "two_sensor") -> str:
    """The result file that holds the taught loss's runs in ``scenario``: the first of
    :data:`TAUGHT_SOURCES` with a summary row of it (so the later runs take over when they land)."""
    for name in TAUGHT_SOURCES:
        data = load_benchmark(name)
        if any(r["scenario"] == scenario and r["option"] == TAUGHT for r in data["summary"]):
            return name
    raise KeyError(f"no result file of {TAUGHT_SOURCES} has a {TAUGHT!r} row in {scenario!r}: "
                   "run python -m benchmarks.distill_gain --options combined")


def compared_options(result: str | Mapping[str, Any], scenario: str = "two_sensor") -> list[str]:
    """The runs to draw beside the taught loss: the student alone, the taught loss, and the fair
    baselines (compute-matched student alone, pseudo-labels) where the file has their curves."""
    data = load_benchmark(result) if isinstance(result, str) else result
    curves = data["curves"][scenario]
    return [o for o in ("baseline", TAUGHT, COMPUTE_MATCHED, PSEUDO_LABEL) if o in curves]


def summary_row(result: str | Mapping[str, Any], scenario: str, option: str, budget: str,
                split: str = HELD_OUT) -> dict:
    """The one summary row of (scenario, option, budget, split), or a KeyError naming what
    the file has."""
    data = load_benchmark(result) if isinstance(result, str) else result
    rows = [r for r in data["summary"] if r["scenario"] == scenario and r["option"] == option
            and r["budget"] == budget and r["split"] == split]
    if len(rows) != 1:
        have = sorted({(r["option"], r["budget"]) for r in data["summary"]
                       if r["scenario"] == scenario and r["split"] == split})
        raise KeyError(f"{len(rows)} rows for {scenario}/{option}/{budget}/{split}; the file "
                       f"has {have}")
    return rows[0]


def _row_numbers(prefix: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_map": row["mAP_mean"], f"{prefix}_gain": row["gain"],
            f"{prefix}_rec": row["gap_recovered"], f"{prefix}_spread": row["seed_spread"] or 0.0,
            f"{prefix}_seeds": len(row["seeds"])}


def results_numbers() -> dict[str, Any]:
    """Every number the Results chapter's prose states, by name, from the result files."""
    taught, main = load_benchmark(taught_loss_source()), load_benchmark("distill_gain")
    schedule = load_benchmark("teacher_schedule")
    ts = taught["scenarios"]["two_sensor"]
    numbers: dict[str, Any] = {
        "goal_share": main["goal"]["gap_recovered_at_least"],
        "iters": ts["budget"]["iters"], "equal_iters": ts["budget"]["equal_iters"],
        "teacher_map": ts["teacher"][HELD_OUT]["mAP"],
        **_row_numbers("taught_equal", summary_row(taught, "two_sensor", TAUGHT, "equal")),
        **_row_numbers("taught_end", summary_row(taught, "two_sensor", TAUGHT, "converged")),
        **_row_numbers("alone_end", summary_row(taught, "two_sensor", "baseline", "converged")),
    }
    best = main["scenarios"]["two_sensor"]["best_option"]
    numbers.update(_row_numbers("best_end", summary_row(main, "two_sensor", best, "converged")))
    numbers.update(_row_numbers("head_start_end", summary_row(main, "two_sensor", "teacher_init",
                                                              "converged")))
    long_alone = summary_row(main, "two_sensor", "baseline", "teacher")
    numbers.update(long_alone_iters=long_alone["iters"], long_alone_map=long_alone["mAP_mean"])
    comp = main["scenarios"]["compression"]["best_option"]
    numbers.update(_row_numbers("compression_end", summary_row(main, "compression", comp,
                                                               "converged")))
    few = main["scenarios"]["few_labels"]["options"]
    every_seed = next(o for o, d in few.items() if o != "baseline"
                      and d["seeds"] == few["baseline"]["seeds"])
    numbers.update(_row_numbers("few_labels_end", summary_row(main, "few_labels", every_seed,
                                                              "converged")))
    numbers.update({f"fair_{k}": v for k, v in fair_numbers(main).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    longer = {r["scenario"]: r for r in schedule["summary"] if r["teacher"] == "longer"}
    numbers.update(teacher_longer_gain_two_sensor=longer["two_sensor"]["gain_over_retrained"],
                   teacher_longer_gain_compression=longer["compression"]["gain_over_retrained"],
                   teacher_longer_factor=schedule["factor"])
    return numbers


def glue_numbers(numbers: Mapping[str, Any] | None = None) -> Sequence[str]:
    """Glue :func:`results_numbers` into the page being built (MyST-NB), for ``{glue:text}``
    roles in its prose; returns the names glued."""
    from myst_nb import glue

    numbers = results_numbers() if numbers is None else numbers
    for name, value in numbers.items():
        glue(name, value, display=False)
    return list(numbers)


def taught_loss_markdown(numbers: Mapping[str, Any] | None = None,
                         result: str | Mapping[str, Any] = "distill_gain") -> str:
    """What the benchmark measured of the taught loss, in words, with every figure read from
    the result files (notebook 6 shows it under the shipped curves)."""
    n = results_numbers() if numbers is None else numbers
    missing = [name for name, done in baselines_measured(result).items() if not done]
    text = (
        f"Measured (`benchmarks/results/{taught_loss_source()}.json`, two-sensor scenario, "
        f"{n['taught_end_seeds']} seeds, held-out split): after {n['equal_iters']} iterations "
        f"the taught loss leads the student alone by {n['taught_equal_gain']:+.3f} mAP "
        f"({n['taught_equal_rec']:.0%} of the teacher-student gap); at the end of the "
        f"{n['iters']}-iteration schedule by {n['taught_end_gain']:+.3f}, inside the seed spread "
        f"of {n['taught_end_spread']:.3f}. It makes the student learn faster; the student alone "
        "then catches up.")
    described = {"compute-matched": "the student alone given the same compute",
                 "pseudo-label": "the teacher's boxes as pseudo-labels"}
    if missing:
        text += (" Not in the result files yet, so not drawn: " + " and ".join(
            described[m] for m in missing) + "; they come with the next benchmark.")
    return text


# --- the fair comparison (issue 19's protocol) ----------------------------------------------------

FAIR_SCENARIO = "scarce_labels"  # the scenario chapter 6 and the Results chapter lead with
FUSION_SCENARIO = "fusion_to_lidar"  # BEVFusion's setting: camera + LiDAR teacher, LiDAR student
TAUGHT_PSEUDO = f"{TAUGHT}_{PSEUDO_LABEL}"  # the taught loss on top of the pseudo-labels


def _paired_mean(row: Mapping[str, Any], ref: Mapping[str, Any]) -> tuple[float, float]:
    """(mean, std) of the per-seed mAP differences of two rows of the same seeds."""
    if row["seeds"] != ref["seeds"]:
        raise ValueError(f"{row['option']} and {ref['option']} were run on different seeds "
                         f"({row['seeds']} and {ref['seeds']}): no paired difference")
    diffs = [a - b for a, b in zip(row["mAP_per_seed"], ref["mAP_per_seed"], strict=True)]
    mean = sum(diffs) / len(diffs)
    std = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 if len(diffs) > 1 else 0.0
    return mean, std


def fair_numbers(result: str | Mapping[str, Any] = "distill_gain",
                 scenario: str = FAIR_SCENARIO, split: str = HELD_OUT) -> dict[str, Any]:
    """The fair comparison of ``scenario`` in numbers, by name: the teacher, the student alone
    at its plateau (a), given the taught loss's compute (b), on the teacher's pseudo-labels (c),
    the taught loss alone and on top of (c); gains are paired over the same seeds."""
    data = load_benchmark(result) if isinstance(result, str) else result
    info = data["scenarios"][scenario]
    if info.get("protocol") != "fair":
        raise KeyError(f"scenario {scenario!r} was not run under the fair protocol: run python -m "
                       f"benchmarks.distill_gain --scenario {scenario} --protocol fair")

    def row(option: str, budget: str = PLATEAU) -> dict:
        return summary_row(data, scenario, option, budget, split)

    alone, taught = row("baseline"), row(TAUGHT)
    n: dict[str, Any] = {
        "labelled": info["labelled"], "seeds": len(taught["seeds"]),
        "train_samples": info["budget"]["train_samples"],
        "teacher_map": taught["teacher_mAP"], "alone_map": alone["mAP_mean"],
        "alone_iters": alone["iters"], "alone_spread": alone["mAP_std"],
        "taught_map": taught["mAP_mean"], "taught_iters": taught["iters"],
        "taught_gain": taught["gain"], "taught_spread": taught["seed_spread"],
        "taught_rec": taught["gap_recovered"],
        "taught_gain_cm": taught["gain_vs_compute_matched"],
        "taught_spread_cm": taught["spread_vs_compute_matched"],
        "plateau_all": all(v["met"] for v in info["plateau"].values()),
        "not_at_plateau": sorted(o for o, v in info["plateau"].items() if not v["met"]),
    }
    matched = row(COMPUTE_MATCHED, "compute_matched")
    n.update(cm_map=matched["mAP_mean"], cm_iters=matched["iters"],
             cm_ratio=info["compute_matched"]["ratio"])
    options = {r["option"] for r in data["summary"] if r["scenario"] == scenario}
    if PSEUDO_LABEL in options:
        pseudo = row(PSEUDO_LABEL)
        n.update(pl_map=pseudo["mAP_mean"], pl_gain=pseudo["gain"],
                 pl_rec=pseudo["gap_recovered"])
        n["taught_vs_pl"], n["taught_vs_pl_spread"] = _paired_mean(taught, pseudo)
        if TAUGHT_PSEUDO in options:
            both = row(TAUGHT_PSEUDO)
            n.update(both_map=both["mAP_mean"], both_rec=both["gap_recovered"])
            n["both_vs_pl"], n["both_vs_pl_spread"] = _paired_mean(both, pseudo)
    return n


def fair_markdown(result: str | Mapping[str, Any] = "distill_gain",
                  scenario: str = FAIR_SCENARIO) -> str:
    """The fair comparison in words, every figure read from the result file."""
    n = fair_numbers(result, scenario)
    labelled = n["labelled"] is not None
    text = (
        f"Held-out split, {n['seeds']} seeds, each arm trained until its tuning curve stopped "
        f"rising or to the longest schedule allowed "
        f"(`benchmarks/results/distill_gain.json`, scenario `{scenario}`): the teacher scores "
        f"{n['teacher_map']:.3f} mAP, the student alone"
        + (f" on its {n['labelled']} labelled scenes " if labelled else " ")
        + f"{n['alone_map']:.3f}. The taught loss"
        + (f", reading the other {n['train_samples'] - n['labelled']} scans without labels,"
           if labelled else "")
        + f" scores {n['taught_map']:.3f}: {n['taught_gain']:+.3f} over the student alone "
        f"(seed spread {n['taught_spread']:.3f}), {n['taught_rec']:.0%} of the teacher-student "
        f"gap, and "
        f"{n['taught_gain_cm']:+.3f} over the student alone given the same compute "
        f"({n['cm_iters']} iterations, spread {n['taught_spread_cm']:.3f}).")
    if "pl_map" in n:
        text += (
            f" The practitioner's alternative, the teacher's boxes as pseudo-labels, scores "
            f"{n['pl_map']:.3f}; the taught loss is {n['taught_vs_pl']:+.3f} from it (paired "
            f"over seeds, spread {n['taught_vs_pl_spread']:.3f})")
        text += (f"; added on top of the pseudo-labels it moves them by {n['both_vs_pl']:+.3f} "
                 f"(spread {n['both_vs_pl_spread']:.3f})." if "both_vs_pl" in n else ".")
    if not n["plateau_all"]:
        text += (" Not every arm reached its plateau within the longest schedule allowed: "
                 + ", ".join(f"`{o}`" for o in n["not_at_plateau"]) + " still rose.")
    return text + " " + goal_status(result)


def _versus(gain: float, spread: float) -> str:
    """A gain in words, against twice its seed spread."""
    if gain > 2 * spread:
        return f"ahead by {gain:+.3f}, more than twice the seed spread ({spread:.3f})"
    if gain < -2 * spread:
        return f"behind by {gain:+.3f}, more than twice the seed spread ({spread:.3f})"
    return f"{gain:+.3f}, within twice the seed spread ({spread:.3f})"


def _plateau_words(n: Mapping[str, Any]) -> str:
    if n["plateau_all"]:
        return "every arm at its plateau"
    return ("every arm trained until its tuning curve stopped rising, except "
            + ", ".join(f"`{o}`" for o in n["not_at_plateau"]) + ", stopped at the longest "
            "schedule allowed while still rising")


def fair_takeaway(result: str | Mapping[str, Any] = "distill_gain",
                  scenario: str = FAIR_SCENARIO) -> str:
    """The lesson's claim as measured, in under 150 words, every figure from the result file:
    the share of the gap the taught loss recovers and where it stands against each baseline."""
    n = fair_numbers(result, scenario)
    text = (
        f"**The takeaway.** Where the teacher knows what the student can learn (a student with "
        f"{n['labelled']} labelled scenes and {n['train_samples'] - n['labelled']} unlabelled "
        f"scans; a teacher of the same network trained on every label), the loss built in steps "
        f"3 to 5 recovers **{n['taught_rec']:.0%}** of the teacher-student gap on the held-out "
        f"split, {n['seeds']} seeds, {_plateau_words(n)}. Against the student alone at its "
        f"plateau it is {_versus(n['taught_gain'], n['taught_spread'])}; against the student "
        f"alone given the same compute, {_versus(n['taught_gain_cm'], n['taught_spread_cm'])}.")
    if "taught_vs_pl" in n:
        text += (f" Against the teacher's boxes used as labels it is "
                 f"{_versus(n['taught_vs_pl'], n['taught_vs_pl_spread'])}")
        text += (f"; on top of them, {_versus(n['both_vs_pl'], n['both_vs_pl_spread'])}."
                 if "both_vs_pl" in n else ".")
    return text
