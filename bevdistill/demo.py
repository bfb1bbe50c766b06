"""The embedded default job: hook a BEV teacher and student on a synthetic scene, print every loss.

``make demo`` (or ``python -m bevdistill.demo``) runs it. It shows, in one screen, what each
tutorial step produces on real BEV models: the hooked features (step 1), the projected
embeddings (step 2), each loss term (steps 3-4 and response KD) and the combined loss of the
:class:`~bevdistill.Distiller` (steps 5-6).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

import torch

from bevdistill import (
    AttentionTransferLoss,
    BEVFusionDistillationWrapper,
    ContrastiveLoss,
    HeatmapDistillationLoss,
    ProjectionMLP,
    SpatialContrastiveLoss,
    SpatialProjector,
    build_bevfusion_distillation,
)
from bevdistill.data import CLASS_NAMES, SyntheticBEVDataset, bev_collate
from bevdistill.models import build_detector
from bevdistill.pretrained import load_teacher, teacher_available, teacher_card


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value)
        return f"{type(value).__name__}({inner})"
    return type(value).__name__


def _print_features(title: str, features: Mapping) -> None:
    print(f"\n{title}")
    for name, value in features.items():
        print(f"  {name:<24} {_describe(value)}")


def run(batch_size: int = 2, seed: int = 0) -> dict[str, float]:
    """Build both models, hook them, and return every loss value (also printed)."""
    torch.manual_seed(seed)
    if teacher_available():
        teacher = load_teacher()
        card = teacher_card()
        print(f"teacher: shipped checkpoint, val mAP {card['val']['metrics'].get('bev/mAP', float('nan')):.3f} "
              f"({card['command']})")
    else:
        teacher = build_detector("teacher").eval()
        print("teacher: preset with RANDOM weights (no shipped teacher in this install)")
    student = build_detector("student")
    pc_range = list(teacher.grid.point_cloud_range)
    data = SyntheticBEVDataset(split="val", num_samples=batch_size, seed=seed, point_cloud_range=pc_range)
    batch = bev_collate([data[i] for i in range(batch_size)])
    inputs, samples = batch["inputs"], batch["data_samples"]
    counts = torch.bincount(torch.cat([s["gt_labels"] for s in samples]), minlength=len(CLASS_NAMES))
    print(f"scene: {batch_size} synthetic scans, {sum(len(p) for p in inputs['points'])} LiDAR points, "
          + ", ".join(f"{n} {c}" for n, c in zip(counts.tolist(), CLASS_NAMES, strict=True)))

    # Step 1: hooks. The teacher's captures are detached, the student's keep their graph.
    hooks = ("pts_middle_encoder", "pts_backbone", "pts_neck", "bbox_head.heatmap_head")
    with BEVFusionDistillationWrapper(teacher, hook_points=hooks) as t_wrap, \
            BEVFusionDistillationWrapper(student, is_student=True, hook_points=hooks) as s_wrap:
        with torch.no_grad():
            _, t_feats = t_wrap(inputs, samples, mode="tensor")
        det_losses, s_feats = s_wrap(inputs, samples, mode="loss")
    _print_features("teacher features (hooked)", t_feats)
    _print_features("student features (hooked)", s_feats)

    s_neck, t_neck = s_feats["pts_neck"][0], t_feats["pts_neck"][0]
    s_heat, t_heat = s_feats["bbox_head.heatmap_head"], t_feats["bbox_head.heatmap_head"]
    losses: dict[str, torch.Tensor] = {f"student {k}": v for k, v in det_losses.items()}

    # Step 2 + 3: global embeddings and InfoNCE; spatial InfoNCE on per-cell embeddings.
    s_emb = ProjectionMLP(s_neck.shape[1])(s_neck)
    t_emb = ProjectionMLP(t_neck.shape[1])(t_neck)
    losses["global InfoNCE (tutorial, step 3)"] = ContrastiveLoss()(s_emb, t_emb)
    s_cells = SpatialProjector(s_neck.shape[1])(s_neck)
    t_cells = SpatialProjector(t_neck.shape[1])(t_neck)
    losses["spatial InfoNCE (256 cells)"] = SpatialContrastiveLoss()(
        s_cells, t_cells, mask=t_heat.sigmoid())
    # Step 4: attention transfer, ours and the tutorial's normalisation.
    losses["attention transfer (L2, sum over cells)"] = AttentionTransferLoss()(s_neck, t_neck)
    losses["attention transfer (tutorial: L1 + MSE)"] = AttentionTransferLoss(
        normalization="l1", reduction="mean")(s_neck, t_neck)
    losses["heatmap response KD"] = HeatmapDistillationLoss()(s_heat, t_heat)

    # Steps 5 + 6: the combined loss inside the Distiller that training uses.
    distiller = build_bevfusion_distillation(teacher, student)
    distiller.train()
    combined = distiller.loss(inputs, samples)
    losses.update({f"Distiller {k}": v for k, v in combined.items()})

    print("\nlosses")
    for name, value in losses.items():
        print(f"  {name:<44} {value.item():.6g}")
    return {k: v.item() for k, v in losses.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run(args.batch_size, args.seed)
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
