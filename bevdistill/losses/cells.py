"""Spatial InfoNCE as a distillation term: draw K cells, project only those, contrast them.

A term that declares ``reads='cells'`` does not hand whole maps to its connectors: it draws K
cells on the teacher's grid (biased towards the foreground when the term takes a mask), reads
both maps there, and hands each side its cells as a one-column map ``[B, C, K, 1]``. A per-cell
connector (:class:`~bevdistill.SpatialProjector`: 1x1 convolutions) then projects K cells
instead of H*W, and :class:`CellInfoNCE` contrasts them: cell k of the student against cell k
of the teacher, the other K - 1 cells as negatives.

The student is read at the teacher cells' world points by bilinear interpolation of its *raw*
features; where the grids differ this interpolates before the (non-linear) projector instead of
after it, the choice a per-point projector makes, still comparing the two models at the same
world place. Where the grids are equal (the neck and the last backbone scale of the presets)
both readings are identical.
"""

from __future__ import annotations

import torch
from mmengine.registry import MODELS
from torch import nn

from bevdistill.bev_grid import cell_centres, gather_cells, sample_cells
from bevdistill.losses._checks import NonFiniteLossError
from bevdistill.losses.contrastive import SpatialContrastiveLoss


class CellSampler:
    """Reads K cells at the same world places of a student and a teacher BEV map."""

    def __init__(self, num_samples: int = 256, foreground_fraction: float = 0.5):
        # SpatialContrastiveLoss owns the drawing rules (and checks these two numbers)
        self._draw = SpatialContrastiveLoss(num_samples=num_samples,
                                            foreground_fraction=foreground_fraction)

    def __repr__(self) -> str:
        return (f"CellSampler(num_samples={self._draw.num_samples}, "
                f"foreground_fraction={self._draw.foreground_fraction})")

    def __call__(self, s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``[B, C, H, W]`` maps -> their cells ``[B, C, K, 1]``; None when the teacher grid has
        fewer than 2 cells (no negative: warned once)."""
        index = self._draw.draw_cell_indices(s.shape[0], t.shape[-2:], mask, device=t.device)
        if index is None:
            return None
        t_cells = gather_cells(t, index)  # [B, K, C], drawn on the teacher's own grid
        if s.shape[-2:] == t.shape[-2:]:
            s_cells = gather_cells(s, index)
        else:  # the same world points, read from the student's grid by bilinear interpolation
            coords = cell_centres(*t.shape[-2:], device=t.device, dtype=s.dtype)[index]
            s_cells = sample_cells(s, coords)
        # Only the sampled cells enter the loss, so only they are checked (checking whole maps
        # took several passes over the largest tensors of the step).
        for name, cells in (("student", s_cells), ("teacher", t_cells)):
            if not torch.isfinite(cells).all():
                raise NonFiniteLossError(
                    f"{name} feature contains NaN or inf at the sampled cells; the loss would be "
                    "NaN. Check the layer that produced it (e.g. run the model in fp32 or lower "
                    "the learning rate)"
                )
        return s_cells.transpose(1, 2).unsqueeze(-1), t_cells.transpose(1, 2).unsqueeze(-1)


@MODELS.register_module()
class CellInfoNCE(nn.Module):
    """Symmetric InfoNCE over cells read at the same places: ``[B, D, K, 1]`` on both sides (what
    a ``reads='cells'`` term hands its loss); cell k of one side is the positive of cell k of the
    other, vectors L2-normalised here."""

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.contrastive = SpatialContrastiveLoss(temperature)

    @property
    def temperature(self) -> float:
        return self.contrastive.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, *,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("CellInfoNCE takes no mask: the cells were drawn with it already "
                             "(a reads='cells' term with mask=True)")
        if student.dim() != 4 or student.shape[-1] != 1 or student.shape != teacher.shape:
            raise ValueError(
                f"CellInfoNCE expects cells [B, D, K, 1] of the same shape on both sides, got "
                f"{tuple(student.shape)} and {tuple(teacher.shape)}; declare its term with "
                "reads='cells' and one connector width for both sides"
            )
        return self.contrastive.cell_loss(student.squeeze(-1).transpose(1, 2),
                                          teacher.squeeze(-1).transpose(1, 2))
