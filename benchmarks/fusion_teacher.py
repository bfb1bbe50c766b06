"""Does a camera + LiDAR fusion teacher beat its LiDAR-only twin? (issue 22, item 3)

Two models, the same 16-beam LiDAR, network, scenes, labels and schedule; the only difference
is BEVFusion's camera branch (six images per scene, ``bevdistill/configs/student_fusion.py``):

* ``fusion``: ``bevdistill train teacher train_fusion_16beam``;
* ``lidar_only``: ``bevdistill train student train_student_16beam`` (the same network minus the
  four camera modules).

Each model trains once per seed (seed-major, so an interrupted invocation holds complete seeds),
validating on the TUNING split (``val``) every ``--eval-interval`` iterations: those curves give
each model's ``plateau`` verdict (:func:`benchmarks._fair_protocol.plateau_check`). Its final
checkpoint is then scored on the HELD-OUT split (``test``) with ``bevdistill evaluate``, and the
fusion model a second time on the same scenes with every camera image black
(``val_dataset.blank_images=True``, see :class:`bevdistill.data.SyntheticBEVDataset`):
``fusion_blank_images`` shows how much of the fusion model's score comes from the cameras.

After the runs, each final checkpoint is loaded in process and the share of ground-truth objects
found (same class, centre within 2 m, score >= 0.3; :func:`bevdistill.viz.bev.found_mask`) is
broken down on the held-out scenes per class, per distance from the ego and per number of
16-beam points inside the box (:func:`bevdistill.viz.gain.found_in_bins`), mean and std over
seeds. ``difference`` is fusion minus lidar_only (paired by seed) and whether it exceeds twice
the larger seed spread; ``cameras_contribution`` is fusion minus fusion_blank_images.
``seconds_per_iter`` (median logged training step of each model) gives the training cost ratio.

Runs are traced and reused as in ``benchmarks/distill_gain.py`` (:mod:`benchmarks.runs`: a
finished run is reused only when commit and command equal this invocation's).

    .venv/bin/python -m benchmarks.fusion_teacher                  # CPU, 2 runs at a time
    .venv/bin/python -m benchmarks.fusion_teacher --smoke --work-root /tmp/ft --out /tmp/ft.json

Writes ``benchmarks/results/fusion_teacher.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _fair_protocol as fair
from benchmarks._distill_options import as_the_cli_reads, cfg_option_args
from benchmarks.distill_gain import _data_args, test_command
from benchmarks.provenance import REPO_ROOT, RESULTS_DIR, provenance
from benchmarks.runs import RunSpec, read_scores, run_all, run_env, scalars_history, step_seconds
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.report import write_json

MODULE = "benchmarks.fusion_teacher"
FUSION, LIDAR, BLANK = "fusion", "lidar_only", "fusion_blank_images"
BLANK_OPTION = {"val_dataset.blank_images": True}  # every camera image black, see the dataset

# model -> (role, experiment); the smoke pair is the CI-sized fusion teacher and its twin
MODELS = {FUSION: ("teacher", "train_fusion_16beam"), LIDAR: ("student", "train_student_16beam")}
SMOKE_MODELS = {FUSION: ("teacher", "train_teacher_fusion_ci"),
                LIDAR: ("teacher", "train_teacher_ci")}

PRESETS: dict[str, dict[str, Any]] = {
    # 2 single-threaded runs at a time on a 2-core machine
    "cpu": dict(iters=3000, eval_interval=500, batch_size=4, train_samples=2000,
                tune_samples=150, test_samples=300, seeds=(0, 1, 2), parallel=2, threads=1,
                device="cpu"),
    # tiny CI models: checks the script end to end in seconds
    "smoke": dict(iters=4, eval_interval=2, batch_size=2, train_samples=4, tune_samples=2,
                  test_samples=2, seeds=(0,), parallel=1, threads=1, device="cpu"),
}

DISTANCE_BINS = (0.0, 10.0, 20.0, 32.0)  # m from the ego; 32+ holds the range's corners
POINT_BINS = (0, 1, 5, 20)  # 16-beam points inside the box: none, 1-4, 5-19, 20 or more
MAP_AGREEMENT = 2e-3  # in-process vs evaluate run; float-level differences may reorder near-equal
# scores, another checkpoint or other scenes move the mAP far more


# --- commands --------------------------------------------------------------------------------


def train_command(role: str, experiment: str, preset: dict, seed: int, work_dir: Path,
                  cache_dir: Path) -> list[str]:
    """The bevdistill command line of one (model, seed) training run: tuning-split validation
    every ``eval_interval`` iterations, one checkpoint at the end (the one scored)."""
    args = {
        "seed": seed,
        "train_dataset.num_samples": preset["train_samples"],
        "train_dataset.cache_dir": str(cache_dir),
        **_data_args(preset, cache_dir, "val", preset["tune_samples"]),
        "data.batch_size": preset["batch_size"],
        "schedule.val_interval": preset["eval_interval"],
        "schedule.checkpoint_interval": preset["iters"],
        "schedule.max_keep_ckpts": 1,
        "schedule.log_interval": max(1, min(50, preset["iters"])),
    }
    return [sys.executable, "-m", "bevdistill", "train", role, experiment,
            "--work-dir", str(work_dir), "--max-iters", str(preset["iters"]),
            "--cfg-options", *cfg_option_args(args)]


def run_specs(models: dict, preset: dict, seeds: list[int], work_root: Path,
              cache_dir: Path) -> list[RunSpec]:
    """Seed-major: every model's training run, its held-out scoring and (fusion) the scoring
    with black images, seed after seed."""
    specs = []
    for seed in seeds:
        for model, (role, experiment) in models.items():
            run_dir = work_root / model / f"seed{seed}"
            name = f"{model}/seed{seed}"
            specs.append(RunSpec(name, train_command(role, experiment, preset, seed, run_dir,
                                                     cache_dir), run_dir))
            checkpoint = run_dir / f"iter_{preset['iters']}.pth"
            specs.append(RunSpec(f"{name}/test", test_command(
                experiment, preset, checkpoint, run_dir / "test", cache_dir), run_dir / "test",
                after=name))
            if model == FUSION:
                specs.append(RunSpec(f"{name}/test_blank_images", test_command(
                    experiment, preset, checkpoint, run_dir / "test_blank_images", cache_dir,
                    BLANK_OPTION), run_dir / "test_blank_images", after=name))
    return specs


# --- breakdowns ------------------------------------------------------------------------------


def test_dataset(experiment: str, preset: dict, cache_dir: Path, blank: bool = False):
    """The held-out scenes the ``bevdistill evaluate`` runs scored (same overrides)."""
    from mmengine.registry import DATASETS

    from bevdistill.engine.runner import load_experiment

    args = {**(BLANK_OPTION if blank else {}),
            **_data_args(preset, cache_dir, "test", preset["test_samples"])}
    exp = load_experiment(experiment, as_the_cli_reads(args))
    # read from the evaluate runs' disk cache each time, not kept in memory: hundreds of scenes
    # with their 64-beam scans would hold gigabytes for the few passes made over them
    return DATASETS.build({**exp.val_dataset.to_dict(), "cache": False})


def breakdown(objects: dict, found) -> dict[str, dict[str, tuple[int, int]]]:
    """``(found, objects)`` per class, distance bin and points bin, for one model and seed."""
    from bevdistill.viz.gain import bin_labels, found_in_bins

    per_class = found_in_bins(objects["label"], found, range(len(CLASS_NAMES)))
    return {
        "per_class": dict(zip(CLASS_NAMES, per_class, strict=True)),
        "found_by_distance": dict(zip(bin_labels(DISTANCE_BINS, unit="m"), found_in_bins(
            objects["distance"], found, DISTANCE_BINS), strict=True)),
        "found_by_points": dict(zip(bin_labels(POINT_BINS, integer=True), found_in_bins(
            objects["points"], found, POINT_BINS), strict=True)),
    }


def breakdowns(models: dict, preset: dict, seeds: list[int], work_root: Path, cache_dir: Path,
               scores: dict[str, dict[int, dict]]) -> dict[str, dict[int, dict]]:
    """Per model (and the fusion model on black images) and seed, :func:`breakdown` of its
    final checkpoint on the held-out scenes. The in-process predictions must give the mAP the
    ``bevdistill evaluate`` run wrote (``scores``): else they were not made on the same scenes
    or by the same model, and the breakdowns would describe something else."""
    from benchmarks.heading_error import load_run
    from bevdistill.engine.metric import evaluate_detections, flatten_results
    from bevdistill.viz.gain import found_objects, ground_truth_objects, predict_scenes

    out: dict[str, dict[int, dict]] = {}
    for model, (_, experiment) in models.items():
        scored = [(model, False)] + ([(BLANK, True)] if model == FUSION else [])
        for name, blank in scored:
            dataset = test_dataset(experiment, preset, cache_dir, blank)
            objects = ground_truth_objects(dataset, len(dataset))
            for seed in seeds:
                net, view, _, _ = load_run(work_root / model / f"seed{seed}")
                preds, samples = predict_scenes(dataset, net, len(dataset), view,
                                                preset["batch_size"])
                m_ap = flatten_results(evaluate_detections(preds, samples))["mAP"]
                if abs(m_ap - scores[name][seed]["mAP"]) > MAP_AGREEMENT:
                    raise RuntimeError(
                        f"{name} seed {seed}: the in-process predictions score mAP {m_ap:.4f} "
                        f"on the held-out scenes, its evaluate run wrote "
                        f"{scores[name][seed]['mAP']:.4f}: the breakdown would not describe "
                        f"the scored model (a change in the runs' overrides or the dataset?)")
                out.setdefault(name, {})[seed] = breakdown(objects,
                                                           found_objects(preds, samples))
    return out


# --- results ---------------------------------------------------------------------------------


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _shares(per_seed: list[dict[str, tuple[int, int]]]) -> dict[str, dict]:
    """Mean and std over seeds of the share found, per bin (``None`` for an empty bin)."""
    out = {}
    for key in per_seed[0]:
        shares = [found / total for found, total in (s[key] for s in per_seed) if total]
        out[key] = {"objects": per_seed[0][key][1],
                    "found_mean": statistics.fmean(shares) if shares else None,
                    "found_std": _std(shares) if shares else None,
                    "found_per_seed": shares}
    return out


def summary_row(model: str, seeds: list[int], scores: dict[int, dict],
                found: dict[int, dict]) -> dict[str, Any]:
    """One row of ``summary``: held-out mAP and AP per class over seeds, and the found shares."""
    maps = [scores[s]["mAP"] for s in seeds]
    row: dict[str, Any] = dict(model=model, split="test", mAP_mean=statistics.fmean(maps),
                               seed_spread=_std(maps), seeds=seeds, mAP_per_seed=maps)
    for c in CLASS_NAMES:
        row[f"AP_{c}_mean"] = statistics.fmean(scores[s][f"AP_{c}"] for s in seeds)
    class_found = _shares([found[s]["per_class"] for s in seeds])
    row["per_class"] = {c: {"AP_mean": row[f"AP_{c}_mean"],
                            "AP_std": _std([scores[s][f"AP_{c}"] for s in seeds]),
                            **class_found[c]} for c in CLASS_NAMES}
    for key in ("found_by_distance", "found_by_points"):
        row[key] = _shares([found[s][key] for s in seeds])
    return row


def difference(scores: dict[str, dict[int, dict]], a: str, b: str, seeds: list[int]) -> dict:
    """``a`` minus ``b`` on the held-out mAP, paired by seed: mean, paired std, and whether the
    mean's size exceeds twice the larger seed spread, whichever its sign (never with one seed:
    it has no spread)."""
    mean, spread, paired = fair._paired(scores[a], scores[b], seeds, "mAP")
    return {"of": a, "minus": b, "mAP_mean": mean, "paired_std": paired, "seed_spread": spread,
            "exceeds_2x_spread": len(seeds) > 1 and abs(mean) > 2 * spread,
            "per_class": {c: fair._paired(scores[a], scores[b], seeds, f"AP_{c}")[0]
                          for c in CLASS_NAMES}}


def _table(rows: list[dict], columns: dict[str, Any]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for cell in columns.values()) + " |" for r in rows]
    return lines


def _share(cell: dict) -> str:
    return "-" if cell["found_mean"] is None else f"{cell['found_mean']:.0%}"


def markdown(rows: list[dict], diff: dict, cameras: dict, seconds: dict, plateau: dict) -> str:
    """The held-out mAP and AP per class with the share found by distance; the share found by
    16-beam points in the box; the differences, plateau verdicts and the training cost."""
    first = rows[0]
    by_distance = {
        "model": lambda r: r["model"],
        "mAP (mean ± seed std)": lambda r: f"{r['mAP_mean']:.3f} ± {r['seed_spread']:.3f}",
        **{f"AP {c}": (lambda r, c=c: f"{r[f'AP_{c}_mean']:.3f}") for c in CLASS_NAMES},
        **{f"found {d}": (lambda r, d=d: _share(r["found_by_distance"][d]))
           for d in first["found_by_distance"]}}
    by_points = {
        "model": lambda r: r["model"],
        **{f"found, {b} points in the box": (lambda r, b=b: _share(r["found_by_points"][b]))
           for b in first["found_by_points"]}}
    objects = {b: cell["objects"] for b, cell in first["found_by_points"].items()}
    verdict = lambda d: "yes" if d["exceeds_2x_spread"] else "no"  # noqa: E731
    at_plateau = ", ".join(f"{m} {'yes' if p['met'] else 'no'}" for m, p in plateau.items())
    return "\n".join([
        *_table(rows, by_distance), "",
        *_table(rows, by_points), "",
        f"Objects per points bin (16-beam points inside the box): "
        f"{', '.join(f'{b}: {n}' for b, n in objects.items())}. Found: same class, centre "
        f"within 2 m, score >= 0.3.", "",
        f"fusion - lidar_only: {diff['mAP_mean']:+.3f} mAP (paired std {diff['paired_std']:.3f}; "
        f"exceeds 2x seed spread: {verdict(diff)}). fusion - fusion with black images: "
        f"{cameras['mAP_mean']:+.3f} mAP (exceeds 2x seed spread: {verdict(cameras)}). At the "
        f"plateau (tuning curves): {at_plateau}. Seconds per training step: fusion "
        f"{seconds[FUSION]:.3f}, lidar_only {seconds[LIDAR]:.3f} "
        f"({seconds[FUSION] / seconds[LIDAR]:.1f}x)."])


# --- the benchmark ---------------------------------------------------------------------------


# The preset keys a command-line flag of the same name overrides.
OVERRIDABLE = ("iters", "eval_interval", "train_samples", "tune_samples", "test_samples",
               "batch_size", "parallel")

def _parser() -> argparse.ArgumentParser:
    cpu = PRESETS["cpu"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="CI models, a few iterations, 2 scenes, 1 seed")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"default {list(cpu['seeds'])}")
    for key in OVERRIDABLE:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int,
                            help=f"default {cpu[key]} (smoke: {PRESETS['smoke'][key]})")
    parser.add_argument("--work-root", type=Path, help="runs' work dirs (default: "
                        "work_dirs/fusion_teacher/cpu or .../smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "fusion_teacher.json")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    preset_name = "smoke" if args.smoke else "cpu"
    preset = dict(PRESETS[preset_name])
    for key in OVERRIDABLE:
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    if preset["iters"] % preset["eval_interval"]:
        raise SystemExit(f"--eval-interval ({preset['eval_interval']}) must divide --iters "
                         f"({preset['iters']}): the last validation ends the tuning curve")
    seeds = list(args.seeds or preset["seeds"])
    models = SMOKE_MODELS if args.smoke else MODELS
    work_root = (args.work_root or REPO_ROOT / "work_dirs" / "fusion_teacher" / preset_name
                 ).resolve()
    cache_dir = work_root.parent / "scan_cache"
    record = provenance(MODULE, argv)
    started = time.time()

    runs = run_all(run_specs(models, preset, seeds, work_root, cache_dir),
                   parallel=preset["parallel"], env=run_env(preset), cwd=REPO_ROOT)
    curves = {m: {str(s): scalars_history(work_root / m / f"seed{s}") for s in seeds}
              for m in models}
    plateau = {m: fair.plateau_check(list(curves[m].values())) for m in models}
    scores = {m: {s: read_scores(work_root / m / f"seed{s}" / "test" / "metrics.json")
                  for s in seeds} for m in models}
    scores[BLANK] = {s: read_scores(work_root / FUSION / f"seed{s}" / "test_blank_images"
                                    / "metrics.json") for s in seeds}
    found = breakdowns(models, preset, seeds, work_root, cache_dir, scores)
    rows = [summary_row(m, seeds, scores[m], found[m]) for m in (FUSION, LIDAR, BLANK)]
    step_s = {m: step_seconds([work_root / m / f"seed{s}" for s in seeds]) for m in models}
    missing = [m for m, v in step_s.items() if not v]
    if missing:
        raise RuntimeError(f"the runs of {missing} logged no training step: is "
                           "schedule.log_interval longer than the run?")
    seconds = {m: statistics.median(v) for m, v in step_s.items()}
    diff = difference(scores, FUSION, LIDAR, seeds)
    cameras = difference(scores, FUSION, BLANK, seeds)
    table = markdown(rows, diff, cameras, seconds, plateau)
    result = {
        "benchmark": "fusion_teacher", **record,
        "what": "camera + LiDAR fusion vs the same network without its camera branch, on the "
                "same 16-beam LiDAR, scenes and schedule; held-out (test) split",
        "experiments": {m: {"role": role, "experiment": exp} for m, (role, exp) in models.items()},
        "blank_images": "every camera image black (zeros), scans and calibration unchanged: "
                        "val_dataset.blank_images=True",
        "budget": {k: preset[k] for k in ("iters", "eval_interval", "batch_size", "train_samples",
                                          "tune_samples", "test_samples", "parallel", "threads",
                                          "device")},
        "seeds": seeds, "found_rule": "same class, BEV centre within 2 m, score >= 0.3",
        "bins": {"distance_m": list(DISTANCE_BINS), "points": list(POINT_BINS)},
        "summary": rows, "difference": diff, "cameras_contribution": cameras,
        "plateau": plateau,
        "seconds_per_iter": {**seconds, "ratio_fusion_to_lidar_only": seconds[FUSION]
                             / seconds[LIDAR],
                             "how": "median logged seconds per training iteration (data loading "
                                    "included) over every seed's run"},
        "runs": runs, "curves": curves, "wall_s": round(time.time() - started, 1),
        "markdown": table,
    }
    write_json(args.out, result)
    print(table)
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main()
