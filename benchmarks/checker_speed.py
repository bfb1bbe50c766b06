"""Wall time of each exercise checker, as a notebook's check cell runs it: before and after the
sandbox and the probes (issue 23, item 7: "the notebooks' check cells still finish in seconds").

Each checker runs on the reference answer (a passing cell) and on one known mistake (a failing
cell, which the old checkers followed with a gallery comparison). The baseline is the package at
commit BASELINE, exported with ``git archive`` into a temporary folder; both trees are measured
in fresh subprocesses of the same interpreter, one after the other, so that the ratio compares
like with like. First call: includes importing the checker's module; then the median of 2 more.

Run: OMP_NUM_THREADS=1 python -m benchmarks.checker_speed   (writes benchmarks/results/checker_speed.json)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "01f5b45"  # the checkers before this work: SIGALRM in the caller, galleries
# checker, reference, (mistake module, mistake name): the failing answer timed
PLAN = [
    ("check_wrapper", "bevdistill.capture:BEVFusionDistillationWrapper", ("step1", "teacher not detached")),
    ("check_projection", "bevdistill.projection:ProjectionMLP", ("step2", "BatchNorm head")),
    ("check_contrastive", "bevdistill.losses.contrastive:ContrastiveLoss", ("step3", "no temperature")),
    ("check_attention", "bevdistill.losses.attention:AttentionTransferLoss", ("step4", "L1 normalisation")),
    ("check_heatmap_kd", "bevdistill.exercises.step5a_response:reference_heatmap_kd", ("step5a", "KL reversed")),
    ("check_distillation_loss", "bevdistill.losses.combined:BEVFusionDistillationLoss",
     ("step5", "alpha ignored")),
    ("check_channels", "bevdistill.exercises.step6a_channels:reference_measure_channels",
     ("step6a", "hooks left behind")),
    ("check_build", "bevdistill.distiller:build_bevfusion_distillation", ("step6", "teacher not frozen")),
]


def _measure() -> dict:
    """In this process: seconds per checker call, the first and the median of two more."""
    import importlib
    import warnings

    warnings.simplefilter("ignore")
    import bevdistill.exercises as ex

    out = {}
    for checker, reference, (module, name) in PLAN:
        mod, attr = reference.split(":")
        ref = getattr(importlib.import_module(mod), attr)
        wrong = next(m.impl for m in importlib.import_module(f"mistakes.{module}").MISTAKES if m.name == name)
        for label, impl in (("pass", ref), ("fail", wrong)):
            times = []
            for _ in range(3):
                started = time.perf_counter()
                result = getattr(ex, checker)(impl, verbose=False)
                times.append(time.perf_counter() - started)
            assert result.passed == (label == "pass"), (checker, label)
            out[f"{checker}/{label}"] = {"first_s": times[0], "median_s": statistics.median(times[1:])}
    import bevdistill

    return {"package": bevdistill.__file__, **out}


def _run(tree: Path) -> dict:
    """``_measure`` with ``tree``'s package (the mistakes and this file from this checkout)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(ROOT / "tests"), str(ROOT)]),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.checker_speed", "--measure"], cwd=tree, env=env,
                          capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("package").startswith(str(tree)), "measured another tree's package"
    return out


def main() -> None:
    from benchmarks.provenance import provenance

    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "archive", BASELINE, "bevdistill"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        before = _run(Path(folder))
    after = _run(ROOT)
    rows = []
    print(f"{'checker / answer':34s} {'before first':>12s} {'after first':>12s} {'before med':>11s} "
          f"{'after med':>10s} {'ratio':>6s}")
    for key in after:
        b, a = before[key], after[key]
        ratio = a["median_s"] / b["median_s"]
        rows.append({"check": key, "before": b, "after": a, "ratio_median": ratio})
        print(f"{key:34s} {b['first_s']:12.3f} {a['first_s']:12.3f} {b['median_s']:11.3f} {a['median_s']:10.3f} "
              f"{ratio:6.2f}")
    record = {**provenance("benchmarks.checker_speed", []), "baseline_commit": BASELINE, "unit": "seconds per checker call", "rows": rows}
    path = ROOT / "benchmarks" / "results" / "checker_speed.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if "--measure" in sys.argv:
        print(json.dumps(_measure()))
    else:
        main()
