"""Spatial InfoNCE as a distillation term: draw K cells, project only those, contrast them.

For the teacher, whose grid the cells are drawn on, projecting the K cells is exactly the
projection of the full map read at the cells. The student is read at the same world points by
bilinear interpolation of its *raw* features, then projected; where the student grid differs
from the teacher's this interpolates before the (non-linear) projector instead of after it, the
same choice a per-point projector makes, and still compares the two models at the same world
place. Where the grids are equal (the neck and the last backbone scale of the presets) both
readings are identical. Cost: K vectors per sample instead of H*W.
"""

from __future__ import annotations

import torch
from torch import nn

from bevdistill.bev_grid import cell_centres, gather_cells, sample_cells
from bevdistill.losses._checks import NonFiniteLossError
from bevdistill.losses.contrastive import SpatialContrastiveLoss


class SampledCellInfoNCE(nn.Module):
    """:class:`SpatialContrastiveLoss` on sampled cells, projected by the term's connectors
    (:class:`~bevdistill.SpatialProjector`, whose ``project_cells`` maps cell vectors)."""

    requires_bev_map = True
    applies_connectors = True

    def __init__(self, temperature: float = 0.07, num_samples: int = 256,
                 foreground_fraction: float = 0.5):
        super().__init__()
        self.contrastive = SpatialContrastiveLoss(temperature, num_samples=num_samples,
                                                  foreground_fraction=foreground_fraction)

    @property
    def temperature(self) -> float:
        return self.contrastive.temperature

    def forward(self, student_map: torch.Tensor, teacher_map: torch.Tensor,
                foreground: torch.Tensor | None = None, student_connector: nn.Module | None = None,
                teacher_connector: nn.Module | None = None) -> torch.Tensor:
        s, t = student_map, teacher_map
        index = self.contrastive.draw_cell_indices(s.shape[0], t.shape[-2:], foreground,
                                                   device=t.device)
        if index is None:
            return s.sum() * 0.0
        t_cells = gather_cells(t, index)  # the cells are drawn on the teacher's own grid
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
                    f"{name} feature contains NaN or inf at the cells sampled for spatial "
                    "InfoNCE; the loss would be NaN. Check the layer that produced it (e.g. run "
                    "the model in fp32 or lower the learning rate)"
                )
        s_emb = student_connector.project_cells(s_cells) if student_connector else s_cells
        t_emb = teacher_connector.project_cells(t_cells) if teacher_connector else t_cells
        return self.contrastive.cell_loss(s_emb, t_emb)
