"""Does distillation help? Students trained alone and distilled, to the baseline's plateau.

The scenarios (``SCENARIOS``), among them:

* ``two_sensor``: the teacher *sees more*. Every scene is scanned by the deployed 16-beam LiDAR
  (the student's input) and by a 64-beam one (the teacher's); teacher and student are the same
  network, so what the teacher knows beyond the student comes from what it saw. This is the
  situation of BEVFusion-to-LiDAR and LiDAR-beam distillation.
* ``fusion_to_lidar``: the teacher fuses six cameras with the student's own 16-beam scan
  (``teacher_fusion``); the student reads the scan alone. What it can learn is what the images
  told the teacher about the scan's objects;
* ``compression``: a wide teacher on a fine grid, a narrow student on a coarse grid, one sensor.

Every run is the project's own command (``bevdistill train student ...`` or ``bevdistill distill
...`` with ``--cfg-options`` selecting the option, :mod:`benchmarks._distill_options`). Each run
validates on the TUNING split (``val``) every ``eval_interval`` iterations: those curves show
where the baseline plateaus and are what options are chosen on. The final numbers come from the
HELD-OUT split (``test``), never seen while choosing: the checkpoint at the end of the schedule
(budget ``converged``) and the one after ``equal_iters`` iterations (budget ``equal``, the short
budget earlier benchmarks used; same iterations for every option). The teacher is scored on the
same test scenes. ``gap_recovered = (distilled - baseline) / (teacher - baseline)`` (mAP).

``--protocol fair`` is issue 19's comparison, in one command::

    .venv/bin/python -m benchmarks.distill_gain --scenario few_labels --protocol fair \
        --preset gpu --seeds 0 1 2

* every option trains to its own plateau (budget ``plateau``): after its schedule, the last
  quarter of its tuning curve (mean over seeds) must rise less than the seed spread of its final
  tuning mAP (``--plateau-tolerance`` with one seed); if not, the schedule is doubled and the run
  resumes its checkpoint (the learning-rate schedule is rebuilt), up to ``--plateau-cap``. Each
  option's verdict is recorded (``plateau``);
* the lead option (``--lead``, the lab's own loss ``combined``: spatial InfoNCE + attention
  transfer + heatmap KD) is compared with the student alone at its plateau (baseline a:
  ``gain``, ``gap_recovered``), with the student alone given the same compute (baseline b,
  ``baseline_compute_matched``: the lead's iterations times the ratio of the seconds per
  iteration both logged in this invocation, the teacher's forward included; recorded under
  ``compute_matched``; ``gain_vs_compute_matched``), and, where the scenario has unlabelled scans
  (few_labels, or ``--labelled N``), with the student alone on the teacher's boxes as
  pseudo-labels (baseline c, ``pseudo_label``; made once per invocation by
  :mod:`benchmarks.pseudo_labels`) and the lead beside them (``combined_pseudo_label``);
* rows carry the loss keys each option trains (``terms``, from the built Distiller) and per
  class paired differences with their spread (``per_class``). Ablations (feature MSE, teacher
  initialisation, ...) are given with ``--ablation``.

Provenance: every run records the commit and whether the tree was clean, when it started, how
long it took, its full command, and whether this invocation reused it. A finished run is reused
only when its commit and command equal this invocation's; otherwise it is moved aside
(``<dir>.stale-<n>``, nothing deleted) and run again, so an aggregate never mixes commits.

    .venv/bin/python -m benchmarks.distill_gain --scenario two_sensor    # CPU, 2 runs at a time
    .venv/bin/python -m benchmarks.distill_gain --scenario two_sensor --preset gpu
    .venv/bin/python -m benchmarks.distill_gain --smoke --work-root /tmp/dg --out /tmp/dg.json

Writes ``benchmarks/results/distill_gain.json`` (``--out``): a top-level ``summary`` (one row per
scenario, option, budget and split), ``runs`` (one entry per training or evaluation run) and
``curves``. Results of another scenario already in the file are kept (each scenario's rows and
runs carry their own commits), so the two scenarios can be measured in separate sessions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _fair_protocol as fair
from benchmarks._distill_options import (
    OPTIONS,
    TRAINED_ALONE,
    as_the_cli_reads,
    cfg_option_args,
    option_overrides,
    parse_option,
)
from benchmarks.provenance import REPO_ROOT, RESULTS_DIR, provenance, shown_path
from benchmarks.pseudo_labels import FILE as PSEUDO_LABEL_FILE
from benchmarks.runs import (
    RunSpec,
    read_scores,
    run_all,
    run_env,
    scalars_history,
    step_seconds,
)
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.checkpoint import file_sha256
from bevdistill.engine.report import write_json

MODULE = "benchmarks.distill_gain"
LEAD = "combined"  # the lab's own loss: spatial InfoNCE + attention transfer + heatmap KD
FAIR_PSEUDO = ("pseudo_label", f"{LEAD}_pseudo_label")  # baseline c, and the lead beside it
ASSETS = REPO_ROOT / "bevdistill" / "assets"

SCENARIOS: dict[str, dict[str, Any]] = {
    "two_sensor": dict(student="train_student_16beam", distill="distill_64to16beam",
                       teacher="train_teacher_64beam", teacher_ckpt=ASSETS / "teacher_64beam.pth",
                       what="64-beam teacher -> 16-beam student, same network"),
    # Labels are scarce, scans are not: the student alone trains on the labelled scenes; the
    # distilled student also reads the unlabelled ones, where the teacher is all it learns from.
    "few_labels": dict(student="train_student_16beam", distill="distill_64to16beam",
                       teacher="train_teacher_64beam", teacher_ckpt=ASSETS / "teacher_64beam.pth",
                       labelled=200,
                       what="64-beam teacher -> 16-beam student, same network; 200 of the "
                            "training scenes labelled, the rest unlabelled"),
    # The gap is labels alone: the teacher is the student's own network on the student's own
    # sensor, trained on every labelled scene; the student has a few labelled scenes and the
    # rest as unlabelled scans. Its input holds every object the teacher finds.
    "scarce_labels": dict(student="train_student", distill="distill_scarce_labels",
                          teacher="train_teacher_all_labels",
                          teacher_ckpt=ASSETS / "teacher_all_labels.pth", labelled=16,
                          what="teacher = the student's network and sensor trained on all 2000 "
                               "labelled scenes -> student with 16 labelled scenes and the rest "
                               "unlabelled"),
    # BEVFusion's headline setting (issue 22): the teacher fuses six cameras with the student's
    # own 16-beam scan; the deployed student reads the scan alone. Every scene is labelled.
    "fusion_to_lidar": dict(student="train_student_16beam", distill="distill_fusion_to_16beam",
                            teacher="train_fusion_16beam",
                            teacher_ckpt=ASSETS / "teacher_fusion.pth",
                            what="camera + 16-beam LiDAR fusion teacher -> 16-beam LiDAR-only "
                                 "student, the same network minus the camera branch"),
    "compression": dict(student="train_student", distill="distill", teacher="train_teacher",
                        teacher_ckpt=ASSETS / "teacher.pth",
                        what="wide 0.25 m teacher -> narrow 0.5 m student, same sensor"),
    "smoke": dict(student="train_student_ci", distill="distill_ci", teacher="train_teacher_ci",
                  teacher_ckpt=None, what="tiny CI models"),
}

PRESETS: dict[str, dict[str, Any]] = {
    # 2 single-threaded runs at a time on a 2-core machine
    "cpu": dict(iters=2000, equal_iters=500, eval_interval=500, batch_size=4, train_samples=2000,
                tune_samples=150, test_samples=300, seeds=(0, 1, 2), parallel=2, threads=1,
                device="cpu", options=("baseline", "mse_kd"), ablation=("combined",)),
    # the same comparison at a larger budget on one CUDA device
    "gpu": dict(iters=6000, equal_iters=1500, eval_interval=1000, batch_size=8,
                train_samples=8000, tune_samples=500, test_samples=1000, seeds=(0, 1, 2),
                parallel=1, threads=None, device="cuda",
                options=("baseline", "mse_kd", "combined"),
                ablation=("heatmap_kd", "feature_mse", "spatial_infonce", "at_l2")),
    # tiny CI models: checks the script end to end in seconds
    "smoke": dict(iters=4, equal_iters=2, eval_interval=2, batch_size=2, train_samples=4,
                  tune_samples=2, test_samples=2, seeds=(0,), parallel=1, threads=1,
                  device="cpu", options=("baseline", "heatmap_kd")),
}


# --- commands --------------------------------------------------------------------------------


def _data_args(preset: dict, cache_dir: Path, split: str, num: int) -> dict[str, Any]:
    return {"val_dataset.split": split, "val_dataset.num_samples": num,
            "val_dataset.cache_dir": str(cache_dir), "data.val_batch_size": preset["batch_size"],
            "data.num_workers": 0}


def train_command(scenario: dict, preset: dict, option: str, seed: int, work_dir: Path,
                  cache_dir: Path, teacher_ckpt: str | None, pseudo_labels: str | None = None,
                  resume: bool = False) -> list[str]:
    """The bevdistill command line of one (option, seed) training run (``resume``: continue
    the checkpoint in ``work_dir`` to the preset's, longer, ``iters``)."""
    overrides = option_overrides(option, teacher_ckpt, pseudo_labels)
    pseudo = parse_option(option).labels == "pseudo"
    args = {
        "seed": seed,
        "train_dataset.num_samples": preset["train_samples"],
        "train_dataset.cache_dir": str(cache_dir),
        **_data_args(preset, cache_dir, "val", preset["tune_samples"]),
        "data.batch_size": preset["batch_size"],
        "schedule.val_interval": preset["eval_interval"],
        "schedule.checkpoint_interval": preset["equal_iters"],
        "schedule.max_keep_ckpts": -1,  # the equal-budget checkpoint is scored at the end
        "schedule.log_interval": max(1, min(50, preset["iters"])),
    }
    labelled = scenario.get("labelled")
    if pseudo and labelled is None:
        raise ValueError(f"option {option!r} labels the unlabelled scans with the teacher's "
                         "boxes: it needs a scenario with unlabelled scans (few_labels, or "
                         "--labelled N)")
    if option in TRAINED_ALONE:
        head = ["train", "student", scenario["student"]]
        if pseudo:  # every scan, the unlabelled ones with the teacher's boxes
            args["train_dataset.labelled_samples"] = labelled
        elif labelled is not None:  # alone, a student can only learn from labelled scenes
            args["train_dataset.num_samples"] = labelled
    else:
        head = ["distill", scenario["distill"]]
        if labelled is not None:
            args["train_dataset.labelled_samples"] = labelled
        if teacher_ckpt is not None:
            args["model.teacher_ckpt"] = teacher_ckpt
    args.update(overrides)
    return [sys.executable, "-m", "bevdistill", *head, "--work-dir", str(work_dir),
            "--max-iters", str(preset["iters"]), *["--resume"] * resume,
            "--cfg-options", *cfg_option_args(args)]


def test_command(experiment: str, preset: dict, checkpoint: Path, work_dir: Path,
                 cache_dir: Path, model_args: dict[str, Any] | None = None) -> list[str]:
    """Score ``checkpoint`` on the held-out test split (``model_args``: the overrides it was
    trained with, so that the checkpoint fits the model built)."""
    args = {**(model_args or {}), **_data_args(preset, cache_dir, "test", preset["test_samples"])}
    return [sys.executable, "-m", "bevdistill", "evaluate", experiment, str(checkpoint),
            "--work-dir", str(work_dir), "--cfg-options", *cfg_option_args(args)]


# --- results ---------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(scenario: str, option_seeds: dict[str, list[int]],
              scores: dict[tuple[str, str, str], dict[int, dict]], teacher: dict[str, dict]
              ) -> list[dict]:
    """Rows of the summary: per option, budget and split, mean/std over the option's seeds, gain
    over the baseline on the same seeds, seed spread and share of the teacher-student gap
    recovered. Ablation options ran on the first seed only: their rows say so (``seeds``)."""
    rows = []
    for split in ("val", "test"):
        for budget in ("equal", "converged"):
            base = scores[("baseline", budget, split)]
            t = teacher.get(split)
            for option, seeds in option_seeds.items():
                base_mean, base_std = _mean_std([base[s]["mAP"] for s in seeds])
                runs = scores[(option, budget, split)]
                maps = [runs[s]["mAP"] for s in seeds]
                mean, std = _mean_std(maps)
                row: dict[str, Any] = dict(scenario=scenario, option=option, budget=budget,
                                           split=split, seeds=seeds, mAP_mean=mean, mAP_std=std,
                                           mAP_per_seed=maps)
                for c in CLASS_NAMES:
                    row[f"AP_{c}_mean"] = statistics.fmean(runs[s][f"AP_{c}"] for s in seeds)
                gain = mean - base_mean
                spread = max(std, base_std)
                row.update(gain=gain, seed_spread=spread,
                           # one seed has no spread to exceed: never counted as significant
                           gain_exceeds_2x_spread=(option != "baseline" and len(seeds) > 1
                                                   and gain > 2 * spread),
                           teacher_mAP=t["mAP"] if t else None, gap_recovered=None)
                if t and t["mAP"] != base_mean:
                    row["gap_recovered"] = gain / (t["mAP"] - base_mean)
                    row["gap_recovered_by_class"] = {
                        c: _class_share(t, base, runs, seeds, c) for c in CLASS_NAMES}
                rows.append(row)
    return rows


def teacher_budget_rows(scenario: str, seed: int, run_dir: Path, iters: int,
                        scores: dict, teacher: dict) -> list[dict]:
    """The student alone at the teacher's budget (budget ``teacher``), against the baseline."""
    history = {h["iter"]: h for h in scalars_history(run_dir)}
    rows = []
    for split, result in (("val", history[iters]), ("test", read_scores(run_dir / "test" /
                                                                     "metrics.json"))):
        base = scores[("baseline", "converged", split)][seed]["mAP"]
        t = teacher.get(split)
        rows.append(dict(
            scenario=scenario, option="baseline", budget="teacher", iters=iters, split=split,
            seeds=[seed], mAP_mean=result["mAP"], mAP_std=0.0, mAP_per_seed=[result["mAP"]],
            **{f"AP_{c}_mean": result[f"AP_{c}"] for c in CLASS_NAMES},
            gain=result["mAP"] - base, seed_spread=None, gain_exceeds_2x_spread=False,
            teacher_mAP=t["mAP"] if t else None,
            gap_recovered=(result["mAP"] - base) / (t["mAP"] - base) if t else None))
    return rows


def _class_share(teacher, base, runs, seeds, c) -> float | None:
    key = f"AP_{c}"
    gap = teacher[key] - statistics.fmean(base[s][key] for s in seeds)
    if abs(gap) < 1e-9:
        return None
    return (statistics.fmean(runs[s][key] for s in seeds)
            - statistics.fmean(base[s][key] for s in seeds)) / gap


def markdown(rows: list[dict], split: str = "test") -> str:
    head = ["scenario", "option", "budget", "mAP (mean ± std)", *[f"AP {c}" for c in CLASS_NAMES],
            "gain", "> 2·spread", "gap recovered"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["split"] != split:
            continue
        rec = r["gap_recovered"]
        lines.append("| " + " | ".join([
            r["scenario"], r["option"], r["budget"], f"{r['mAP_mean']:.3f} ± {r['mAP_std']:.3f}",
            *[f"{r[f'AP_{c}_mean']:.3f}" for c in CLASS_NAMES],
            "-" if r["option"] == "baseline" else f"{r['gain']:+.3f}",
            "-" if r["option"] == "baseline" else ("yes" if r["gain_exceeds_2x_spread"] else "no"),
            "-" if r["option"] == "baseline" or rec is None else f"{100 * rec:.0f}%",
        ]) + " |")
    return "\n".join(lines)


def choose_best(rows: list[dict], trained_alone: set[str], budget: str = "converged"
                ) -> str | None:
    """The option chosen on the TUNING split: the largest gain over the student alone at the end
    of the schedule, on the seeds every option ran (the ablation's seeds), so that an option run
    on fewer, luckier seeds is not favoured. The held-out split plays no part. The baseline and
    the options in ``trained_alone`` (students trained alone, e.g. ``teacher_init``) are
    references, never chosen. The result file records the choice (``best_option``), which is
    what the book shows. ``budget``: the rows compared (``plateau`` in the fair protocol)."""
    rows = [r for r in rows if r["split"] == "val" and r["budget"] == budget]
    shared = set.intersection(*(set(r["seeds"]) for r in rows)) if rows else set()
    base = next((r for r in rows if r["option"] == "baseline"), None)
    if base is None or not shared:
        return None

    def paired_gain(row: dict) -> float:
        return statistics.fmean(row["mAP_per_seed"][row["seeds"].index(s)]
                                - base["mAP_per_seed"][base["seeds"].index(s)] for s in shared)

    options = [r for r in rows if r["option"] != "baseline" and r["option"] not in trained_alone]
    return max(options, key=paired_gain)["option"] if options else None


# --- the benchmark ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("two_sensor", "few_labels", "scarce_labels",
                                                    "fusion_to_lidar", "compression"),
                        default="two_sensor")
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--smoke", action="store_true", help="CI models, 4 iterations, 1 seed")
    parser.add_argument("--protocol", choices=("schedule", "fair"), default="schedule",
                        help="'schedule': every run to the end of one schedule, scored there and "
                             "after --equal-iters; 'fair' (issue 19): every option to its own "
                             "plateau, against the student alone at its plateau (a), given the "
                             "lead option's compute (b) and on pseudo-labels (c)")
    parser.add_argument("--iters", type=int, help="iterations per run (default: the preset's; "
                        "fair: the first schedule, extended until the plateau)")
    parser.add_argument("--equal-iters", type=int, help="the short, equal budget scored on test "
                        "(default: the preset's)")
    parser.add_argument("--eval-interval", type=int, help="iterations between tuning-split "
                        "validations (default: the preset's)")
    parser.add_argument("--teacher-budget", type=int, metavar="ITERS",
                        help="also train the student alone for ITERS iterations (the teacher's "
                             "budget), first seed: is the baseline short of its plateau?")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the preset's)")
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS),
                        help="options run on every seed (baseline is always included)")
    parser.add_argument("--ablation", nargs="*", choices=list(OPTIONS), default=None,
                        help="options tried on the first seed only, to choose on the tuning "
                             "split (default: the preset's)")
    parser.add_argument("--lead", default=LEAD, choices=list(OPTIONS),
                        help="fair: the option whose compute baseline b is matched to")
    parser.add_argument("--plateau-cap", type=int, metavar="ITERS", help="fair: the longest "
                        "schedule a run is extended to (default: 4x --iters)")
    parser.add_argument("--plateau-tolerance", type=float, default=fair.TOLERANCE,
                        help="fair: the mAP rise over the last 25%% of a schedule still counted "
                             "as a plateau where one seed gives no spread")
    parser.add_argument("--labelled", type=int, metavar="N", help="only the first N training "
                        "scenes keep their labels (default: the scenario's; few_labels: 200)")
    parser.add_argument("--pseudo-threshold", type=float, default=0.3,
                        help="fair: the teacher's score from which a box is a pseudo-label")
    parser.add_argument("--parallel", type=int, help="runs at a time (default: the preset's)")
    parser.add_argument("--teacher-ckpt", help="teacher weights (default: the scenario's "
                        "shipped teacher; smoke: a random teacher)")
    parser.add_argument("--work-root", type=Path, help="runs' work dirs (default: "
                        "work_dirs/distill_gain/<scenario>_<preset>[_fair])")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "distill_gain.json")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    scenario_name = "smoke" if args.smoke else args.scenario
    scenario = dict(SCENARIOS[scenario_name])
    if args.labelled is not None:
        scenario["labelled"] = args.labelled
        scenario["what"] += f"; only the first {args.labelled} training scenes labelled"
    preset = dict(PRESETS["smoke" if args.smoke else args.preset])
    for key in ("iters", "equal_iters", "eval_interval", "parallel"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    preset["equal_iters"] = min(preset["equal_iters"], preset["iters"])
    seeds = list(args.seeds or preset["seeds"])
    fair_protocol = args.protocol == "fair"
    default_options = preset["options"]
    if fair_protocol:
        default_options = (args.lead, *(FAIR_PSEUDO if scenario.get("labelled") else ()))
    options = list(dict.fromkeys(["baseline", *(args.options or default_options)]))
    if fair_protocol and args.lead not in options:
        raise SystemExit(f"--lead {args.lead} is not among the options {options}: baseline b "
                         "is matched to the lead option's compute")
    ablation = [o for o in (preset.get("ablation", ()) if args.ablation is None else args.ablation)
                if o not in options]
    option_seeds = {**{o: seeds for o in options}, **{o: seeds[:1] for o in ablation}}
    teacher_ckpt = args.teacher_ckpt or scenario["teacher_ckpt"]
    if teacher_ckpt is not None and list(option_seeds) == ["baseline"] \
            and not Path(teacher_ckpt).is_file():
        teacher_ckpt = None  # students alone need no teacher: their runs can start first
    if teacher_ckpt is not None:
        if not Path(teacher_ckpt).is_file():
            raise SystemExit(f"no teacher at {teacher_ckpt}: train and ship it first (see "
                             "bevdistill/assets/*_card.json for the command) or pass --teacher-ckpt")
        teacher_ckpt = str(Path(teacher_ckpt).resolve())
    work_root = (args.work_root or REPO_ROOT / "work_dirs" / "distill_gain"
                 / (f"{scenario_name}_{'smoke' if args.smoke else args.preset}"
                    + "_fair" * fair_protocol)).resolve()
    cache_dir = work_root.parent / "scan_cache"
    record = provenance(MODULE, argv)
    started = time.time()
    run = fair_runs if fair_protocol else schedule_runs
    rows, runs, curves, teacher, extra = run(args, scenario_name, scenario, preset, seeds,
                                             option_seeds, teacher_ckpt, work_root, cache_dir)
    budget = "plateau" if fair_protocol else "converged"
    best = choose_best(rows, {o for o in option_seeds if o in TRAINED_ALONE}, budget)
    table = markdown(rows)
    result = {
        "scenario": scenario_name, "what": scenario["what"], "provenance": record,
        "protocol": args.protocol,
        "budget": {k: preset[k] for k in ("iters", "equal_iters", "eval_interval", "batch_size",
                                          "train_samples", "tune_samples", "test_samples",
                                          "parallel", "threads", "device")},
        "labelled": scenario.get("labelled"),
        "teacher_ckpt": shown_path(teacher_ckpt), "teacher": teacher, "seeds": seeds,
        "teacher_sha256": file_sha256(teacher_ckpt) if teacher_ckpt else None,
        "options": {o: {"description": OPTIONS[o][0], "cfg_options": OPTIONS[o][1],
                        "trained_alone": o in TRAINED_ALONE, "seeds": option_seeds[o]}
                    for o in option_seeds},
        "best_option": best, "chosen_on": f"val (tuning split), {budget} budget",
        **extra, "wall_s": round(time.time() - started, 1), "markdown": table,
    }
    merged = _merge(args.out, scenario_name, result, rows, runs, curves)
    write_json(args.out, merged)
    print(table)
    print(f"best option on the tuning split: {best}; -> {args.out}")
    return merged


def _teacher_specs(scenario: dict, preset: dict, teacher_ckpt: str | None, work_root: Path,
                   cache_dir: Path) -> list[RunSpec]:
    if teacher_ckpt is None:
        return []
    return [RunSpec("teacher/test", test_command(
        scenario["teacher"], preset, Path(teacher_ckpt), work_root / "teacher" / "test",
        cache_dir), work_root / "teacher" / "test")]


def _teacher_scores(scenario: dict, teacher_ckpt: str | None, work_root: Path) -> dict:
    if teacher_ckpt is None:
        return {}
    return {"test": read_scores(work_root / "teacher" / "test" / "metrics.json"),
            "val": _teacher_val(scenario, teacher_ckpt)}


def _model_args(option: str, teacher_ckpt: str | None) -> dict[str, Any] | None:
    """What an evaluation of ``option``'s checkpoint needs to build its model (the model's
    overrides; a student alone needs none: init_from is in the weights scored)."""
    if option in TRAINED_ALONE:
        return None
    return {**{k: v for k, v in option_overrides(option, teacher_ckpt, "-").items()
               if k.startswith("model.")},
            **({"model.teacher_ckpt": teacher_ckpt} if teacher_ckpt else {})}


def _experiment(scenario: dict, option: str) -> str:
    return scenario["student"] if option in TRAINED_ALONE else scenario["distill"]


def schedule_runs(args, scenario_name, scenario, preset, seeds, option_seeds, teacher_ckpt,
                  work_root, cache_dir):
    """The ``schedule`` protocol: every run to the end of one schedule (budget ``converged``)
    and scored after ``equal_iters`` too (budget ``equal``)."""
    # Each training run is followed by its test scores, so a score is ready as soon as its run
    # is (run_all starts the first runnable run in this order).
    specs = _teacher_specs(scenario, preset, teacher_ckpt, work_root, cache_dir)
    long_dir = work_root / f"baseline_it{args.teacher_budget}" / f"seed{seeds[0]}"
    if args.teacher_budget:  # the student alone, trained as long as the teacher was; the
        # longest run starts first so that it does not finish alone
        long_preset = {**preset, "iters": args.teacher_budget}
        specs.append(RunSpec("baseline/teacher_budget", train_command(
            scenario, long_preset, "baseline", seeds[0], long_dir, cache_dir, None), long_dir))
        specs.append(RunSpec("baseline/teacher_budget/test", test_command(
            scenario["student"], preset, long_dir / f"iter_{args.teacher_budget}.pth",
            long_dir / "test", cache_dir), long_dir / "test", after="baseline/teacher_budget"))
    for seed in seeds:  # seed-major: a partial run holds every option for the first seeds
        for option in [o for o, o_seeds in option_seeds.items() if seed in o_seeds]:
            run_dir = work_root / option / f"seed{seed}"
            name = f"{option}/seed{seed}"
            specs.append(RunSpec(name, train_command(
                scenario, preset, option, seed, run_dir, cache_dir, teacher_ckpt), run_dir))
            for budget, it in (("equal", preset["equal_iters"]), ("converged", preset["iters"])):
                test_dir = run_dir / f"test_{budget}"
                specs.append(RunSpec(f"{name}/test_{budget}", test_command(
                    _experiment(scenario, option), preset, run_dir / f"iter_{it}.pth", test_dir,
                    cache_dir, _model_args(option, teacher_ckpt)), test_dir, after=name))
    runs = run_all(specs, parallel=preset["parallel"], env=run_env(preset),
                   cwd=REPO_ROOT)

    scores: dict[tuple[str, str, str], dict[int, dict]] = {}
    curves: dict[str, dict[str, list]] = {}
    for option, o_seeds in option_seeds.items():
        for seed in o_seeds:
            run_dir = work_root / option / f"seed{seed}"
            history = scalars_history(run_dir)
            curves.setdefault(option, {})[str(seed)] = history
            by_iter = {h["iter"]: h for h in history}
            for budget, it in (("equal", preset["equal_iters"]), ("converged", preset["iters"])):
                if it not in by_iter:
                    raise KeyError(f"{run_dir}: no validation at iteration {it} (have "
                                   f"{sorted(by_iter)}); eval_interval must divide it")
                scores.setdefault((option, budget, "val"), {})[seed] = by_iter[it]
                scores.setdefault((option, budget, "test"), {})[seed] = read_scores(
                    run_dir / f"test_{budget}" / "metrics.json")
    teacher = _teacher_scores(scenario, teacher_ckpt, work_root)
    rows = summarise(scenario_name, option_seeds, scores, teacher)
    terms = {o: option_terms(scenario, o) for o in option_seeds}
    for row in rows:
        row["terms"] = terms[row["option"]]
    if args.teacher_budget:
        curves.setdefault("baseline_teacher_budget", {})[str(seeds[0])] = scalars_history(long_dir)
        rows += teacher_budget_rows(scenario_name, seeds[0], long_dir, args.teacher_budget,
                                    scores, teacher)
    return rows, runs, curves, teacher, {}


def option_terms(scenario: dict, option: str) -> list[str]:
    """The loss keys ``option`` trains with beside the detection loss, read from the Distiller
    its overrides build (``[]`` for a student alone)."""
    if option in TRAINED_ALONE:
        return []
    from mmengine.registry import MODELS

    from bevdistill.engine.runner import load_experiment

    model_only = {k: v for k, v in (_model_args(option, None) or {}).items()
                  if k != "model.student_init"}  # the weights' start adds no term
    exp = load_experiment(scenario["distill"], {**as_the_cli_reads(model_only),
                                                "model.teacher_ckpt": None})
    return sorted(MODELS.build(exp.model).loss_keys)


def fair_runs(args, scenario_name, scenario, preset, seeds, option_seeds, teacher_ckpt,
              work_root, cache_dir):
    """The ``fair`` protocol (issue 19): every option trained to its own plateau (its schedule
    doubled, resuming its checkpoint, until :func:`~benchmarks._fair_protocol.plateau_check`
    holds or ``--plateau-cap``), the student alone given the lead option's compute (baseline
    b), and the options on the teacher's pseudo-labels; each final checkpoint scored on the
    held-out split. Runs are added phase by phase to one list, so an interrupted invocation
    resumes every finished run, and the same curves give the same extensions."""
    cap = args.plateau_cap or 4 * preset["iters"]
    ran: set[str] = set()  # runs done by this invocation, in any phase

    def run() -> list[dict]:
        records = run_all(specs, parallel=preset["parallel"], env=run_env(preset), cwd=REPO_ROOT)
        ran.update(r["name"] for r in records if not r["reused"])
        return [{**r, "reused": r["name"] not in ran} for r in records]

    specs = _teacher_specs(scenario, preset, teacher_ckpt, work_root, cache_dir)
    pseudo_file = None
    if any(parse_option(o).labels == "pseudo" for o in option_seeds):
        if scenario.get("labelled") is None:
            raise SystemExit("pseudo-label options need unlabelled scans: use a scenario with "
                             "them (few_labels) or --labelled N")
        pl_dir = work_root / "pseudo_labels"
        pseudo_file = str(pl_dir / PSEUDO_LABEL_FILE)
        specs.append(RunSpec("pseudo_labels", pseudo_label_command(
            scenario, preset, teacher_ckpt, args.pseudo_threshold, pl_dir, cache_dir), pl_dir))

    def stage_dir(option: str, seed: int, iters: int) -> Path:
        first = iters == preset["iters"]
        return work_root / option / (f"seed{seed}" if first else f"seed{seed}_it{iters}")

    def add_stage(option: str, iters: int, before: int | None, seeds: list[int]) -> None:
        for seed in seeds:
            work = stage_dir(option, seed, iters)
            command = train_command(scenario, {**preset, "iters": iters}, option, seed, work,
                                    cache_dir, teacher_ckpt, pseudo_file, resume=bool(before))
            after = (f"{option}/seed{seed}/it{before}" if before
                     else "pseudo_labels" if parse_option(option).labels == "pseudo" else None)
            specs.append(RunSpec(f"{option}/seed{seed}/it{iters}", command, work, after=after,
                                 start_from=(stage_dir(option, seed, before) / f"iter_{before}.pth"
                                             if before else None)))

    stages = {option: [preset["iters"]] for option in option_seeds}
    for seed in seeds:  # seed-major, as in the schedule protocol
        for option in [o for o, o_seeds in option_seeds.items() if seed in o_seeds]:
            add_stage(option, preset["iters"], None, [seed])
    run()

    def curve(option: str, seed: int) -> list[dict]:
        by_iter = {h["iter"]: h for it in stages[option]
                   for h in scalars_history(stage_dir(option, seed, it))}
        return [by_iter[i] for i in sorted(by_iter)]

    plateau: dict[str, dict] = {}
    while True:
        extended = False
        for option, o_seeds in option_seeds.items():
            check = fair.plateau_check([curve(option, s) for s in o_seeds],
                                       args.plateau_tolerance)
            plateau[option] = {**check, "schedules": list(stages[option]), "cap": cap}
            longer = None if check["met"] else fair.extended_iters(stages[option][-1], cap)
            if longer is not None:
                add_stage(option, longer, stages[option][-1], o_seeds)
                stages[option].append(longer)
                extended = True
        if not extended:
            break
        run()

    # Baseline b: the student alone for as long as the lead option's compute lasts.
    lead = args.lead
    lead_s = step_seconds([stage_dir(lead, s, it) for s in seeds for it in stages[lead]])
    alone_s = step_seconds([stage_dir("baseline", s, it) for s in seeds
                            for it in stages["baseline"]])
    matched_iters, ratio = fair.compute_matched_iters(stages[lead][-1], lead_s, alone_s)
    cm = fair.COMPUTE_MATCHED_OPTION
    for seed in seeds:
        work = work_root / cm / f"seed{seed}"
        specs.append(RunSpec(f"{cm}/seed{seed}", train_command(
            scenario, {**preset, "iters": matched_iters}, "baseline", seed, work, cache_dir,
            None), work))
    final = {o: (lambda s, o=o: stage_dir(o, s, stages[o][-1])) for o in option_seeds}
    final[cm] = lambda s: work_root / cm / f"seed{s}"
    iters = {**{o: stages[o][-1] for o in option_seeds}, cm: matched_iters}
    all_seeds = {**option_seeds, cm: seeds}
    for option, o_seeds in all_seeds.items():
        for seed in o_seeds:
            work = final[option](seed)
            name = f"{option}/seed{seed}" + (f"/it{iters[option]}" if option != cm else "")
            specs.append(RunSpec(f"{name}/test", test_command(
                _experiment(scenario, "baseline" if option == cm else option), preset,
                work / f"iter_{iters[option]}.pth", work / "test", cache_dir,
                None if option == cm else _model_args(option, teacher_ckpt)), work / "test",
                after=name))
    runs = run()

    scores: dict[tuple[str, str], dict[int, dict]] = {}
    curves: dict[str, dict[str, list]] = {}
    for option, o_seeds in all_seeds.items():
        for seed in o_seeds:
            history = (scalars_history(final[cm](seed)) if option == cm else curve(option, seed))
            curves.setdefault(option, {})[str(seed)] = history
            last = {h["iter"]: h for h in history}.get(iters[option])
            if last is None:
                raise KeyError(f"{option} seed {seed}: no validation at iteration "
                               f"{iters[option]} (have {[h['iter'] for h in history]})")
            scores.setdefault((option, "val"), {})[seed] = last
            scores.setdefault((option, "test"), {})[seed] = read_scores(
                final[option](seed) / "test" / "metrics.json")
    teacher = _teacher_scores(scenario, teacher_ckpt, work_root)
    terms = {o: option_terms(scenario, o) for o in option_seeds}
    terms[cm] = []
    rows = fair.fair_rows(scenario_name, all_seeds, scores, teacher, terms, plateau, iters)
    extra = {
        "plateau": plateau,
        "compute_matched": {
            "option": cm, "matched_to": lead, "iters": matched_iters, "ratio": ratio,
            "lead_iters": stages[lead][-1],
            "seconds_per_iter": {lead: statistics.median(lead_s),
                                 "baseline": statistics.median(alone_s)},
            "how": "median logged seconds per training iteration (teacher's forward included) "
                   "of the lead option over the student alone's, in the runs of this benchmark"},
    }
    if pseudo_file is not None:
        extra["pseudo_labels"] = json.loads((Path(pseudo_file).parent / "metrics.json").read_text())
    return rows, runs, curves, teacher, extra


def pseudo_label_command(scenario: dict, preset: dict, teacher_ckpt: str | None,
                         threshold: float, work_dir: Path, cache_dir: Path) -> list[str]:
    """The run that writes the teacher's pseudo-labels of the scenario's unlabelled scenes."""
    args = {"train_dataset.num_samples": preset["train_samples"],
            "train_dataset.cache_dir": str(cache_dir)}
    return [sys.executable, "-m", "benchmarks.pseudo_labels", scenario["teacher"],
            *([teacher_ckpt] if teacher_ckpt else []), "--first-scene", str(scenario["labelled"]),
            "--score-threshold", str(threshold), "--work-dir", str(work_dir),
            "--cfg-options", *cfg_option_args(args)]


def _teacher_val(scenario: dict, teacher_ckpt: str) -> dict | None:
    """The teacher's tuning-split score, from its card when the card says it (same scenes)."""
    card = Path(teacher_ckpt).with_name(Path(teacher_ckpt).stem + "_card.json")
    if not card.is_file():
        return None
    metrics = json.loads(card.read_text()).get("val", {}).get("metrics", {})
    if "bev/mAP" not in metrics:
        return None
    return {"mAP": metrics["bev/mAP"], **{f"AP_{c}": metrics.get(f"bev/AP_{c}", 0.0)
                                          for c in CLASS_NAMES}}


def _merge(out: Path, scenario: str, result: dict, rows: list, runs: list, curves: dict) -> dict:
    """This scenario's results, beside the other scenarios' results already in ``out``."""
    old = json.loads(out.read_text()) if out.is_file() else {}
    if "scenarios" not in old:  # an older schema: replaced, not mixed
        old = {}
    scenarios = {k: v for k, v in old.get("scenarios", {}).items() if k != scenario}
    scenarios[scenario] = result
    keep = lambda items: [x for x in items if x.get("scenario") != scenario]  # noqa: E731
    summary = keep(old.get("summary", [])) + rows
    all_runs = keep(old.get("runs", [])) + [{"scenario": scenario, **r} for r in runs]
    all_curves = {k: v for k, v in old.get("curves", {}).items() if k != scenario}
    all_curves[scenario] = curves
    return {
        "benchmark": "distill_gain",
        "command_pattern": "python -m benchmarks.distill_gain --scenario SCENARIO",
        "goal": {"gap_recovered_at_least": 0.5, "gain_exceeds_2x_seed_spread": True,
                 "split": "test", "met_in": [
                     s for s, r in scenarios.items() if _goal_met(summary, s, r["best_option"])]},
        "scenarios": scenarios, "summary": summary, "runs": all_runs, "curves": all_curves,
    }


def _goal_met(summary: list[dict], scenario: str, best: str | None) -> bool:
    """The best option's held-out row recovers half the gap with a gain above twice the seed
    spread; at the plateau (fair protocol), over the compute-matched student alone too."""
    return any(r["scenario"] == scenario and r["option"] == best and r["split"] == "test"
               and r["budget"] in ("converged", "plateau") and (r["gap_recovered"] or 0) >= 0.5
               and r["gain_exceeds_2x_spread"]
               and (r["budget"] != "plateau" or r["gain_exceeds_2x_spread_vs_compute_matched"])
               for r in summary)


if __name__ == "__main__":
    main()
