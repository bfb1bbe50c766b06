"""Diagnosis rate of the checkers on tests/mistakes/later_set.py (issue 20's evaluation protocol).

Right cause: the checker names exactly the expected root causes. Misleading: it names a cause
that is not among them. Accepted: a wrong answer passes. Flagged: a correct variant fails.
Run: OMP_NUM_THREADS=1 python -m benchmarks.diagnosis_rate  (writes benchmarks/results/diagnosis_rate.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checker_for(name: str):
    from bevdistill.exercises.steps import EXERCISES, resolve

    return resolve(EXERCISES[name.split(":")[0]].checker)


def rate() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from mistakes.later_set import CORRECT, WRONG

    rows, counts = [], {"right": 0, "misleading": 0, "accepted": 0, "incomplete": 0, "flagged": 0}
    for m in WRONG:
        r = checker_for(m.name)(m.impl, verbose=False)
        named = set(r.causes)
        if r.passed:
            verdict = "accepted"
        elif named == set(m.causes):
            verdict = "right"
        elif named - set(m.causes):
            verdict = "misleading"
        else:
            verdict = "incomplete"
        counts[verdict] += 1
        rows.append({"mistake": m.name, "expected": list(m.causes), "named": sorted(named), "verdict": verdict})
    for m in CORRECT:
        r = checker_for(m.name)(m.impl, verbose=False)
        flagged = not r.passed or r.diagnosis is not None
        counts["flagged"] += flagged
        rows.append({"correct": m.name, "passed": r.passed, "named": list(r.causes)})
    return {"wrong": len(WRONG), "correct": len(CORRECT), **counts,
            "right_rate": counts["right"] / len(WRONG), "rows": rows}


if __name__ == "__main__":
    out = rate()
    for row in out["rows"]:
        print(row)
    print({k: v for k, v in out.items() if k != "rows"})
    path = ROOT / "benchmarks" / "results" / "diagnosis_rate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
