"""Diagnosis rate of the checkers on tests/mistakes/later_set.py (issue 20's evaluation protocol).

The later set was written after the probes were final. "Before": the package and the later set
at commit BEFORE, the first measurement, before anything was changed for it; "after": this
tree. Both are measured in fresh subprocesses (the "before" tree exported with ``git archive``).

Per wrong answer: right (the checker names exactly the expected root causes), misleading (it
names a cause that is not among them), incomplete (some expected causes unnamed, none wrong),
accepted (the wrong answer passes). Per correct variant: flagged (it fails or gets a diagnosis).

Run: OMP_NUM_THREADS=1 python -m benchmarks.diagnosis_rate   (writes benchmarks/results/diagnosis_rate.json)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "cdf7088"  # the later set's first commit: probes final, nothing changed for the set yet


def _measure() -> dict:
    import warnings

    warnings.simplefilter("ignore")
    from mistakes.later_set import CORRECT, WRONG

    from bevdistill.exercises.steps import EXERCISES, resolve

    def check(name):
        return resolve(EXERCISES[name.split(":")[0]].checker)

    rows, counts = [], {"right": 0, "misleading": 0, "incomplete": 0, "accepted": 0, "flagged": 0}
    for m in WRONG:
        result = check(m.name)(m.impl, verbose=False)
        named, expected = set(result.causes), set(m.causes)
        verdict = ("accepted" if result.passed else "right" if named == expected
                   else "misleading" if named - expected else "incomplete")
        counts[verdict] += 1
        rows.append({"wrong": m.name, "expected": sorted(expected), "named": sorted(named), "verdict": verdict})
    for m in CORRECT:
        result = check(m.name)(m.impl, verbose=False)
        flagged = not result.passed or result.diagnosis is not None
        counts["flagged"] += flagged
        rows.append({"correct": m.name, "passed": result.passed, "named": list(result.causes), "flagged": flagged})
    import bevdistill

    return {"package": bevdistill.__file__, "wrong_answers": len(WRONG), "correct_variants": len(CORRECT), **counts,
            "right_rate": counts["right"] / len(WRONG), "rows": rows}


def _run(tree: Path) -> dict:
    """``_measure`` with ``tree``'s package and later set (this file's code)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(tree / "tests"), str(ROOT)]),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", "from benchmarks.diagnosis_rate import _measure; "
                           "import json; print(json.dumps(_measure()))"],
                          cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from benchmarks.provenance import provenance

    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "archive", BEFORE, "bevdistill", "tests/mistakes"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        before = _run(Path(folder))
    after = _run(ROOT)
    for label, rec in (("before", before), ("after", after)):
        summary = {k: v for k, v in rec.items() if k != "rows"}
        print(f"{label:6s} {summary}")
    record = {**provenance("benchmarks.diagnosis_rate", []), "before_commit": BEFORE,
              "before": before, "after": after}
    path = ROOT / "benchmarks" / "results" / "diagnosis_rate.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
