"""Release tooling: ship a finished run as one of the package's models, with its model card.

The run's weights (a distill run's student part) become ``bevdistill/assets/NAME.pth`` and its
record becomes ``NAME_card.json`` (command, seed, commit, training time, validation mAP, the
weights' SHA-256). It lives here, outside the package, so that nothing a notebook imports carries
release code; what reads and checks the shipped models stays in :mod:`bevdistill.pretrained`.

    bevdistill train teacher train_teacher --work-dir runs/teacher --max-iters 1500
    .venv/bin/python -m benchmarks.ship runs/teacher [--name teacher]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from bevdistill import pretrained
from bevdistill.engine.checkpoint import atomic_write_bytes, file_sha256, read_state_dict
from bevdistill.engine.report import portable_command, write_json
from bevdistill.engine.runner import load_experiment
from bevdistill.models.build import model_config
from bevdistill.pretrained import ASSETS, SHIPPED, SUBSET_SAMPLES, TEACHER_EXPERIMENT


def _model_weights(record: dict) -> dict[str, torch.Tensor]:
    """The detector's weights from a run's last checkpoint (a distill run's student part)."""
    state = read_state_dict(record["checkpoint"], f"{record['role']} run checkpoint")
    if record["role"] == "distill":
        state = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    return state


def ship(run_dir: Path, out_dir: Path = ASSETS, name: str = "teacher",
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy a finished run's weights (weights only; a distill run's student) into ``out_dir`` as
    ``NAME.pth`` and write ``NAME_card.json``; ``extra`` adds fields (e.g. held-out scores)."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; add it to SHIPPED ({sorted(SHIPPED)})")
    experiment, preset, what = SHIPPED[name]
    record = json.loads((run_dir / "metrics.json").read_text())
    if record.get("config") != experiment:
        raise ValueError(f"{run_dir} ran {record.get('config')!r}; {name} is trained with "
                         f"{experiment!r}")
    state = _model_weights(record)
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in state.items()}, buffer)
    weights = out_dir / f"{name}.pth"
    atomic_write_bytes(buffer.getvalue(), str(weights))
    card = {
        "model": model_config(preset)["type"],  # the preset's class, e.g. BEVFusionDetector
        "name": name,
        "what": what,
        "role": record["role"],
        "preset": preset,
        "experiment": record["config"],
        "command": portable_command(record["argv"]),
        "seed": record["seed"],
        "commit": record["commit"],
        "iters": record["iters_done"],
        "training_time_s": record["duration_s"],
        "device": record["device"],
        "torch": record["torch"],
        "parameters": sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k),
        "weights_sha256": file_sha256(weights),
        # Run records without it predate world versions: version 1.
        "world_version": int(record.get("world_version") or 1),
        "dir_classifier": any(k.startswith("bbox_head.dir_head.") for k in state),
        "val": {"num_samples": record.get("cfg_options", {}).get(
                    "val_dataset.num_samples",
                    load_experiment(record["config_path"]).val_dataset.num_samples),
                "metrics": record["metrics"]},
        "shipped_with": f"python -m benchmarks.ship RUN_DIR --name {name}",
        **dict(extra or {}),
    }
    if name == "teacher":  # the subset score tests/test_pretrained.py reproduces
        card["val_subset"] = {
            "num_samples": SUBSET_SAMPLES,
            "command": f"bevdistill evaluate {TEACHER_EXPERIMENT} bevdistill/assets/teacher.pth "
                       f"--num-samples {SUBSET_SAMPLES}",
            "metrics": pretrained.evaluate_subset(weights),
        }
    write_json(out_dir / f"{name}_card.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ship a finished run as one of the package's models.")
    parser.add_argument("run_dir", type=Path, help="work dir of the finished run")
    parser.add_argument("--name", default="teacher", choices=sorted(SHIPPED),
                        help="which shipped model the run becomes (default: teacher)")
    args = parser.parse_args(argv)
    card = ship(args.run_dir, name=args.name)
    print(json.dumps({k: card[k] for k in ("command", "iters", "training_time_s")}, indent=2))
    print("val mAP:", card["val"]["metrics"].get("bev/mAP"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
