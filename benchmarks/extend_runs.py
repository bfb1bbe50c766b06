"""Give one option of a ``distill_gain`` scenario a longer schedule than the fair protocol did.

The fair protocol stops a run once its tuning curve rises less than its seed spread; an option
with a wide spread can stop earlier than the student alone it is compared with. This resumes
that option's runs from their last checkpoint to ``--to-iters`` exactly as the protocol extends
a run (the same ``bevdistill`` command with ``--resume``, the learning-rate schedule rebuilt),
into ``WORK_ROOT/<option>_same_schedule/seed<S>_it<N>``, and scores each on the held-out split.
The result is read by ``benchmarks/distill_breakdown.py --also``; the fair rows of
``distill_gain.json`` are left as they are.

    .venv/bin/python -m benchmarks.extend_runs --scenario fusion_to_lidar --option combined \\
        --from-iters 2000 --to-iters 4000 --work-root work_dirs/distill_gain/fusion_to_lidar_cpu_fair
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import distill_gain as dg
from benchmarks.provenance import REPO_ROOT
from benchmarks.runs import RunSpec, run_all, run_env


def specs_for(scenario: dict, preset: dict, option: str, seeds: list[int], from_iters: int,
              to_iters: int, work_root: Path, cache_dir: Path, teacher_ckpt: str | None
              ) -> list[RunSpec]:
    """Each seed's resumed training run and its held-out scoring."""
    specs = []
    for seed in seeds:
        start = work_root / option / f"seed{seed}" / f"iter_{from_iters}.pth"
        work = work_root / f"{option}_same_schedule" / f"seed{seed}_it{to_iters}"
        name = f"{option}/seed{seed}/it{to_iters}"
        specs.append(RunSpec(name, dg.train_command(
            scenario, {**preset, "iters": to_iters}, option, seed, work, cache_dir, teacher_ckpt,
            None, resume=True), work, start_from=start))
        specs.append(RunSpec(f"{name}/test", dg.test_command(
            dg._experiment(scenario, option), preset, work / f"iter_{to_iters}.pth",
            work / "test", cache_dir, dg._model_args(option, teacher_ckpt)), work / "test",
            after=name))
    return specs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, choices=sorted(dg.SCENARIOS))
    parser.add_argument("--option", default=dg.LEAD)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--from-iters", type=int, required=True,
                        help="the schedule the option's runs ended (their first schedule)")
    parser.add_argument("--to-iters", type=int, required=True)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--work-root", type=Path, required=True,
                        help="the distill_gain invocation's work root (its runs are there)")
    args = parser.parse_args(argv)
    if args.to_iters <= args.from_iters:
        raise SystemExit(f"--to-iters ({args.to_iters}) must exceed --from-iters "
                         f"({args.from_iters}): the runs are resumed to a longer schedule")
    try:
        dg.parse_option(args.option)
    except ValueError as exc:
        raise SystemExit(f"--option: {exc}") from None
    scenario = dg.SCENARIOS[args.scenario]
    preset = {**dg.PRESETS["cpu"], "iters": args.from_iters, "eval_interval": args.eval_interval,
              "parallel": args.parallel}
    preset["equal_iters"] = min(preset["equal_iters"], preset["iters"])
    teacher = scenario["teacher_ckpt"]
    teacher = str(Path(teacher).resolve()) if teacher is not None else None
    work_root = args.work_root.resolve()
    specs = specs_for(scenario, preset, args.option, args.seeds, args.from_iters, args.to_iters,
                      work_root, work_root.parent / "scan_cache", teacher)
    missing = [str(s.start_from) for s in specs if s.start_from and not s.start_from.is_file()]
    if missing:
        raise SystemExit(f"no checkpoint to resume: {missing}; --from-iters must be the "
                         "schedule the option's runs ended, under --work-root (run "
                         "distill_gain first)")
    return run_all(specs, parallel=args.parallel, env=run_env(preset), cwd=REPO_ROOT)


if __name__ == "__main__":
    main()
