"""Where does a distilled student gain? Per distance, class and points in the box (issue 22).

``distill_gain`` reports mAP and AP per class; this reads the same runs again and asks which
objects the distilled student finds that the student alone misses. For each held-out scoring
run of a scenario in ``benchmarks/results/distill_gain.json`` (``--options``; default the
student alone at its plateau, the student alone given the taught loss's compute and the taught
loss), the final checkpoint is loaded in process (a distillation checkpoint by its ``student.*``
weights, into the scenario's student network) and run on the scenes its evaluate run scored.
Its predictions must give the mAP that run wrote (else the breakdown would describe another
model or other scenes, and the script stops). Objects found (same class, centre within 2 m,
score >= 0.3) are broken down per class, per distance from the ego and per number of points of
the student's scan inside the box, as in ``benchmarks/fusion_teacher.py``; ``difference`` holds
each option minus the student alone, paired by seed, per bin.

    .venv/bin/python -m benchmarks.distill_breakdown --scenario fusion_to_lidar

The runs must still be on disk where the result file's commands put them; the file written
(``benchmarks/results/distill_breakdown.json``, ``--out``) names the runs' commits beside its
own. Results of another scenario already in the file are kept.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path

from benchmarks import _fair_protocol as fair
from benchmarks.distill_gain import LEAD, SCENARIOS
from benchmarks.fusion_teacher import (
    DISTANCE_BINS,
    MAP_AGREEMENT,
    POINT_BINS,
    _shares,
    breakdown,
    test_dataset,
)
from benchmarks.provenance import RESULTS_DIR, provenance
from benchmarks.runs import read_scores
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.report import write_json

MODULE = "benchmarks.distill_breakdown"
DEFAULT_OPTIONS = ("baseline", fair.COMPUTE_MATCHED_OPTION, LEAD)
BREAKDOWNS = ("per_class", "found_by_distance", "found_by_points")


def evaluate_run(command: str) -> dict:
    """Experiment, checkpoint, work dir and scan cache of a ``bevdistill evaluate`` command."""
    argv = shlex.split(command)
    at = argv.index("evaluate")
    cfg = dict(a.split("=", 1) for a in argv[argv.index("--cfg-options") + 1:])
    return {"experiment": argv[at + 1], "checkpoint": Path(argv[at + 2]),
            "work_dir": Path(argv[argv.index("--work-dir") + 1]),
            "cache_dir": Path(cfg["val_dataset.cache_dir"])}


def scoring_runs(result: dict, scenario: str, options: list[str]) -> dict[str, dict[int, dict]]:
    """Per option and seed, the held-out evaluate run of the final checkpoint: its experiment,
    checkpoint, work dir, cache dir and commit, read from the result file's run records."""
    found: dict[str, dict[int, dict]] = {}
    for run in result["runs"]:
        name = run["name"].split("/")
        if run.get("scenario") != scenario or name[-1] != "test" or name[0] not in options:
            continue
        found.setdefault(name[0], {})[int(name[1].removeprefix("seed"))] = {
            **evaluate_run(run["command"]), "commit": run["commit"]}
    missing = [o for o in options if o not in found]
    if missing:
        raise SystemExit(f"no held-out scoring run of {missing} in scenario {scenario!r} of the "
                         f"result file (options there: {sorted(found)}): run "
                         f"python -m benchmarks.distill_gain --scenario {scenario} first")
    return found


def runs_in(folder: Path) -> dict[int, dict]:
    """Per seed, the held-out evaluate run kept in ``folder/seed<S>[_it<N>]/test`` (runs made
    outside the benchmark with its commands, e.g. an option given a longer schedule), read from
    each evaluate run's own record."""
    found: dict[int, dict] = {}
    for record_path in sorted(folder.glob("seed*/test/metrics.json")):
        record = json.loads(record_path.read_text())
        seed = int(record_path.parent.parent.name.removeprefix("seed").split("_")[0])
        found[seed] = {**evaluate_run(record["argv"]), "work_dir": record_path.parent,
                       "commit": record["commit"]}
    if not found:
        raise SystemExit(f"no held-out evaluate run under {folder} (seed<S>[_it<N>]/test/"
                         "metrics.json)")
    return found


def load_student(experiment: str, checkpoint: Path):
    """The scenario's student network with ``checkpoint``'s weights (a distillation
    checkpoint's ``student.*`` weights), in eval mode."""
    from bevdistill.engine.checkpoint import read_state_dict
    from bevdistill.engine.runner import load_experiment
    from bevdistill.export import STUDENT_PREFIX, student_state
    from bevdistill.models import build_detector

    model = build_detector(load_experiment(experiment).model.to_dict())
    state = read_state_dict(checkpoint, f"run checkpoint {checkpoint}")
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        state = student_state(state, str(checkpoint))
    model.load_state_dict(state, strict=True)
    return model.eval()


def found_per_run(student_experiment: str, budget: dict, runs: dict[str, dict[int, dict]]
                  ) -> dict[str, dict[int, dict]]:
    """:func:`~benchmarks.fusion_teacher.breakdown` of every run's checkpoint on the held-out
    scenes, after checking that its predictions reproduce the run's scored mAP."""
    from bevdistill.engine.metric import evaluate_detections, flatten_results
    from bevdistill.viz.gain import found_objects, ground_truth_objects, predict_scenes

    out: dict[str, dict[int, dict]] = {}
    caches = {run["cache_dir"] for seeds in runs.values() for run in seeds.values()}
    if len(caches) != 1:
        raise SystemExit(f"the runs scored scenes from several caches {sorted(map(str, caches))}")
    dataset = test_dataset(student_experiment, budget, caches.pop())
    objects = ground_truth_objects(dataset, len(dataset))
    for option, seeds in runs.items():
        for seed, run in sorted(seeds.items()):
            net = load_student(student_experiment, run["checkpoint"])
            preds, samples = predict_scenes(dataset, net, len(dataset), "points",
                                            budget["batch_size"])
            m_ap = flatten_results(evaluate_detections(preds, samples))["mAP"]
            scored = read_scores(run["work_dir"] / "metrics.json")["mAP"]
            if abs(m_ap - scored) > MAP_AGREEMENT:
                raise RuntimeError(
                    f"{option} seed {seed}: in process its predictions score mAP {m_ap:.4f} on "
                    f"the held-out scenes, its evaluate run wrote {scored:.4f}: the breakdown "
                    "would not describe the scored model")
            out.setdefault(option, {})[seed] = {"mAP": m_ap,
                                                **breakdown(objects, found_objects(preds, samples))}
    return out


def paired_bins(found: dict[int, dict], ref: dict[int, dict], key: str) -> dict[str, dict]:
    """Per bin of ``key``: the share found minus the reference's, paired by seed."""
    seeds = sorted(set(found) & set(ref))
    out = {}
    for b in found[seeds[0]][key]:
        diffs = [f / n - r / m for s in seeds
                 for (f, n), (r, m) in [(found[s][key][b], ref[s][key][b])] if n and m]
        out[b] = {"mean": statistics.fmean(diffs) if diffs else None,
                  "paired_std": statistics.stdev(diffs) if len(diffs) > 1 else None,
                  "per_seed": diffs}
    return out


def summarise(found: dict[str, dict[int, dict]]) -> tuple[list[dict], dict[str, dict]]:
    """Rows (one per option: shares found per bin, mean and std over seeds) and each option's
    paired difference from the student alone."""
    rows = [{"option": option, "seeds": sorted(per_seed),
             "mAP_mean": statistics.fmean(per_seed[s]["mAP"] for s in per_seed),
             "mAP_std": (statistics.stdev([per_seed[s]["mAP"] for s in per_seed])
                         if len(per_seed) > 1 else 0.0),
             **{key: _shares([per_seed[s][key] for s in sorted(per_seed)]) for key in BREAKDOWNS}}
            for option, per_seed in found.items()]
    diffs = {option: {key: paired_bins(per_seed, found["baseline"], key) for key in BREAKDOWNS}
             for option, per_seed in found.items() if option != "baseline"}
    return rows, diffs


def markdown(rows: list[dict], diffs: dict[str, dict]) -> str:
    """Shares found per distance and class, and each option's paired gain over the student
    alone with its spread."""
    def share(cell: dict) -> str:
        return "-" if cell["found_mean"] is None else f"{cell['found_mean']:.0%}"

    keys = [(k, b) for k in ("found_by_distance", "per_class", "found_by_points")
            for b in rows[0][k]]
    head = ["option", "mAP", *[b if k != "found_by_points" else f"{b} pts" for k, b in keys]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([r["option"], f"{r['mAP_mean']:.3f} ± {r['mAP_std']:.3f}",
                                 *[share(r[k][b]) for k, b in keys]]) + " |" for r in rows]
    for option, d in diffs.items():
        cells = [d[k][b] for k, b in keys]
        lines.append("| " + " | ".join([f"{option} - baseline", "", *[
            "-" if c["mean"] is None else f"{100 * c['mean']:+.1f} ± {100 * (c['paired_std'] or 0):.1f}"
            for c in cells]]) + " |")
    def counts(key: str, unit: str = "") -> str:
        return ", ".join(f"{b}{unit}: {c['objects']}" for b, c in rows[0][key].items())

    lines += ["", f"Share of held-out objects found (same class, centre within 2 m, score >= "
              f"0.3), mean over seeds; differences in points of percentage, mean ± paired std. "
              f"Objects per bin: {counts('found_by_distance')}; {counts('per_class')}; "
              f"{counts('found_by_points', ' pts')} (points of the student's scan in the box)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="fusion_to_lidar", choices=sorted(SCENARIOS))
    parser.add_argument("--options", nargs="+", default=list(DEFAULT_OPTIONS),
                        help="options of the scenario to break down (baseline is always one)")
    parser.add_argument("--also", nargs="+", default=[], metavar="NAME=FOLDER",
                        help="more runs of the scenario, made outside the benchmark: FOLDER "
                             "holds seed<S>[_it<N>]/test evaluate runs, shown as option NAME")
    parser.add_argument("--result", type=Path, default=RESULTS_DIR / "distill_gain.json")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "distill_breakdown.json")
    args = parser.parse_args(argv)
    options = list(dict.fromkeys(["baseline", *args.options]))
    record = provenance(MODULE, argv)
    started = time.time()
    if not args.result.is_file():
        raise SystemExit(f"no result file {args.result}: run python -m benchmarks.distill_gain "
                         f"--scenario {args.scenario} first, or pass --result FILE")
    result = json.loads(args.result.read_text())
    if args.scenario not in result.get("scenarios", {}):
        raise SystemExit(f"{args.result} holds no scenario {args.scenario!r} (it has "
                         f"{sorted(result.get('scenarios', {}))})")
    info = result["scenarios"][args.scenario]
    runs = scoring_runs(result, args.scenario, options)
    for also in args.also:
        name, sep, folder = also.partition("=")
        if not sep or not name or name in runs:
            raise SystemExit(f"--also {also!r}: give NAME=FOLDER with a NAME not among "
                             f"{sorted(runs)}")
        runs[name] = runs_in(Path(folder))
    found = found_per_run(SCENARIOS[args.scenario]["student"], info["budget"], runs)
    rows, diffs = summarise(found)
    table = markdown(rows, diffs)
    entry = {
        **record, "scenario": args.scenario, "what": info["what"], "source": str(args.result.name),
        "also": dict(a.partition("=")[::2] for a in args.also),
        "runs_commits": sorted({r["commit"] for seeds in runs.values() for r in seeds.values()}),
        "found_rule": "same class, BEV centre within 2 m, score >= 0.3",
        "bins": {"distance_m": list(DISTANCE_BINS), "points": list(POINT_BINS)},
        "classes": list(CLASS_NAMES), "summary": rows, "difference": diffs,
        "mAP_checked": {o: {str(s): v["mAP"] for s, v in per.items()} for o, per in found.items()},
        "wall_s": round(time.time() - started, 1), "markdown": table,
    }
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    scenarios = {**old.get("scenarios", {}), args.scenario: entry}
    out = {"benchmark": "distill_breakdown", **record, "scenarios": scenarios,
           "markdown": "\n\n".join(f"**{name}**\n\n{e['markdown']}"
                                   for name, e in sorted(scenarios.items()))}
    write_json(args.out, out)
    print(table)
    print(f"-> {args.out}")
    return out


if __name__ == "__main__":
    main()
