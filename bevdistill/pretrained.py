"""The shipped teacher: a checkpoint trained by this project's own command, with its model card.

Learners see meaningful BEV features at once, without downloading anything. The card records
how the weights were made (command, seed, commit, training time) and the validation mAP,
including the mAP on a fixed validation subset that ``tests/test_pretrained.py`` reproduces.

Ship a new teacher from a finished training run::

    bevdistill train teacher train_teacher --work-dir runs/teacher --max-iters 1500
    python -m bevdistill.pretrained runs/teacher
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ASSETS = Path(__file__).resolve().parent / "assets"
TEACHER_WEIGHTS = ASSETS / "teacher.pth"
TEACHER_CARD = ASSETS / "teacher_card.json"
TEACHER_EXPERIMENT = "train_teacher"  # the experiment config the teacher was trained with
SUBSET_SAMPLES = 48  # the fixed validation subset the card's reproducible mAP is measured on


class TeacherNotShippedError(FileNotFoundError):
    """The package was installed without its teacher asset."""


def teacher_available() -> bool:
    return TEACHER_WEIGHTS.is_file() and TEACHER_CARD.is_file()


def _require_teacher() -> None:
    if not teacher_available():
        raise TeacherNotShippedError(
            f"no shipped teacher at {TEACHER_WEIGHTS}; train one with `bevdistill train teacher "
            "train_teacher --work-dir runs/teacher` and ship it with "
            "`python -m bevdistill.pretrained runs/teacher`"
        )


def teacher_card() -> dict[str, Any]:
    """The model card: how the shipped teacher was trained and how well it detects."""
    _require_teacher()
    return json.loads(TEACHER_CARD.read_text())


def load_teacher(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The shipped teacher, built from its preset and loaded strictly, in eval mode."""
    from bevdistill.engine.checkpoint import read_state_dict
    from bevdistill.models import build_detector

    _require_teacher()
    model = build_detector(teacher_card()["preset"])
    model.load_state_dict(read_state_dict(TEACHER_WEIGHTS, "shipped teacher"), strict=True)
    return model.to(device).eval()


def evaluate_subset(checkpoint: Path, num_samples: int = SUBSET_SAMPLES) -> dict[str, float]:
    """Val metrics of ``checkpoint`` on the first ``num_samples`` validation scenes, by the CLI."""
    from bevdistill.cli import main as cli

    with tempfile.TemporaryDirectory() as work_dir:
        argv = ["evaluate", TEACHER_EXPERIMENT, str(checkpoint), "--num-samples", str(num_samples),
                "--work-dir", work_dir]
        if cli(argv) != 0:
            raise RuntimeError(f"`bevdistill {' '.join(argv)}` failed")
        return json.loads((Path(work_dir) / "metrics.json").read_text())["metrics"]


def ship(run_dir: Path, out_dir: Path = ASSETS) -> dict[str, Any]:
    """Copy a finished run's weights (weights only) into ``out_dir`` and write its card."""
    from bevdistill.engine.checkpoint import atomic_write_bytes, read_state_dict
    from bevdistill.engine.report import write_json
    from bevdistill.engine.runner import load_experiment

    record = json.loads((run_dir / "metrics.json").read_text())
    if record.get("role") != "teacher":
        raise ValueError(f"{run_dir} is a {record.get('role')!r} run; ship a teacher run")
    state = read_state_dict(record["checkpoint"], "teacher run checkpoint")
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in state.items()}, buffer)
    weights = out_dir / TEACHER_WEIGHTS.name
    atomic_write_bytes(buffer.getvalue(), str(weights))
    subset = evaluate_subset(weights)
    card = {
        "model": "PillarBEVDetector",
        "preset": "teacher",
        "experiment": record["config"],
        "command": record["argv"],
        "seed": record["seed"],
        "commit": record["commit"],
        "iters": record["iters_done"],
        "training_time_s": record["duration_s"],
        "device": record["device"],
        "torch": record["torch"],
        "parameters": sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k),
        "val": {"num_samples": load_experiment(record["config_path"]).val_dataset.num_samples,
                "metrics": record["metrics"]},
        "val_subset": {
            "num_samples": SUBSET_SAMPLES,
            "command": f"bevdistill evaluate {TEACHER_EXPERIMENT} bevdistill/assets/teacher.pth "
                       f"--num-samples {SUBSET_SAMPLES}",
            "metrics": subset,
        },
        "shipped_with": f"python -m bevdistill.pretrained {run_dir}",
    }
    write_json(out_dir / TEACHER_CARD.name, card)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ship a trained teacher run as the package's teacher.")
    parser.add_argument("run_dir", type=Path, help="work dir of `bevdistill train teacher ...`")
    args = parser.parse_args(argv)
    card = ship(args.run_dir)
    print(json.dumps({k: card[k] for k in ("command", "iters", "training_time_s")}, indent=2))
    print("val subset mAP:", card["val_subset"]["metrics"].get("bev/mAP"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
