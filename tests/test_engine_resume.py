"""A distillation run killed mid-way (SIGKILL, as the OOM killer does) and resumed with ``--resume``
ends with exactly the weights of an uninterrupted run: real data with augmentation, the real
Distiller (student, projectors, optimizer state), the real CLI, torch >= 2.6 ``weights_only``
loading. The interrupted run loads data with 2 worker processes, the reference with none: keyed
augmentation makes the result independent of that too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bevdistill.engine.checkpoint import allow_mmengine_checkpoint_globals

REPO = Path(__file__).resolve().parent.parent
# distill_ci (random teacher), fewer samples: checkpoints at 2 and 4, killed after 5 of 6.
OPTIONS = ["train_dataset.num_samples=6", "val_dataset.num_samples=2"]
WORKERS = ["data.num_workers=2"]


def bevdistill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bevdistill", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def final_weights(work: Path) -> dict[str, torch.Tensor]:
    allow_mmengine_checkpoint_globals()
    return torch.load(work / "iter_6.pth", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    assert torch.__version__ >= "2.6"  # (TorchVersion order) weights_only=True by default
    ref = bevdistill("distill", "distill_ci", "--work-dir", "ref",
                     "--cfg-options", *OPTIONS, "data.num_workers=0", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]

    crashed = bevdistill("distill", "distill_ci", "--work-dir", "run",
                         "--cfg-options", *OPTIONS, *WORKERS, "crash_at_iter=5", cwd=tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "last_checkpoint").read_text() == str(run / "iter_4.pth")
    assert not (run / "iter_6.pth").exists() and not (run / "metrics.json").exists()

    resumed = bevdistill("distill", "distill_ci", "--work-dir", "run",
                         "--resume", "--cfg-options", *OPTIONS, *WORKERS, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "resumed epoch: 0, iter: 4" in log
    assert "moved the keyed sampler past 4 trained batches" in log

    expected, got = final_weights(tmp_path / "ref"), final_weights(run)
    assert expected.keys() == got.keys()
    assert any(k.startswith("student.") for k in expected)
    assert any(k.startswith("distill_loss.") for k in expected)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
