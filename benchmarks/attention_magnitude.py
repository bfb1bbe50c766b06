"""How big are attention-transfer losses and their gradients, next to a detection loss?

Shows the tutorial's defect: L1-normalised attention maps compared with a mean squared error
give a loss of order 1/(HW)^2, so on BEVFusion's 180 x 180 grid the term contributes no
gradient. Compares it with RepDistiller's AT (L2 maps, mean over cells) and bevdistill's
default (L2 maps, squared distance summed over cells), and with the gradient of CenterPoint's
Gaussian focal loss on the same student features.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.attention_magnitude

Prints a table and writes benchmarks/results/attention_magnitude.json.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmarks.provenance import RESULTS_DIR, provenance
from bevdistill.engine.report import write_json
from bevdistill.losses.attention import AttentionTransferLoss, tutorial_attention_loss

MODULE = "benchmarks.attention_magnitude"

GRIDS = [(32, 32), (128, 128), (180, 180)]
BATCH, INPUT_C, STUDENT_C, TEACHER_C, NUM_CLASSES, NUM_OBJECTS = 2, 32, 64, 128, 10, 20


VARIANTS = {
    "tutorial (l1, mean)": tutorial_attention_loss,
    "RepDistiller AT (l2, mean)": AttentionTransferLoss(normalization="l2", reduction="mean"),
    "bevdistill (l2, sum)": AttentionTransferLoss(normalization="l2", reduction="sum"),
}


def gaussian_blobs(h: int, w: int, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[N, 2]`` integer (row, col) centres -> ``[H, W]`` map, max over Gaussian bumps (peak 1)."""
    ys = torch.arange(h, dtype=torch.float32)[:, None, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :, None]
    d2 = (ys - centres[:, 0]) ** 2 + (xs - centres[:, 1]) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).amax(-1)


def make_inputs(h: int, w: int, g: torch.Generator):
    """Random student input; a teacher whose activity concentrates on objects; targets."""
    sigma = max(1.0, h / 90)
    student_input = torch.randn(BATCH, INPUT_C, h, w, generator=g)
    teacher, target = [], torch.zeros(BATCH, NUM_CLASSES, h, w)
    for b in range(BATCH):
        centres = torch.stack(
            [
                torch.randint(0, h, (NUM_OBJECTS,), generator=g),
                torch.randint(0, w, (NUM_OBJECTS,), generator=g),
            ],
            dim=1,
        ).float()
        blobs = gaussian_blobs(h, w, centres, sigma)
        teacher.append(torch.randn(TEACHER_C, h, w, generator=g) * (0.2 + 3.0 * blobs))
        classes = torch.randint(0, NUM_CLASSES, (NUM_OBJECTS,), generator=g)
        for k in range(NUM_CLASSES):
            picked = centres[classes == k]
            if len(picked):
                target[b, k] = gaussian_blobs(h, w, picked, sigma)
    return student_input, torch.stack(teacher), target


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterPoint's heatmap loss (CenterNet focal loss, alpha=2, gamma=4), over positives."""
    prob = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -prob.log() * (1 - prob).pow(2) * pos
    neg_loss = -(1 - prob).log() * prob.pow(2) * (1 - target).pow(4) * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1)


def gradients(loss_fn, layer: nn.Module, x: torch.Tensor) -> tuple[float, float, float]:
    """Loss, |d loss / d student features| and |d loss / d weights of the layer making them|."""
    feat = layer(x)
    loss = loss_fn(feat)
    grad_feat, grad_weight = torch.autograd.grad(loss, [feat, layer.weight])
    return float(loss.detach()), float(grad_feat.norm()), float(grad_weight.norm())


def main() -> dict:
    torch.manual_seed(0)
    # The student's last layer (its weights are what distillation must move) and its head.
    layer = nn.Conv2d(INPUT_C, STUDENT_C, 3, padding=1)
    head = nn.Conv2d(STUDENT_C, NUM_CLASSES, 3, padding=1)
    nn.init.constant_(head.bias, -2.19)  # CenterPoint's prior of 0.1
    rows = []
    for h, w in GRIDS:
        x, teacher, target = make_inputs(h, w, torch.Generator().manual_seed(h * 1000 + w))
        focal = gradients(lambda f, y=target: gaussian_focal_loss(head(f), y), layer, x)
        for name, fn in VARIANTS.items():
            start = time.perf_counter()
            loss, grad_feat, grad_weight = gradients(lambda f, fn=fn, t=teacher: fn(f, t), layer, x)
            rows.append(
                {
                    "grid": f"{h}x{w}",
                    "variant": name,
                    "loss": loss,
                    "grad_feat_norm": grad_feat,
                    "grad_weight_norm": grad_weight,
                    "focal_loss": focal[0],
                    "focal_grad_feat_norm": focal[1],
                    "focal_grad_weight_norm": focal[2],
                    "weight_grad_ratio_to_focal": grad_weight / focal[2],
                    "seconds": time.perf_counter() - start,
                }
            )
    return {
        **provenance(MODULE, []),
        "setup": {
            "batch": BATCH,
            "student_channels": STUDENT_C,
            "teacher_channels": TEACHER_C,
            "num_classes": NUM_CLASSES,
            "objects_per_sample": NUM_OBJECTS,
            "student": "random input -> 3x3 conv (the layer whose weights distillation moves)",
            "gradients": "L2 norms of d loss / d student features and d loss / d conv weights",
            "focal": "Gaussian focal loss of a 3x3 conv heatmap head on the student features",
        },
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print("|dF|, |dW|: gradient norms w.r.t. the student features and its last conv's weights;")
    print("ratio: |dW| of the attention term over |dW| of the focal loss (1 = equal pull)")
    header = (
        f"{'grid':8} {'variant':27} {'loss':>8} {'|dF|':>8} {'|dW|':>8} "
        f"{'focal |dF|':>10} {'focal |dW|':>10} {'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        print(
            f"{r['grid']:8} {r['variant']:27} {r['loss']:8.1e} {r['grad_feat_norm']:8.1e} "
            f"{r['grad_weight_norm']:8.1e} {r['focal_grad_feat_norm']:10.1e} "
            f"{r['focal_grad_weight_norm']:10.1e} {r['weight_grad_ratio_to_focal']:8.1e}"
        )


if __name__ == "__main__":
    out = main()
    print_table(out)
    path = RESULTS_DIR / "attention_magnitude.json"
    write_json(path, out)
    print(f"wrote {path}")
