"""A few distillation steps of mmdet3d CenterPoint models on the real nuScenes frame (notebook 6).

    python -m bevdistill.mmdet3d.demo [--steps N] [--teacher-ckpt PATH]

Uses the CPU config (``configs/mmdet3d/centerpoint_pillar_cpu.py``) and mmdet3d's own dataset
and transforms. No trained mmdet3d teacher can be downloaded here, so without
``--teacher-ckpt`` the teacher is freshly initialised: the run shows the mechanics (hooks,
shapes, losses, export), not what a trained teacher teaches.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from bevdistill.mmdet3d.distiller import BEVDistiller

CPU_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mmdet3d" / "centerpoint_pillar_cpu.py"


@dataclass
class DemoRun:
    """What :func:`distil_on_frame` did: the distiller, the batch and the losses of each step."""

    cfg: Config
    distiller: BEVDistiller
    batch: dict
    losses: list[dict[str, float]] = field(default_factory=list)


def load_cpu_config(data_root: str | os.PathLike | None = None) -> Config:
    """The CPU config, reading the real frame from ``data_root`` (default: the config's)."""
    cfg = Config.fromfile(str(CPU_CONFIG))
    if data_root is not None:
        cfg.train_dataloader.dataset.data_root = str(data_root)
        cfg.test_dataset.data_root = str(data_root)
    return cfg


def build_dataset(dataset_cfg: Any):
    from mmdet3d.registry import DATASETS

    with DefaultScope.overwrite_default_scope("mmdet3d"):
        return DATASETS.build(copy.deepcopy(dataset_cfg))


def distil_on_frame(
    cfg: Config, steps: int = 5, lr: float = 2e-3, teacher_ckpt: str | None = None, seed: int = 0
) -> DemoRun:
    """Build the config's BEVDistiller and take ``steps`` AdamW steps on the first frame."""
    model_cfg = {k: v for k, v in copy.deepcopy(cfg.model.to_dict()).items() if k != "type"}
    model_cfg["teacher_ckpt"] = teacher_ckpt
    torch.manual_seed(seed)
    distiller = BEVDistiller(**model_cfg)
    distiller.init_weights()
    if teacher_ckpt is None:
        distiller.teacher.init_weights()  # e.g. CenterHead's heatmap bias prior, as in training
    batch = pseudo_collate([build_dataset(cfg.train_dataloader.dataset)[0]])
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=lr)
    run = DemoRun(cfg, distiller, batch)
    distiller.train()
    for _ in range(steps):
        losses = distiller(**distiller.data_preprocessor(batch, True), mode="loss")
        total, _ = distiller.parse_losses(losses)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        run.losses.append({k: float(v.detach()) for k, v in losses.items()})
    return run


# mmdet3d 1.4.0 warns on every CPU inference and on a tensor copy in CenterPointBBoxCoder;
# neither says anything about the model, and both print the installation's path.
MMDET3D_NOTICES = ("Don't suggest using CPU device", "To copy construct from a tensor")
# mmengine's load_checkpoint prints where it read the weights from; for an export folder that is
# a temporary path of this machine, which a rendered notebook (the book) must not show
CHECKPOINT_PATH_NOTICE = "Loads checkpoint by"


def export_and_reload(run: DemoRun, folder: str | os.PathLike):
    """Export the student (weights + plain mmdet3d config) and load it with mmdet3d's init_model.

    Returns ``(model, result)``: the reloaded student and its ``inference_detector`` result on
    the frame's LiDAR file.
    """
    from mmdet3d.apis import inference_detector, init_model

    from bevdistill.engine.checkpoint import atomic_write_bytes
    from bevdistill.mmdet3d.export import export_student_checkpoint

    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save({"state_dict": run.distiller.state_dict()}, buffer)
    atomic_write_bytes(buffer.getvalue(), str(folder / "distiller.pth"))
    weights, config = export_student_checkpoint(
        run.cfg, folder / "distiller.pth", folder / "student.pth"
    )
    lidar_path = run.batch["data_samples"][0].metainfo["lidar_path"]
    # init_model sets mmdet3d as the process's default registry scope; the overwrite restores the
    # caller's, so bevdistill's own models (PillarFeatureNet...) still build afterwards
    with DefaultScope.overwrite_default_scope("mmdet3d"), warnings.catch_warnings():
        for notice in MMDET3D_NOTICES:  # two known notices of mmdet3d's own code, not ours
            warnings.filterwarnings("ignore", message=notice, category=UserWarning)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            model = init_model(str(config), str(weights), device="cpu")
        for line in printed.getvalue().splitlines():  # all it printed but the path notice
            if not line.startswith(CHECKPOINT_PATH_NOTICE):
                print(line)
        result, _ = inference_detector(model, lidar_path)
    return model, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--teacher-ckpt", help="trained teacher weights (default: untrained)")
    parser.add_argument("--data-root", help="folder of the nuScenes frame (default: the config's)")
    args = parser.parse_args(argv)
    # mmengine reports every parameter's initialisation and the dataset's class counts at INFO
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    run = distil_on_frame(load_cpu_config(args.data_root), args.steps, teacher_ckpt=args.teacher_ckpt)
    keys = list(run.distiller.loss_keys)  # every distillation term the config built
    for step, losses in enumerate(run.losses):
        print(f"step {step}: " + ", ".join(f"{k}={losses[k]:.4f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
