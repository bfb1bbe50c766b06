"""Was the teacher trained long enough? The shipped teacher against the same recipe trained longer.

A teacher is the ceiling of what it can teach, so a teacher stopped short of its plateau makes
every gap in ``distill_gain`` smaller than it should be. The schedules are cosine, so every
curve flattens at its own end: that shows nothing. What shows it is a schedule ``--factor``
times as long (default 2), everything else as on the shipped teacher's card (experiment, seed,
cfg-options, read from ``bevdistill/assets/<teacher>_card.json``): if it scores clearly higher on
the held-out split, the shipped teacher was short of its plateau. The card's own schedule is
trained again at this commit too, so the two schedules compare at one commit, and the shipped
weights against their retrained twin say whether the code moved since they were made.

Each longer run validates on the tuning split (``val``, the scenes ``distill_gain`` chooses on)
every ``--eval-interval`` iterations; the shipped teacher and the longer one are both scored on
the held-out split (``test``, the 300 scenes ``distill_gain`` reports on). Runs are traced and
reused as in ``distill_gain`` (:mod:`benchmarks.runs`): same commit and command, or run again.

    .venv/bin/python -m benchmarks.teacher_schedule --scenario two_sensor compression --parallel 2

Writes ``benchmarks/results/teacher_schedule.json``: ``summary`` (one row per scenario and
teacher), ``runs`` and ``curves``. A longer teacher is shipped from its run dir with
``python -m benchmarks.ship WORK_ROOT/<scenario>/teacher_it<iters> --name <teacher>_long``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.distill_gain import PRESETS, SCENARIOS, test_command
from benchmarks.provenance import REPO_ROOT, RESULTS_DIR, provenance, shown_path
from benchmarks.runs import RunSpec, read_scores, run_all, run_env, scalars_history
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.report import write_json

MODULE = "benchmarks.teacher_schedule"
# Keys of the card's command that this benchmark sets itself: where the data is cached and which
# scenes are validated (the tuning split of distill_gain), and how often.
OWN_KEYS = ("val_dataset.", "schedule.val_interval", "schedule.checkpoint_interval",
            "schedule.max_keep_ckpts", "schedule.log_interval", "train_dataset.cache_dir",
            "data.val_batch_size", "data.num_workers", "seed")

# Seconds per training iteration of each teacher on one thread of this machine (measured here:
# 60 iterations each, both at once); only orders the runs.
SECONDS_PER_ITER = {"two_sensor": 0.42, "compression": 1.03}


def card_recipe(teacher_ckpt: Path) -> dict[str, Any]:
    """The shipped teacher's experiment, iterations, seed and training ``--cfg-options``, from
    its card (the command that made it)."""
    card_path = teacher_ckpt.with_name(teacher_ckpt.stem + "_card.json")
    if not card_path.is_file():
        raise SystemExit(f"no card at {card_path}: the teacher's recipe is read from its card")
    card = json.loads(card_path.read_text())
    words = shlex.split(card["command"])
    overrides: dict[str, str] = {}
    if "--cfg-options" in words:
        for word in words[words.index("--cfg-options") + 1:]:
            if word.startswith("--"):
                break
            key, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"{card_path}: cfg-option {word!r} is not key=value")
            overrides[key] = value
    return {"experiment": card["experiment"], "iters": int(card["iters"]),
            "seed": int(card.get("seed", 0)), "commit": card.get("commit"),
            "overrides": {k: v for k, v in overrides.items() if not k.startswith(OWN_KEYS)}}


def train_command(recipe: dict, iters: int, preset: dict, eval_interval: int, work_dir: Path,
                  cache_dir: Path) -> list[str]:
    """The shipped teacher's command with ``iters`` iterations and the tuning-split curve."""
    args = {**recipe["overrides"], "seed": recipe["seed"],
            "train_dataset.cache_dir": str(cache_dir),
            "val_dataset.split": "val", "val_dataset.num_samples": preset["tune_samples"],
            "val_dataset.cache_dir": str(cache_dir), "data.val_batch_size": preset["batch_size"],
            "data.num_workers": 0, "schedule.val_interval": eval_interval,
            "schedule.checkpoint_interval": eval_interval, "schedule.max_keep_ckpts": 2,
            "schedule.log_interval": 50}
    return [sys.executable, "-m", "bevdistill", "train", "teacher", recipe["experiment"],
            "--work-dir", str(work_dir), "--max-iters", str(iters),
            "--cfg-options", *[f"{k}={v}" for k, v in args.items()]]


def summary_row(scenario: str, teacher: str, iters: int, scores: dict, shorter: dict | None
                ) -> dict[str, Any]:
    """One teacher's held-out scores; ``shorter``: the card's schedule retrained at this commit,
    which the longer schedule is measured against."""
    row = {"scenario": scenario, "teacher": teacher, "iters": iters, "split": "test",
           "mAP": scores["mAP"], **{f"AP_{c}": scores[f"AP_{c}"] for c in CLASS_NAMES}}
    if shorter is not None:
        row["gain_over_retrained"] = scores["mAP"] - shorter["mAP"]
    return row


def markdown(rows: list[dict]) -> str:
    head = ["scenario", "teacher", "iterations", "held-out mAP", *[f"AP {c}" for c in CLASS_NAMES],
            "vs retrained"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        gain = r.get("gain_over_retrained")
        lines.append("| " + " | ".join([
            r["scenario"], r["teacher"], str(r["iters"]), f"{r['mAP']:.3f}",
            *[f"{r[f'AP_{c}']:.3f}" for c in CLASS_NAMES],
            "-" if gain is None else f"{gain:+.3f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", nargs="+", choices=("two_sensor", "compression"),
                        default=["two_sensor", "compression"])
    parser.add_argument("--factor", type=float, default=2.0,
                        help="the longer schedule, in multiples of the shipped teacher's")
    parser.add_argument("--eval-interval", type=int, default=500,
                        help="iterations between tuning-split validations of the longer run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--work-root", type=Path, default=REPO_ROOT / "work_dirs" /
                        "teacher_schedule", help="runs' work dirs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "teacher_schedule.json")
    args = parser.parse_args(argv)
    if args.factor <= 1:
        parser.error(f"--factor must be above 1 (a longer schedule), got {args.factor}")

    preset = {**PRESETS["cpu"], "threads": args.threads}
    work_root = args.work_root.resolve()
    cache_dir = work_root.parent / "scan_cache"
    record = provenance(MODULE, argv)
    started = time.time()

    def teacher_dir(name: str, iters: int) -> Path:
        return work_root / name / f"teacher_it{iters}"

    specs, plan = [], {}
    for name in args.scenario:
        ckpt = Path(SCENARIOS[name]["teacher_ckpt"])
        recipe = card_recipe(ckpt)
        schedules = {"retrained": recipe["iters"], "longer": int(round(recipe["iters"] *
                                                                        args.factor))}
        for iters in schedules.values():
            if iters % args.eval_interval:
                raise SystemExit(f"{name}: {iters} iterations is not a multiple of "
                                 f"--eval-interval {args.eval_interval}; choose one that "
                                 "divides it")
        plan[name] = (ckpt, recipe, schedules)
    # the longest runs first, so that no long run ends alone
    trainings = [(n, t, i) for n, (_, _, sch) in plan.items() for t, i in sch.items()]
    for name, teacher, iters in sorted(trainings, key=lambda r: -r[2] * SECONDS_PER_ITER[r[0]]):
        run_dir = teacher_dir(name, iters)
        specs.append(RunSpec(f"{name}/{teacher}", train_command(
            plan[name][1], iters, preset, args.eval_interval, run_dir, cache_dir), run_dir))
    for name, (ckpt, recipe, schedules) in plan.items():  # scoring after every training
        specs.append(RunSpec(f"{name}/shipped/test", test_command(
            recipe["experiment"], preset, ckpt, work_root / name / "shipped_test", cache_dir),
            work_root / name / "shipped_test"))
        for teacher, iters in schedules.items():
            run_dir = teacher_dir(name, iters)
            specs.append(RunSpec(f"{name}/{teacher}/test", test_command(
                recipe["experiment"], preset, run_dir / f"iter_{iters}.pth", run_dir / "test",
                cache_dir), run_dir / "test", after=f"{name}/{teacher}"))
    runs = run_all(specs, parallel=args.parallel, env=run_env(preset), cwd=REPO_ROOT)

    rows, curves, scenarios = [], {}, {}
    for name, (ckpt, recipe, schedules) in plan.items():
        shipped = read_scores(work_root / name / "shipped_test" / "metrics.json")
        scores = {t: read_scores(teacher_dir(name, i) / "test" / "metrics.json")
                  for t, i in schedules.items()}
        rows += [summary_row(name, "shipped", recipe["iters"], shipped, None),
                 summary_row(name, "retrained", schedules["retrained"], scores["retrained"], None),
                 summary_row(name, "longer", schedules["longer"], scores["longer"],
                             scores["retrained"])]
        curves[name] = {t: scalars_history(teacher_dir(name, i)) for t, i in schedules.items()}
        scenarios[name] = {"teacher_ckpt": shown_path(str(ckpt)), "shipped_commit": recipe["commit"],
                           "experiment": recipe["experiment"], "seed": recipe["seed"],
                           "recipe_overrides": recipe["overrides"], "schedules": schedules}
    table = markdown(rows)
    result = {"benchmark": "teacher_schedule", **record, "factor": args.factor,
              "split": "test", "test_samples": preset["test_samples"],
              "tune_samples": preset["tune_samples"], "scenarios": scenarios, "summary": rows,
              "runs": runs, "curves": curves, "wall_s": round(time.time() - started, 1),
              "markdown": table}
    write_json(args.out, result)
    print(table)
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main()
