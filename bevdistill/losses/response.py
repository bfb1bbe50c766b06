"""Response distillation on detection-head outputs: the tutorial's unused ``alpha_kd``.

CenterPoint-style heads (BEVFusion's TransFusion and CenterHead) predict a class heatmap of
*independent* per-class sigmoid logits ``[B, K, H, W]``: a cell can be "car" and "truck" at once,
or nothing at all. The classic KD loss (``KLDivLoss`` on a softmax over classes, which the
tutorial sets up) is wrong for them: the softmax discards how confident the head is that a cell
holds any object, so a student that fires "object" everywhere matches a teacher that sees only
background as long as the class ratios agree.

The right divergence is the per-class binary KL between Bernoulli distributions:

    KL(p_t || p_s) = BCE(p_s, p_t) - H(p_t),    p = sigmoid(logits / T)

summed over classes, times ``T^2`` (Hinton's gradient-scale correction), and averaged over
cells. It is 0 exactly when the student matches the teacher. Most cells of a BEV map are empty,
so by default each cell is weighted by the teacher's confidence that it holds an object
(``max_k sigmoid(teacher logit)``, at T=1), normalised by the sum of the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill.bev_grid import resize_bev
from bevdistill.losses._checks import as_fp32, check_finite, check_input, full_precision

Weighting = Literal["teacher"] | None


def heatmap_logits(outputs: Any, key: str = "heatmap", who: str = "outputs") -> torch.Tensor:
    """Class heatmap logits ``[B, K, H, W]`` from a head's outputs.

    Accepts a tensor, a dict holding ``key``, or a list/tuple of such (one per task, as
    CenterHead returns; nested lists too), concatenated along the class channel.
    """
    if isinstance(outputs, torch.Tensor):
        logits = outputs
    elif isinstance(outputs, Mapping):
        if key not in outputs:
            raise KeyError(
                f"{who}: no {key!r} in the head's output dict (keys: {sorted(outputs)}); pass the "
                f"heatmap logits or set HeatmapDistillationLoss(key=...)"
            )
        logits = heatmap_logits(outputs[key], key, who)
    elif isinstance(outputs, Sequence) and not isinstance(outputs, str) and len(outputs) > 0:
        logits = torch.cat([heatmap_logits(o, key, who) for o in outputs], dim=1)
    else:
        raise TypeError(
            f"{who}: expected heatmap logits as a tensor, a dict with {key!r} or a list of those, "
            f"got {type(outputs).__name__}"
        )
    if logits.dim() != 4:
        raise ValueError(
            f"{who}: heatmap logits must be [B, K, H, W], got shape {tuple(logits.shape)}"
        )
    return check_input("HeatmapDistillationLoss", f"{who} heatmap logits", logits)


@MODELS.register_module()
class HeatmapDistillationLoss(nn.Module):
    """Binary KL between teacher and student class heatmaps (per-class sigmoid), teacher detached.

    ``forward(student_outputs, teacher_outputs)`` -> scalar. Logits ``[B, K, H, W]`` (or see
    :func:`heatmap_logits`); a student on a different grid is resized to the teacher's with
    :func:`bevdistill.bev_grid.resize_bev`. ``weighting='teacher'`` emphasises cells the teacher
    thinks hold an object; ``None`` averages all cells equally.
    """

    def __init__(
        self, temperature: float = 1.0, weighting: Weighting = "teacher", key: str = "heatmap"
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if weighting not in ("teacher", None):
            raise ValueError(f"weighting must be 'teacher' or None, got {weighting!r}")
        self.temperature = float(temperature)
        self.weighting = weighting
        self.key = key

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weighting={self.weighting!r}"

    def forward(self, student_outputs: Any, teacher_outputs: Any, *,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("HeatmapDistillationLoss weights cells by the teacher's own heatmap and "
                             "takes no mask; declare its term with mask=False (the default)")
        s = heatmap_logits(student_outputs, self.key, "student")
        t = heatmap_logits(teacher_outputs, self.key, "teacher").detach()
        if s.shape[:2] != t.shape[:2]:
            raise ValueError(
                f"student heatmap {tuple(s.shape)} and teacher heatmap {tuple(t.shape)} differ in "
                "batch size or class count; response distillation needs the same classes in the same "
                "order (select or reorder the teacher's task heads to match the student's)"
            )
        with full_precision(s):
            loss = self._loss(as_fp32(s), as_fp32(t))
        return check_finite(
            "HeatmapDistillationLoss", loss, {"student heatmap logits": s, "teacher heatmap logits": t}
        )

    def _loss(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = resize_bev(s, t.shape[-2:])

        temp = self.temperature
        p_t = torch.sigmoid(t / temp)
        cross_entropy = F.binary_cross_entropy_with_logits(s / temp, p_t, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(t / temp, p_t, reduction="none")
        per_cell = (cross_entropy - entropy).sum(dim=1) * temp**2  # [B, H, W]

        if self.weighting is None:
            return per_cell.mean()
        weight = torch.sigmoid(t).amax(dim=1)
        return (weight * per_cell).sum() / weight.sum().clamp_min(1e-12)
