"""DDP on the CPU: ``torchrun --nproc_per_node=2 -m bevdistill distill ... --launcher pytorch`` (gloo)
trains two Distiller replicas (student + projectors; the frozen teacher stays outside DDP) that
end with identical weights. Each rank draws its own half of the keyed sample
stream (tests/test_engine_randomness.py), so equal weights need averaged gradients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bevdistill.engine.checkpoint import allow_mmengine_checkpoint_globals

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_end_with_identical_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "-m", "bevdistill",
        "distill", "distill_ci", "--work-dir", "ddp", "--launcher", "pytorch",
        "--max-iters", "4", "--cfg-options", "save_rank_weights=True",
        "train_dataset.num_samples=8", "val_dataset.num_samples=2",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    work = tmp_path / "ddp"
    record = json.loads((work / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["iters_done"] == 4
    rank0 = torch.load(work / "rank_weights" / "rank0.pth", weights_only=True)
    rank1 = torch.load(work / "rank_weights" / "rank1.pth", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert any(k.startswith("student.") for k in rank0)
    assert any(k.startswith("distill_loss.") for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Replicas are equal because gradients were averaged, not because they never moved.
    allow_mmengine_checkpoint_globals()
    first = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.equal(first[k], rank0[k]) for k in rank0)
