"""Ship a benchmark scenario's students (seed 0): the student alone and the chosen option.

Notebook 6 shows them beside their scenario's teacher. Each becomes ``bevdistill/assets/NAME.pth`` with a
model card (:func:`benchmarks.ship.ship`) that also names the benchmark run it came from
and its held-out scores, read from the run's own files; nothing is retrained.

    .venv/bin/python -m benchmarks.ship_students --work-root WORK_ROOT_OF_THE_BENCHMARK \
        [--scenario two_sensor|compression]

``WORK_ROOT`` is the ``--work-root`` the benchmark ran with; the run dirs must be the ones whose
commits ``benchmarks/results/distill_gain.json`` records (checked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.provenance import RESULTS_DIR
from benchmarks.ship import ship
from bevdistill.data.classes import CLASS_NAMES
from bevdistill.engine.report import portable_command

# the names they ship under, per scenario, beside that scenario's teacher
SHIPPED_AS = {
    "two_sensor": {"baseline": "student_16beam", "chosen": "student_16beam_distilled"},
    "compression": {"baseline": "student", "chosen": "student_distilled"},
}


def benchmark_extra(result: dict, scenario: str, option: str, seed: int, run_dir: Path) -> dict:
    """What the card says about the benchmark run: command, option, seed, commit, test scores."""
    sc = result["scenarios"][scenario]
    run = next(r for r in result["runs"]
               if r["scenario"] == scenario and r["name"] == f"{option}/seed{seed}")
    provenance = json.loads((run_dir / "provenance.json").read_text())
    if provenance["commit"] != run["commit"]:
        raise ValueError(f"{run_dir} was made by commit {provenance['commit']}, the result file "
                         f"records {run['commit']}: ship the runs the result file reports")
    scores = {}
    for budget in ("equal", "converged"):
        metrics = json.loads((run_dir / f"test_{budget}" / "metrics.json").read_text())["metrics"]
        scores[budget] = metrics
    return {"benchmark": {
        "made_by": portable_command(sc["provenance"]["command"]), "option": option, "seed": seed,
        "run_commit": run["commit"], "run_dirty": run["dirty"],
        "test_split": {
            "num_samples": sc["budget"]["test_samples"],
            "mAP_end_of_schedule": scores["converged"]["bev/mAP"],
            "mAP_after_equal_budget": scores["equal"]["bev/mAP"],
            **{f"bev/AP_{c}": scores["converged"][f"bev/AP_{c}"] for c in CLASS_NAMES},
        }}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-root", type=Path, required=True)
    parser.add_argument("--scenario", default="two_sensor", choices=sorted(SHIPPED_AS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "distill_gain.json")
    args = parser.parse_args(argv)
    result = json.loads(args.results.read_text())
    # the option the benchmark chose on the tuning split, as its result file records it
    options = {"baseline": "baseline", "chosen": result["scenarios"][args.scenario]["best_option"]}
    names = SHIPPED_AS[args.scenario]
    for role, option in options.items():
        run_dir = args.work_root / option / f"seed{args.seed}"
        extra = benchmark_extra(result, args.scenario, option, args.seed, run_dir)
        card = ship(run_dir, name=names[role], extra=extra)
        print(f"{names[role]} <- {option} seed {args.seed}: held-out mAP "
              f"{card['benchmark']['test_split']['mAP_end_of_schedule']:.3f}")


if __name__ == "__main__":
    main()
