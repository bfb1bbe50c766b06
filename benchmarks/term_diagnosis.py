"""Why does the taught loss transfer little? Each term's pull, reach and effect, measured.

The taught loss is the ``distill`` experiment's recipe (step 5): InfoNCE over sampled cells
(``crd``), attention transfer (``at``) and heatmap KD (``kd``), at the config's weights. In the
two-sensor world (the shipped 64-beam teacher, the 16-beam student), this benchmark trains the
student alone, with the full recipe, with each term alone and with each term left out (short
runs, one seed, the project's own ``bevdistill`` commands), and measures at their weights
(:mod:`benchmarks.term_probe`):

1. per loss key and per term, the norm of its gradient on the student's parameters and on each
   hooked map, against the detection loss's, and the cosine between the two parameter
   gradients: at the initialisation and every ``interval`` iterations of the student alone and
   of the full recipe (at the end only for the other runs);
2. linear CKA between the student's and the teacher's maps at each hooked layer (cells of the
   tuning scenes as samples), over all cells and over the cells inside ground-truth boxes;
3. each run's tuning-split mAP at the end of its schedule.

The shipped teacher was trained on synthetic world version 1 (front/back symmetric objects) and
the default world is now version 2: every run here uses ``world_version=1`` for its training and
tuning scenes, the teacher's own world.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.term_diagnosis            # ~15 min, 2 cores
    .venv/bin/python -m benchmarks.term_diagnosis --smoke --work-root /tmp/td --out /tmp/td.json

A finished run is reused when its commit and command are this invocation's
(:func:`benchmarks.runs.run_all`), and so is its measurement (``diagnosis.json`` in its work
dir); the result file is rewritten after every group of runs, so an interrupted invocation
leaves the arms it finished, and the same command resumes it. Writes
``benchmarks/results/term_diagnosis.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.provenance import REPO_ROOT, RESULTS_DIR, provenance, shown_path, tree_is_dirty
from benchmarks.runs import (
    RunSpec,
    read_scores,
    run_all,
    run_env,
    scalars_history,
    with_portable_commands,
)
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.checkpoint import file_sha256
from bevdistill.engine.report import git_commit, write_json

MODULE = "benchmarks.term_diagnosis"
ASSETS = REPO_ROOT / "bevdistill" / "assets"
WORLD_VERSION = 1  # the shipped teachers' world (their cards name no newer one)
WORLD_NOTE = (
    "The shipped 64-beam teacher was trained on synthetic world version 1 (front/back symmetric "
    "objects); the default world is now version 2 (asymmetric objects). Every run and "
    "measurement here uses train_dataset.world_version=1 val_dataset.world_version=1, so the "
    "teacher teaches on its own world.")

SCENARIOS: dict[str, dict[str, Any]] = {
    "two_sensor": dict(student="train_student_16beam", distill="distill_64to16beam",
                       teacher="train_teacher_64beam", teacher_ckpt=ASSETS / "teacher_64beam.pth",
                       what="64-beam teacher -> 16-beam student, same network"),
    "smoke": dict(student="train_student_ci", distill="distill_ci", teacher="train_teacher_ci",
                  teacher_ckpt=None, what="tiny CI models"),
}
PRESETS: dict[str, dict[str, Any]] = {
    # 8 arms of 600 iterations (about 0.2 s a step at batch 4, one thread): ~25 min on one core,
    # ~15 min with 2 single-threaded runs at a time
    "cpu": dict(iters=600, interval=100, batch_size=4, train_samples=300, tune_samples=100,
                probe_scenes=32, grad_batches=4, seed=0, parallel=2),
    "smoke": dict(iters=4, interval=2, batch_size=2, train_samples=4, tune_samples=2,
                  probe_scenes=2, grad_batches=1, seed=0, parallel=1),
}
ALONE, TAUGHT = "alone", "taught"
CURVES = (ALONE, TAUGHT)  # the arms measured at every interval, not only at the end


# --- the recipe and the arms -------------------------------------------------------------


def read_recipe(distill: str) -> list[dict[str, Any]]:
    """The taught loss: the terms of ``distill``'s config that weigh anything, with their
    position in ``model.terms`` (what ``--cfg-options model.terms.<i>.weight`` addresses)."""
    from bevdistill.engine.runner import load_experiment

    terms = load_experiment(distill).model.terms
    recipe = [dict(term=t["name"], index=i, weight=float(t.get("weight", 1.0)),
                   layers=[layer if isinstance(layer, str) else layer["student"]
                           for layer in t.get("layers", ["heatmap"])])
              for i, t in enumerate(terms) if float(t.get("weight", 1.0)) > 0]
    if not recipe:
        raise ValueError(f"{distill}: no term weighs anything; nothing to diagnose")
    return recipe


def arm_list(recipe: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every arm, in the order they run (the most telling first, so a cut list keeps them):
    the student alone, the full recipe, each term alone, each term left out."""
    names = [t["term"] for t in recipe]
    arms: dict[str, dict[str, Any]] = {
        ALONE: dict(terms=[], description="the student alone (train_student)"),
        TAUGHT: dict(terms=names, description="the taught loss: every term at its weight"),
    }
    for t in names:
        arms[f"only_{t}"] = dict(terms=[t], description=f"{t} alone, at its weight in the recipe")
    for t in names:
        arms[f"without_{t}"] = dict(terms=[n for n in names if n != t],
                                    description=f"the recipe without {t}")
    for arm in arms.values():
        arm["weights"] = {t["term"]: t["weight"] if t["term"] in arm["terms"] else 0.0
                          for t in recipe}
    return arms


# --- commands ----------------------------------------------------------------------------


def _data_args(preset: dict, cache_dir: Path) -> dict[str, Any]:
    return {"train_dataset.world_version": WORLD_VERSION,
            "val_dataset.world_version": WORLD_VERSION,
            "val_dataset.split": "val", "val_dataset.num_samples": preset["tune_samples"],
            "val_dataset.cache_dir": str(cache_dir), "data.val_batch_size": preset["batch_size"],
            "data.num_workers": 0}


def _cfg(args: dict[str, Any]) -> list[str]:
    return ["--cfg-options", *[f"{k}={v}" for k, v in args.items()]]


def train_command(scenario: dict, preset: dict, recipe: list[dict], arm: dict, work_dir: Path,
                  cache_dir: Path, teacher_ckpt: str | None) -> list[str]:
    """The bevdistill command of one arm: ``train student`` alone, else ``distill`` with the
    weights of the terms it leaves out set to 0."""
    args: dict[str, Any] = {
        "seed": preset["seed"],
        "train_dataset.num_samples": preset["train_samples"],
        "train_dataset.cache_dir": str(cache_dir),
        **_data_args(preset, cache_dir),
        "data.batch_size": preset["batch_size"],
        "schedule.val_interval": preset["iters"],
        "schedule.checkpoint_interval": preset["interval"],
        "schedule.max_keep_ckpts": -1,  # every interval's weights are measured
        "schedule.log_interval": max(1, min(50, preset["iters"])),
    }
    if not arm["terms"]:
        head = ["train", "student", scenario["student"]]
    else:
        head = ["distill", scenario["distill"]]
        if teacher_ckpt is not None:
            args["model.teacher_ckpt"] = teacher_ckpt
        args.update({f"model.terms.{t['index']}.weight": arm["weights"][t["term"]]
                     for t in recipe})
    return [sys.executable, "-m", "bevdistill", *head, "--work-dir", str(work_dir),
            "--max-iters", str(preset["iters"]), *_cfg(args)]


def teacher_command(scenario: dict, preset: dict, teacher_ckpt: str, work_dir: Path,
                    cache_dir: Path) -> list[str]:
    """The teacher scored on the same tuning scenes, for the gap the students are short of."""
    return [sys.executable, "-m", "bevdistill", "evaluate", scenario["teacher"], teacher_ckpt,
            "--work-dir", str(work_dir), *_cfg(_data_args(preset, cache_dir))]


# --- measurements ------------------------------------------------------------------------


def build_probe(scenario: dict, preset: dict, teacher_ckpt: str | None, work_root: Path,
                cache_dir: Path):
    """The full recipe's Distiller (built as the Runner builds it, so at the runs' seed it
    starts from their initialisation) and the probe's batches."""
    from mmengine.registry import DATASETS

    from benchmarks.term_probe import TermProbe
    from bevdistill.data import bev_collate
    from bevdistill.engine.runner import load_experiment, make_runner

    args = {"seed": preset["seed"], **_data_args(preset, cache_dir),
            "train_dataset.num_samples": preset["train_samples"],
            "train_dataset.cache_dir": str(cache_dir),
            "model.teacher_ckpt": teacher_ckpt}
    exp = load_experiment(scenario["distill"], args)
    runner = make_runner(exp, work_root / "_probe", train=False)
    model = runner.model
    model.init_weights()  # as Runner.train() does before the first step
    b = preset["batch_size"]
    val = DATASETS.build({**exp.val_dataset.to_dict(), "num_samples": preset["probe_scenes"]})
    train = DATASETS.build(exp.train_dataset.to_dict())
    probe_batches = [bev_collate([val[i] for i in range(j, min(j + b, len(val)))])
                     for j in range(0, len(val), b)]
    grad_batches = [bev_collate([train[j * b + i] for i in range(b)])
                    for j in range(preset["grad_batches"])]
    return TermProbe(model, probe_batches, grad_batches, exp.val_dataset.point_cloud_range)


def measure(probe, checkpoint: Path | None, trained_alone: bool, with_gradients: bool = True
            ) -> dict[str, Any]:
    missing = probe.load(checkpoint, trained_alone)
    out: dict[str, Any] = {"cka": probe.cka()}
    if with_gradients:
        out["gradients"] = probe.gradients()
    out["keys_left_at_init"] = missing
    return out


def arm_diagnosis(probe, name: str, run_dir: Path, iters: list[int], trained_alone: bool,
                  identity: dict) -> dict[str, Any]:
    """The measurements of one arm at ``iters`` (its checkpoints), reused from its work dir
    when they were made with the same ``identity`` (commit, command, probe settings)."""
    path = run_dir / "diagnosis.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("identity") == identity:
            return old
    print(f"[{time.strftime('%H:%M:%S')}] measuring {name} at {iters}", flush=True)
    result = {"identity": identity, "at": {
        str(it): measure(probe, run_dir / f"iter_{it}.pth", trained_alone,
                         with_gradients=True) for it in iters}}
    write_json(path, result)
    return result


# --- the result file ---------------------------------------------------------------------


def _rows(arm: str, measured: dict[str, Any], kind: str) -> list[dict]:
    return [{"arm": arm, "iter": int(it), **row} for it, m in measured.items()
            for row in m.get(kind, [])]


def effects(arms: dict, done: list[str], scores: dict[str, dict], teacher: dict | None,
            cka_rows: list[dict], iters: int) -> list[dict]:
    """One row per finished arm: its tuning mAP, gain over the student alone and over the full
    recipe, and its foreground CKA with the teacher at the end, per layer."""
    base = scores.get(ALONE, {}).get("mAP")
    full = scores.get(TAUGHT, {}).get("mAP")
    rows = []
    for name in done:
        s = scores[name]
        row: dict[str, Any] = dict(arm=name, terms=arms[name]["terms"], tune_mAP=s["mAP"],
                                   gain_vs_alone=None if base is None else s["mAP"] - base,
                                   gain_vs_taught=None if full is None else s["mAP"] - full)
        if teacher and base is not None and teacher["mAP"] != base:
            row["gap_recovered"] = (s["mAP"] - base) / (teacher["mAP"] - base)
        row.update({f"AP_{c}": s.get(f"AP_{c}") for c in CLASS_NAMES})
        for r in cka_rows:
            if r["arm"] == name and r["iter"] == iters and r["cells"] == "foreground":
                row[f"fg_cka.{r['layer']}"] = r["cka"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CI models, a few iterations")
    parser.add_argument("--iters", type=int, help="iterations per run (default: the preset's)")
    parser.add_argument("--interval", type=int, help="iterations between measurements")
    parser.add_argument("--train-samples", type=int, help="training scenes")
    parser.add_argument("--arms", nargs="+", help="arms to run, in order (default: all; "
                        "alone and taught are always run first)")
    parser.add_argument("--parallel", type=int, help="runs at a time")
    parser.add_argument("--teacher-ckpt", help="teacher weights (default: the shipped 64-beam "
                        "teacher; smoke: needed, a CI teacher's checkpoint)")
    parser.add_argument("--work-root", type=Path, help="runs' work dirs (default: "
                        "work_dirs/term_diagnosis/<scenario>)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "term_diagnosis.json")
    args = parser.parse_args(argv)

    scenario_name = "smoke" if args.smoke else "two_sensor"
    scenario = SCENARIOS[scenario_name]
    preset = dict(PRESETS["smoke" if args.smoke else "cpu"])
    for key in ("iters", "interval", "train_samples", "parallel"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    if preset["iters"] % preset["interval"]:
        raise SystemExit(f"--interval {preset['interval']} must divide --iters {preset['iters']}"
                         " (a checkpoint is measured every interval)")
    teacher_ckpt = args.teacher_ckpt or scenario["teacher_ckpt"]
    if teacher_ckpt is None or not Path(teacher_ckpt).is_file():
        raise SystemExit(f"no teacher checkpoint at {teacher_ckpt}: pass --teacher-ckpt (the "
                         "shipped one is bevdistill/assets/teacher_64beam.pth)")
    teacher_ckpt = str(Path(teacher_ckpt).resolve())
    recipe = read_recipe(scenario["distill"])
    all_arms = arm_list(recipe)
    wanted = list(dict.fromkeys([ALONE, TAUGHT, *(args.arms or all_arms)]))
    unknown = [a for a in wanted if a not in all_arms]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; the arms are {list(all_arms)}")
    work_root = (args.work_root or REPO_ROOT / "work_dirs" / "term_diagnosis" / scenario_name
                 ).resolve()
    cache_dir = work_root / "scan_cache"
    record = provenance(MODULE, argv)
    started = time.time()
    env = run_env(dict(threads=1, device="cpu"))
    checkpoints = list(range(preset["interval"], preset["iters"] + 1, preset["interval"]))
    commit, dirty = git_commit(REPO_ROOT), tree_is_dirty()

    teacher_dir = work_root / "teacher_tune"
    teacher_spec = RunSpec("teacher/tune", teacher_command(scenario, preset, teacher_ckpt,
                                                           teacher_dir, cache_dir), teacher_dir)
    specs = {name: RunSpec(name, train_command(scenario, preset, recipe, all_arms[name],
                                               work_root / name, cache_dir, teacher_ckpt),
                           work_root / name) for name in wanted}
    probe = None
    runs: dict[str, dict] = {}
    done: list[str] = []
    diagnosis: dict[str, dict] = {}
    groups = [wanted[i:i + preset["parallel"]] for i in range(0, len(wanted), preset["parallel"])]
    for g, group in enumerate(groups):
        batch = ([teacher_spec] if g == 0 else []) + [specs[n] for n in group]
        for rec in run_all(batch, parallel=preset["parallel"], env=env, cwd=REPO_ROOT):
            runs[rec["name"]] = {k: v for k, v in rec.items() if k != "portable_command"}
        if probe is None:
            probe = build_probe(scenario, preset, teacher_ckpt, work_root, cache_dir)
            init_id = {"commit": commit, "dirty": dirty, "preset": preset,
                       "teacher_sha256": file_sha256(teacher_ckpt)}
            init_path = work_root / "init_diagnosis.json"
            old = json.loads(init_path.read_text()) if init_path.is_file() else {}
            if old.get("identity") == init_id:
                init = old
            else:
                print(f"[{time.strftime('%H:%M:%S')}] measuring the initialisation", flush=True)
                init = {"identity": init_id, "at": {"0": measure(probe, None, True)}}
                write_json(init_path, init)
        for name in group:
            iters = checkpoints if name in CURVES else checkpoints[-1:]
            identity = {"commit": commit, "dirty": dirty, "command": runs[name]["command"],
                        "preset": preset, "teacher_sha256": file_sha256(teacher_ckpt)}
            diagnosis[name] = arm_diagnosis(probe, name, work_root / name, iters,
                                            not all_arms[name]["terms"], identity)
            done.append(name)
        result = assemble(scenario_name, scenario, preset, recipe, all_arms, done, init,
                          diagnosis, runs, teacher_ckpt, work_root, record, started)
        write_json(args.out, result)
        print(f"[{time.strftime('%H:%M:%S')}] wrote {args.out} ({len(done)} of {len(wanted)} "
              "arms)", flush=True)
    print(result["markdown"])
    return result


def assemble(scenario_name: str, scenario: dict, preset: dict, recipe: list[dict], arms: dict,
             done: list[str], init: dict, diagnosis: dict, runs: dict,
             teacher_ckpt: str, work_root: Path, record: dict, started: float) -> dict:
    """The result file's content from what has finished so far."""
    from bevdistill.viz.diagnosis import diagnosis_markdown

    scores = {}
    for name in done:
        history = {h["iter"]: h for h in scalars_history(work_root / name)}
        if preset["iters"] not in history:
            raise KeyError(f"{work_root / name}: no tuning-split validation at iteration "
                           f"{preset['iters']} (have {sorted(history)})")
        scores[name] = history[preset["iters"]]
    teacher = read_scores(work_root / "teacher_tune" / "metrics.json")
    cka = _rows("init", init["at"], "cka")
    gradients = _rows("init", init["at"], "gradients")
    for name in done:
        cka += _rows(name, diagnosis[name]["at"], "cka")
        gradients += _rows(name, diagnosis[name]["at"], "gradients")
    result = {
        **record,
        "benchmark": "term_diagnosis",
        "scenario": scenario_name, "what": scenario["what"],
        "world_version": WORLD_VERSION, "world_note": WORLD_NOTE,
        "complete": len(done) == len(arms),  # every arm of the diagnosis, not only those asked
        "arms_done": done,
        "arms_not_run": [a for a in arms if a not in done],
        "budget": {k: preset[k] for k in ("iters", "interval", "batch_size", "train_samples",
                                          "tune_samples", "probe_scenes", "grad_batches",
                                          "seed", "parallel")},
        "recipe": recipe,
        "arms": arms,
        "teacher_ckpt": shown_path(teacher_ckpt), "teacher_sha256": file_sha256(teacher_ckpt),
        "teacher_tune": teacher,
        "measured": {
            "gradients": "per loss key, per term (term:<name>, its keys summed), detection (the "
                         "student's own losses summed) and total (everything): L2 norm of the "
                         "gradient on the student's parameters and on each hooked map "
                         "(map_norm.<layer>; absent where the key does not reach the layer), "
                         "ratio to the detection loss's, cosine of the parameter gradient with "
                         "the detection loss's; mean over the gradient batches (training scenes, "
                         "train mode); weights as trained (the term weights included); iter 0: "
                         "the initialisation, arm init",
            "cka": "linear CKA between the student's and the teacher's map at each hooked layer, "
                   "cells of the probe scenes (tuning split) as samples: all cells, and the "
                   "cells inside ground-truth boxes (foreground)",
            "effects": "tuning-split mAP at the end of each run, gains over the student alone "
                       "and over the full recipe",
        },
        "effects": effects(arms, done, scores, teacher, cka, preset["iters"]),
        "gradients": gradients, "cka": cka,
        "wall_s": round(time.time() - started, 1),
        "runs": with_portable_commands(list(runs.values())),
    }
    result["markdown"] = diagnosis_markdown(result)
    return result


if __name__ == "__main__":
    main()
