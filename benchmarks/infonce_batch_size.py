"""How much does InfoNCE teach at small batch sizes: global (tutorial) vs spatial (per BEV cell)?

The tutorial's ContrastiveLoss pools each sample to one vector, so its negatives are the other
samples of the batch: B - 1 of them, none at B=1 (BEVFormer's per-GPU batch), where the loss is
identically 0. SpatialContrastiveLoss samples K cells per sample at the same world coordinates
in both maps and uses the other K - 1 cells as negatives, at any batch size.

Random BEV maps: teacher [B, 64, 64, 64], student [B, 64, 32, 32] (half the resolution, as a
lighter student). Two settings: "independent" (student unrelated to the teacher, as at the start
of training) and "aligned" (student = teacher downsampled + noise of equal power, as a partly
trained student). Each side goes through its own projector with default sizes (ProjectionMLP
for the global loss, SpatialProjector for the spatial one), as in BEVFusionDistillationLoss.
Reported: negatives per anchor, loss, L2 norms of d loss / d student map and of d loss / d the
student projector's first-layer weights (same [256, 64] shape in both); mean and std over seeds.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.infonce_batch_size

Prints a table and writes benchmarks/results/infonce_batch_size.json.
"""

from __future__ import annotations

import statistics
import warnings

import torch

from benchmarks.provenance import RESULTS_DIR, provenance
from bevdistill.bev_grid import resize_bev
from bevdistill.engine.report import write_json
from bevdistill.losses.contrastive import ContrastiveLoss, SpatialContrastiveLoss
from bevdistill.projection import ProjectionMLP, SpatialProjector

MODULE = "benchmarks.infonce_batch_size"

BATCH_SIZES = (1, 2, 4, 8)
SEEDS = range(5)
CHANNELS, TEACHER_HW, STUDENT_HW = 64, (64, 64), (32, 32)
TEMPERATURE, NUM_SAMPLES = 0.07, 256


def make_maps(batch: int, setting: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, CHANNELS, *TEACHER_HW, generator=g)
    noise = torch.randn(batch, CHANNELS, *STUDENT_HW, generator=g)
    if setting == "independent":
        student = noise
    else:
        down = resize_bev(teacher, STUDENT_HW)
        student = down + noise * down.std()
    return student.requires_grad_(True), teacher


def measure(loss_name: str, batch: int, setting: str, seed: int) -> tuple[float, float, float]:
    """Loss, |d loss / d student map| and |d loss / d student projector's first weights|."""
    student, teacher = make_maps(batch, setting, seed)
    torch.manual_seed(seed)  # projector weights, dropout, and the spatial loss's cell sampling
    if loss_name == "global":
        s_proj, t_proj = ProjectionMLP(CHANNELS), ProjectionMLP(CHANNELS)
        loss, first = ContrastiveLoss(TEMPERATURE), s_proj.layer1.weight
    else:
        s_proj, t_proj = SpatialProjector(CHANNELS), SpatialProjector(CHANNELS)
        loss = SpatialContrastiveLoss(TEMPERATURE, num_samples=NUM_SAMPLES)
        first = s_proj.conv1.weight
    with torch.no_grad():
        t_emb = t_proj(teacher)
    value = loss(s_proj(student), t_emb)
    value.backward()
    # .detach(): float() of a tensor that requires grad warns (torch >= 2.13), once per call site.
    return float(value.detach()), float(student.grad.norm()), float(first.grad.norm())


def main() -> dict:
    warnings.simplefilter("ignore")  # the B=1 warning of the global loss is the point here
    rows = []
    for setting in ("independent", "aligned"):
        for loss_name in ("global", "spatial"):
            for batch in BATCH_SIZES:
                runs = [measure(loss_name, batch, setting, seed) for seed in SEEDS]
                values, grads, wgrads = ([r[i] for r in runs] for i in range(3))
                rows.append(
                    {
                        "setting": setting,
                        "loss": loss_name,
                        "batch": batch,
                        "negatives_per_anchor": batch - 1
                        if loss_name == "global"
                        else NUM_SAMPLES - 1,
                        "loss_mean": statistics.mean(values),
                        "loss_std": statistics.pstdev(values),
                        "grad_norm_mean": statistics.mean(grads),
                        "grad_norm_std": statistics.pstdev(grads),
                        "weight_grad_norm_mean": statistics.mean(wgrads),
                        "weight_grad_norm_std": statistics.pstdev(wgrads),
                    }
                )
    return {
        **provenance(MODULE, []),
        "setup": {
            "channels": CHANNELS,
            "teacher_grid": list(TEACHER_HW),
            "student_grid": list(STUDENT_HW),
            "temperature": TEMPERATURE,
            "spatial_num_samples": NUM_SAMPLES,
            "seeds": len(SEEDS),
            "global": "ProjectionMLP(64) per side (train mode) -> ContrastiveLoss",
            "spatial": "SpatialProjector(64) per side -> SpatialContrastiveLoss, uniform cells",
            "grad_norm": "L2 norm of d loss / d student map, whole batch",
            "weight_grad_norm": "L2 norm of d loss / d student projector's first-layer weight "
            "([256, 64] in both: layer1 of ProjectionMLP, conv1 of SpatialProjector)",
        },
        "rows": rows,
    }


def print_table(result: dict) -> None:
    header = (
        f"{'setting':12} {'loss':8} {'B':>2} {'negatives':>9} {'loss (mean ± std)':>20} "
        f"{'|dL/dmap|':>20} {'|dL/dW1|':>20}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        print(
            f"{r['setting']:12} {r['loss']:8} {r['batch']:2d} {r['negatives_per_anchor']:9d} "
            f"{r['loss_mean']:11.4f} ± {r['loss_std']:6.4f} "
            f"{r['grad_norm_mean']:10.2e} ± {r['grad_norm_std']:7.1e} "
            f"{r['weight_grad_norm_mean']:10.2e} ± {r['weight_grad_norm_std']:7.1e}"
        )


if __name__ == "__main__":
    out = main()
    print_table(out)
    path = RESULTS_DIR / "infonce_batch_size.json"
    write_json(path, out)
    print(f"wrote {path}")
