"""Does distillation help? The same student, trained alone and with each distillation option.

Every run is the project's own command (``bevdistill train student train_student`` or
``bevdistill distill distill`` with ``--cfg-options`` selecting the option, see
:mod:`benchmarks._distill_options`), at an EQUAL budget: the same iterations, batch size,
schedule, training scenes and validation scenes; each option is run for every seed (the seed
sets the initial weights and the order of the batches). The teacher is evaluated on the same
validation scenes (``bevdistill evaluate train_teacher CKPT``). Reported per option: mean and
standard deviation over seeds of the val mAP and per-class AP, the gain over the baseline with
the standard deviation of the per-seed (paired) gains, and the share of the teacher-student gap
recovered, ``(distilled - baseline) / (teacher - baseline)``.

    .venv/bin/python -m benchmarks.distill_gain                 # CPU preset, 2 runs at a time
    .venv/bin/python -m benchmarks.distill_gain --preset gpu    # bigger budget, CUDA, 1 at a time
    .venv/bin/python -m benchmarks.distill_gain --smoke --work-root /tmp/dg --out /tmp/dg.json

Scans are generated once into ``scan_cache_<preset>`` beside ``WORK_ROOT`` (``SyntheticBEVDataset(cache_dir=)``)
and read by every run. A run whose ``metrics.json`` exists is skipped, so after a crash the
same command resumes where it stopped. Writes ``benchmarks/results/distill_gain.json`` (or
``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._distill_options import (
    OPTIONS,
    REPO_ROOT,
    RESULTS_DIR,
    cfg_option_args,
    provenance,
)
from bevdistill.data.classes import CLASS_NAMES

MODULE = "benchmarks.distill_gain"
SHIPPED_TEACHER = REPO_ROOT / "bevdistill" / "assets" / "teacher.pth"

PRESETS: dict[str, dict[str, Any]] = {
    # 2 single-threaded runs at a time on a 2-core machine, about an hour in all
    "cpu": dict(student="train_student", distill="distill", teacher="train_teacher",
                iters=400, batch_size=4, train_samples=800, val_samples=150, seeds=(0, 1, 2),
                parallel=2, threads=1, device="cpu"),
    # the same comparison at a larger budget on one CUDA device
    "gpu": dict(student="train_student", distill="distill", teacher="train_teacher",
                iters=3000, batch_size=8, train_samples=4000, val_samples=500, seeds=(0, 1, 2),
                parallel=1, threads=None, device="cuda"),
    # tiny CI models: checks the script end to end in seconds
    "smoke": dict(student="train_student_ci", distill="distill_ci", teacher="train_teacher_ci",
                  iters=2, batch_size=2, train_samples=4, val_samples=2, seeds=(0,),
                  parallel=1, threads=1, device="cpu", options=("baseline", "heatmap_kd")),
}


# --- one run ---------------------------------------------------------------------------------


def run_command(preset: dict, option: str, seed: int, work_dir: Path, cache_dir: Path,
                teacher_ckpt: str | None) -> list[str]:
    """The bevdistill command line of one (option, seed) run."""
    overrides = OPTIONS[option][1]
    common = {
        "seed": seed,
        "train_dataset.num_samples": preset["train_samples"],
        "train_dataset.cache_dir": str(cache_dir),
        "val_dataset.num_samples": preset["val_samples"],
        "val_dataset.cache_dir": str(cache_dir),
        "data.batch_size": preset["batch_size"],
        "data.val_batch_size": preset["batch_size"],
        "data.num_workers": 0,
        "schedule.val_interval": preset["iters"],  # validate once, at the end
        "schedule.checkpoint_interval": preset["iters"],
        "schedule.log_interval": max(1, min(50, preset["iters"])),
    }
    if overrides is None:
        head = ["train", "student", preset["student"]]
    else:
        head = ["distill", preset["distill"]]
        common.update(overrides)
        if teacher_ckpt is not None:
            common["model.teacher_ckpt"] = teacher_ckpt
    return [sys.executable, "-m", "bevdistill", *head, "--work-dir", str(work_dir),
            "--max-iters", str(preset["iters"]), "--cfg-options", *cfg_option_args(common)]


def teacher_command(preset: dict, teacher_ckpt: str, work_dir: Path, cache_dir: Path) -> list[str]:
    return [sys.executable, "-m", "bevdistill", "evaluate", preset["teacher"], teacher_ckpt,
            "--work-dir", str(work_dir), "--cfg-options",
            f"val_dataset.num_samples={preset['val_samples']}",
            f"val_dataset.cache_dir={cache_dir}", f"data.val_batch_size={preset['batch_size']}",
            "data.num_workers=0"]


def _env(preset: dict) -> dict[str, str]:
    env = dict(os.environ)
    if preset["threads"] is not None:
        env["OMP_NUM_THREADS"] = str(preset["threads"])
        env["MKL_NUM_THREADS"] = str(preset["threads"])
    if preset["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_all(jobs: list[tuple[str, list[str], Path]], preset: dict) -> None:
    """Run ``(name, command, work_dir)`` jobs, ``preset['parallel']`` at a time; a job whose
    ``metrics.json`` exists is skipped. Each job logs to ``work_dir/run.log``."""
    pending = [j for j in jobs if not (j[2] / "metrics.json").is_file()]
    print(f"{len(jobs) - len(pending)} of {len(jobs)} runs already done; {len(pending)} to go",
          flush=True)
    running: list[tuple[str, subprocess.Popen, float, Any]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < preset["parallel"]:
            name, cmd, work_dir = pending.pop(0)
            work_dir.mkdir(parents=True, exist_ok=True)
            log = open(work_dir / "run.log", "w")  # noqa: SIM115 - closed when the job ends
            log.write(" ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(preset),
                                    cwd=REPO_ROOT)
            running.append((name, proc, time.time(), log))
            print(f"[{time.strftime('%H:%M:%S')}] start {name}", flush=True)
        time.sleep(0.2)
        for job in list(running):
            name, proc, started, log = job
            if proc.poll() is None:
                continue
            running.remove(job)
            log.close()
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            if proc.returncode != 0:
                failed.append(name)
            print(f"[{time.strftime('%H:%M:%S')}] {status} {name} in {time.time() - started:.0f}s",
                  flush=True)
    if failed:
        raise RuntimeError(f"runs failed: {failed}; see run.log in their work dirs and rerun "
                           "the same command (finished runs are skipped)")


def teacher_weights(teacher_ckpt: str, work_root: Path) -> str:
    """``teacher_ckpt`` itself when plain ``torch.load(weights_only=True)`` reads it (what the
    Distiller does); otherwise a weights-only copy (an mmengine Runner checkpoint also holds the
    message hub, which plain weights-only loading refuses)."""
    import pickle

    import torch

    from bevdistill.engine.checkpoint import read_state_dict

    try:
        torch.load(teacher_ckpt, map_location="cpu", weights_only=True)
        return teacher_ckpt
    except pickle.UnpicklingError:
        pass  # Python objects besides tensors: extract the weights below
    out = work_root / "teacher_weights.pth"
    if not out.is_file():
        work_root.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        torch.save({"state_dict": read_state_dict(teacher_ckpt, "teacher checkpoint")}, tmp)
        os.replace(tmp, out)
    return str(out)


# --- scans generated once -------------------------------------------------------------------


def _warm_one(args: tuple[str, int, str, int]) -> None:
    from bevdistill.data.dataset import SyntheticBEVDataset

    split, num_samples, cache_dir, index = args
    SyntheticBEVDataset(split=split, num_samples=num_samples, cache_dir=cache_dir).raw_sample(index)


def warm_cache(preset: dict, cache_dir: Path) -> float:
    """Generate every train/val scan the runs read, ``parallel`` processes at a time."""
    started = time.time()
    tasks = [(split, n, str(cache_dir), i)
             for split, n in (("train", preset["train_samples"]), ("val", preset["val_samples"]))
             for i in range(n)]
    if preset["parallel"] > 1:
        with multiprocessing.get_context("fork").Pool(preset["parallel"]) as pool:
            pool.map(_warm_one, tasks, chunksize=8)
    else:
        for task in tasks:
            _warm_one(task)
    return time.time() - started


# --- results ---------------------------------------------------------------------------------


def _metrics(work_dir: Path, iters: int | None = None) -> dict:
    record = json.loads((work_dir / "metrics.json").read_text())
    if iters is not None and record.get("max_iters") != iters:
        raise ValueError(f"{work_dir} was trained for {record.get('max_iters')} iterations, not "
                         f"{iters}: use another --work-root for another budget")
    metrics = record["metrics"]
    if not metrics or "bev/mAP" not in metrics:
        raise KeyError(f"{work_dir / 'metrics.json'} has no 'bev/mAP' (metrics: {metrics})")
    return {"mAP": metrics["bev/mAP"],
            **{f"AP_{c}": metrics.get(f"bev/AP_{c}") for c in CLASS_NAMES},
            "duration_s": record.get("duration_s")}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(options: list[str], seeds: list[int], runs: dict, teacher: dict | None) -> list[dict]:
    base = [runs["baseline"][s]["mAP"] for s in seeds]
    base_mean, base_std = _mean_std(base)
    t_map = teacher["mAP"] if teacher else None
    rows = []
    for option in options:
        per_seed = [runs[option][s] for s in seeds]
        maps = [r["mAP"] for r in per_seed]
        mean, std = _mean_std(maps)
        row: dict[str, Any] = {"option": option, "description": OPTIONS[option][0],
                               "mAP_per_seed": maps, "mAP_mean": mean, "mAP_std": std}
        for c in CLASS_NAMES:
            vals = [r[f"AP_{c}"] for r in per_seed]
            row[f"AP_{c}_mean"], row[f"AP_{c}_std"] = _mean_std(vals)
        row["train_s_mean"] = statistics.fmean(r["duration_s"] or 0.0 for r in per_seed)
        if option != "baseline":
            gains = [m - b for m, b in zip(maps, base, strict=True)]
            gain, gain_std = _mean_std(gains)
            spread = max(std, base_std)
            row.update(gain=gain, gain_std_paired=gain_std, seed_spread=spread,
                       gain_exceeds_2x_spread=gain > 2 * spread)
            if t_map is not None and t_map != base_mean:
                row["gap_recovered"] = (mean - base_mean) / (t_map - base_mean)
        rows.append(row)
    return rows


def markdown(rows: list[dict], teacher: dict | None, seeds: list[int]) -> str:
    head = ["option", f"val mAP (mean ± std, {len(seeds)} seeds)",
            *[f"AP {c}" for c in CLASS_NAMES], "gain", "paired std", "gain > 2·spread",
            "gap recovered"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["option"], f"{r['mAP_mean']:.4f} ± {r['mAP_std']:.4f}",
                 *[f"{r[f'AP_{c}_mean']:.4f}" for c in CLASS_NAMES]]
        if r["option"] == "baseline":
            cells += ["-", "-", "-", "-"]
        else:
            rec = r.get("gap_recovered")
            cells += [f"{r['gain']:+.4f}", f"{r['gain_std_paired']:.4f}",
                      "yes" if r["gain_exceeds_2x_spread"] else "no",
                      f"{100 * rec:.0f}%" if rec is not None else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    if teacher:
        cells = ["teacher", f"{teacher['mAP']:.4f}",
                 *[f"{teacher[f'AP_{c}']:.4f}" for c in CLASS_NAMES], "", "", "", "100%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--smoke", action="store_true", help="CI models, 2 iterations, 1 seed, "
                        "2 options: checks that the script runs")
    parser.add_argument("--iters", type=int, help="iterations per run (default: the preset's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the preset's)")
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS),
                        help="options to run (baseline is always included)")
    parser.add_argument("--parallel", type=int, help="runs at a time (default: the preset's)")
    parser.add_argument("--teacher-ckpt", help=f"teacher weights (default: {SHIPPED_TEACHER}; "
                        "smoke: none, a random teacher)")
    parser.add_argument("--work-root", type=Path,
                        help="runs' work dirs (default: work_dirs/distill_gain_<preset>)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "distill_gain.json")
    args = parser.parse_args(argv)

    name = "smoke" if args.smoke else args.preset
    preset = dict(PRESETS[name])
    for key in ("iters", "parallel"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    seeds = list(args.seeds or preset["seeds"])
    options = list(args.options or preset.get("options", OPTIONS))
    if "baseline" not in options:
        options.insert(0, "baseline")
    teacher_ckpt = args.teacher_ckpt
    if teacher_ckpt is None and not args.smoke:
        if not SHIPPED_TEACHER.is_file():
            raise SystemExit(f"no teacher at {SHIPPED_TEACHER}; pass --teacher-ckpt PATH")
        teacher_ckpt = str(SHIPPED_TEACHER)
    if teacher_ckpt is not None:
        teacher_ckpt = str(Path(teacher_ckpt).resolve())
    # The budget is part of the default folder: a resumed run must not mix budgets.
    default_root = REPO_ROOT / "work_dirs" / f"distill_gain_{name}_it{preset['iters']}"
    work_root = (args.work_root or default_root).resolve()
    # Scans depend on the world, not on the budget: shared by every work root beside it.
    cache_dir = work_root.parent / f"scan_cache_{name}"
    teacher_source = teacher_ckpt
    if teacher_ckpt is not None:
        teacher_ckpt = teacher_weights(teacher_ckpt, work_root)

    started = time.time()
    record = provenance(MODULE, argv)
    warm_s = warm_cache(preset, cache_dir)
    print(f"scans ready in {cache_dir} ({warm_s:.0f}s)", flush=True)

    jobs = []
    if teacher_ckpt is not None:
        jobs.append(("teacher", teacher_command(preset, teacher_ckpt, work_root / "teacher",
                                                cache_dir), work_root / "teacher"))
    for seed in seeds:  # seed-major: a partial run holds every option for the first seeds
        for option in options:
            work_dir = work_root / option / f"seed{seed}"
            cmd = run_command(preset, option, seed, work_dir, cache_dir, teacher_ckpt)
            jobs.append((f"{option}/seed{seed}", cmd, work_dir))
    run_all(jobs, preset)

    runs = {o: {s: _metrics(work_root / o / f"seed{s}", preset["iters"]) for s in seeds}
            for o in options}
    teacher = _metrics(work_root / "teacher") if teacher_ckpt is not None else None
    rows = summarise(options, seeds, runs, teacher)
    distilled = [r for r in rows if r["option"] != "baseline"]
    best = max(distilled, key=lambda r: r["mAP_mean"]) if distilled else None
    table = markdown(rows, teacher, seeds)
    record.update(
        preset=name,
        budget={k: preset[k] for k in ("iters", "batch_size", "train_samples", "val_samples",
                                       "parallel", "threads", "device")},
        seeds=seeds,
        teacher_ckpt=teacher_source,
        teacher_weights_used=teacher_ckpt,
        teacher=teacher,
        options={o: {"description": OPTIONS[o][0], "cfg_options": OPTIONS[o][1]}
                 for o in options},
        example_commands={o: " ".join(run_command(preset, o, seeds[0], work_root / o /
                                                  f"seed{seeds[0]}", cache_dir, teacher_ckpt)[1:])
                          for o in options},
        runs={o: {str(s): runs[o][s] for s in seeds} for o in options},
        results=rows,
        best_option=best["option"] if best else None,
        goal={"gap_recovered_at_least": 0.5, "gain_exceeds_2x_seed_spread": True,
              "met": bool(best and best.get("gap_recovered", 0) >= 0.5
                          and best["gain_exceeds_2x_spread"])},
        scan_generation_s=warm_s,
        wall_s=time.time() - started,
        markdown=table,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table)
    print(f"-> {args.out}")
    return record


if __name__ == "__main__":
    main()
