"""Issue 19's fair comparison, as pure functions of recorded curves and scores.

* :func:`plateau_check`: has a run reached its plateau? Over the last quarter of its schedule
  its tuning curve (mean over seeds) rises less than the seed spread of its final tuning mAP,
  or less than a fixed tolerance where one seed gives no spread.
* :func:`compute_matched_iters`: the iterations of the student alone that cost what the
  distilled run cost, from the seconds per iteration both logged in the same invocation.
* :func:`fair_rows`: the summary rows, each against the student alone at its plateau
  (baseline a: ``gain``, ``gap_recovered``) and the compute-matched student alone (baseline b:
  ``gain_vs_compute_matched``), per class with paired differences and their spread.
"""

from __future__ import annotations

import statistics
from typing import Any

from bevdistill.data.classes import CLASS_NAMES

PLATEAU, COMPUTE_MATCHED = "plateau", "compute_matched"
COMPUTE_MATCHED_OPTION = "baseline_compute_matched"  # bevdistill.viz.findings reads this name
TAIL = 0.25  # the share of the schedule over which a plateaued curve no longer rises
TOLERANCE = 0.005  # mAP: the rise allowed where one seed gives no spread


def _value_at(curve: list[dict], it: float) -> float | None:
    """The tuning mAP of the last validation at or before iteration ``it``."""
    before = [h for h in curve if h["iter"] <= it]
    return before[-1]["mAP"] if before else None


def plateau_check(curves: list[list[dict]], tolerance: float = TOLERANCE,
                  tail: float = TAIL) -> dict[str, Any]:
    """Whether the runs whose tuning curves are ``curves`` (one per seed, the same schedule,
    each a list of ``{"iter", "mAP"}``) are at their plateau: the mean curve rises less over
    its last ``tail`` than the seed spread (std of the final tuning mAP; ``tolerance`` with one
    seed). Returns the verdict with the figures it rests on."""
    if not curves or not all(curves):
        raise ValueError("plateau_check needs one non-empty tuning curve per seed")
    end = min(c[-1]["iter"] for c in curves)
    begin = end * (1 - tail)
    starts = [_value_at(c, begin) for c in curves]
    finals = [_value_at(c, end) for c in curves]
    spread = statistics.stdev(finals) if len(finals) > 1 else None
    threshold = spread if spread is not None else tolerance
    out = dict(from_iter=begin, to_iter=end, seeds=len(curves), threshold=threshold,
               threshold_is="seed spread" if spread is not None else "tolerance", rise=None,
               met=False)
    if any(v is None for v in starts):
        out["why_not"] = (f"no validation at or before iteration {begin:g}, where the last "
                          f"{tail:.0%} of the schedule begins: validate more often")
        return out
    out["rise"] = statistics.fmean(finals) - statistics.fmean(starts)
    out["met"] = out["rise"] < threshold
    return out


def extended_iters(iters: int, cap: int, growth: int = 2) -> int | None:
    """The next, longer schedule of a run not yet at its plateau (``None``: at the cap)."""
    return None if iters >= cap else min(cap, iters * growth)


def compute_matched_iters(distilled_iters: int, distilled_step_s: list[float],
                          alone_step_s: list[float]) -> tuple[int, float]:
    """(iterations, ratio): the student alone given the distilled run's compute. ``ratio`` is
    the median seconds per distilled iteration (teacher's forward included) over the median
    per iteration of the student alone, both measured in the same invocation."""
    if not distilled_step_s or not alone_step_s:
        raise ValueError("compute matching needs the logged seconds per iteration of both the "
                         "distilled run and the student alone (their scalars.json has none: "
                         "log_interval longer than the run?)")
    ratio = statistics.median(distilled_step_s) / statistics.median(alone_step_s)
    if ratio <= 0:
        raise ValueError(f"seconds per iteration must be positive, got a ratio of {ratio}")
    return max(1, round(distilled_iters * ratio)), ratio


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _paired(runs: dict[int, dict], ref: dict[int, dict] | None, seeds: list[int],
            key: str) -> tuple[float | None, float | None, float | None]:
    """(mean difference, spread = max of the two std, std of the paired differences) of
    ``key`` over the seeds both hold, or Nones."""
    shared = [s for s in seeds if ref is not None and s in ref]
    if not shared:
        return None, None, None
    diffs = [runs[s][key] - ref[s][key] for s in shared]
    spread = max(_std([runs[s][key] for s in shared]), _std([ref[s][key] for s in shared]))
    return statistics.fmean(diffs), spread, _std(diffs)


def fair_rows(scenario: str, option_seeds: dict[str, list[int]],
              scores: dict[tuple[str, str], dict[int, dict]], teacher: dict[str, dict],
              terms: dict[str, list[str]], plateau: dict[str, dict], iters: dict[str, int]
              ) -> list[dict]:
    """One row per option (and the compute-matched student alone) and split. ``scores`` maps
    (option, split) to the final scores per seed (``mAP``, ``AP_<class>``); ``option_seeds``
    may include :data:`COMPUTE_MATCHED_OPTION`, whose budget is ``compute_matched`` (every
    other row's is ``plateau``)."""
    rows = []
    for split in ("val", "test"):
        base = scores[("baseline", split)]
        matched = scores.get((COMPUTE_MATCHED_OPTION, split))
        t = teacher.get(split)
        for option, seeds in option_seeds.items():
            runs = scores[(option, split)]
            maps = [runs[s]["mAP"] for s in seeds]
            gain, spread, paired = _paired(runs, base, seeds, "mAP")
            gain_b, spread_b, paired_b = _paired(runs, matched, seeds, "mAP")
            base_mean = statistics.fmean(base[s]["mAP"] for s in seeds)
            significant = option != "baseline" and len(seeds) > 1
            row: dict[str, Any] = dict(
                scenario=scenario, option=option, split=split,
                budget=COMPUTE_MATCHED if option == COMPUTE_MATCHED_OPTION else PLATEAU,
                iters=iters[option], terms=terms[option], seeds=seeds,
                mAP_mean=statistics.fmean(maps), mAP_std=_std(maps), mAP_per_seed=maps,
                gain=gain, seed_spread=spread, paired_spread=paired,
                gain_exceeds_2x_spread=significant and gain > 2 * spread,
                gain_vs_compute_matched=gain_b, spread_vs_compute_matched=spread_b,
                paired_spread_vs_compute_matched=paired_b,
                gain_exceeds_2x_spread_vs_compute_matched=(
                    significant and gain_b is not None and gain_b > 2 * spread_b),
                teacher_mAP=t["mAP"] if t else None,
                gap_recovered=(gain / (t["mAP"] - base_mean)
                               if t and t["mAP"] != base_mean else None),
                plateau=plateau.get(option))
            row["per_class"] = {}
            for c in CLASS_NAMES:
                key = f"AP_{c}"
                row[f"{key}_mean"] = statistics.fmean(runs[s][key] for s in seeds)
                g, sp, pd = _paired(runs, base, seeds, key)
                gb, spb, pdb = _paired(runs, matched, seeds, key)
                row["per_class"][c] = dict(
                    mean=row[f"{key}_mean"], std=_std([runs[s][key] for s in seeds]),
                    gain=g, seed_spread=sp, paired_spread=pd, gain_vs_compute_matched=gb,
                    spread_vs_compute_matched=spb, paired_spread_vs_compute_matched=pdb)
            rows.append(row)
    return rows
