"""Step 2: project student and teacher features into one embedding space.

Teacher and student layers have different channel counts (and often different BEV grids), so
neither can be compared with the other directly. A small MLP per side maps both into a shared
``out_dim``-dimensional space where a contrastive loss can compare them.

Two projectors:

* :class:`ProjectionMLP` pools every spatial dimension away and returns one unit vector per
  sample (the tutorial's step 2; input to the global :class:`~bevdistill.ContrastiveLoss`).
* :class:`SpatialProjector` applies the same kind of MLP to every BEV cell with 1x1
  convolutions and keeps the grid (input to the per-cell
  :class:`~bevdistill.SpatialContrastiveLoss`).

Why LayerNorm and not the tutorial's BatchNorm1d: BatchNorm normalises each channel over the
batch, so in training mode at batch size 1 it raises "Expected more than 1 value per channel
when training" (and at batch sizes 2-4, BEVFusion's and BEVFormer's per-GPU sizes, its
statistics are noisy and differ between training and evaluation). LayerNorm normalises each
sample over its own hidden units, so it computes the same thing at any batch size and in train
and eval mode. GroupNorm(1, hidden) on a ``[B, hidden]`` vector is the same computation; simply
dropping the norm, or skipping BatchNorm when B == 1, would make the network behave differently
depending on the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

# F.normalize divides by max(||x||, eps): a zero vector stays zero instead of becoming NaN.
NORM_EPS = 1e-12


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def pool_to_vector(x: torch.Tensor) -> torch.Tensor:
    """Average every dimension after the channels: ``[B, C, *spatial]`` -> ``[B, C]``.

    For ``[B, C, H, W]`` this is exactly ``adaptive_avg_pool2d(x, 1).flatten(1)``; for points
    ``[B, C, N]`` and voxels ``[B, C, D, H, W]`` it is the mean over points / voxels.
    """
    if x.dim() == 2:
        return x
    return x.flatten(2).mean(dim=2)


@MODELS.register_module()
class ProjectionMLP(nn.Module):
    """Pool, then Linear -> LayerNorm -> ReLU -> Dropout -> Linear -> L2 normalise.

    Accepts ``[B, C]``, ``[B, C, N]``, ``[B, C, H, W]`` or ``[B, C, D, H, W]`` with ``C == in_dim``
    and returns unit vectors ``[B, out_dim]``. Works in training mode at batch size 1 (see the
    module docstring for why LayerNorm replaces the tutorial's BatchNorm1d).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int = 256, out_dim: int = 128, dropout: float = 0.1
    ):
        super().__init__()
        _check_dims(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.layer1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)  # per-sample statistics: fine at B=1, same in eval
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.layer2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ProjectionMLP expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(
                f"ProjectionMLP expects [B, C], [B, C, N], [B, C, H, W] or [B, C, D, H, W] with "
                f"C={self.in_dim}, got shape {tuple(x.shape)}; add the batch dimension "
                f"(x.unsqueeze(0)) for a single sample"
            )
        if x.shape[1] != self.in_dim:
            raise ValueError(
                f"ProjectionMLP(in_dim={self.in_dim}) got {x.shape[1]} channels in dim 1 "
                f"(input shape {tuple(x.shape)}); build it with in_dim={x.shape[1]}, or pass the "
                f"features channels-first"
            )
        if x.numel() == 0:  # pooling nothing gives NaN (a 0x0 map) or an empty batch
            raise ValueError(
                f"ProjectionMLP got an empty input of shape {tuple(x.shape)}: the batch or the "
                f"spatial grid has no cells; check the hooked layer's output and the batch size"
            )
        h = self.dropout(self.relu(self.norm(self.layer1(pool_to_vector(x)))))
        return F.normalize(self.layer2(h), dim=1, eps=NORM_EPS)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every cell of a ``[B, C, H, W]`` map, separately.

    Per cell, so one cell's embedding never depends on its neighbours or on the batch:
    projecting then sampling a cell equals sampling then projecting it. GroupNorm(1, C) would
    instead pool statistics over the whole map, which on a sparse LiDAR BEV map are dominated by
    empty cells.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@MODELS.register_module()
class SpatialProjector(nn.Module):
    """A per-cell MLP (1x1 conv -> LayerNorm -> ReLU -> 1x1 conv) that keeps the BEV grid.

    ``[B, in_dim, H, W]`` -> ``[B, out_dim, H, W]``, each cell's vector L2-normalised when
    ``normalize`` is true. Use it before :class:`~bevdistill.SpatialContrastiveLoss` when
    teacher and student channel counts differ.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int = 256, out_dim: int = 128, normalize: bool = True
    ):
        super().__init__()
        _check_dims(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.normalize = bool(normalize)
        self.conv1 = nn.Conv2d(in_dim, hidden_dim, kernel_size=1)
        self.norm = ChannelLayerNorm(hidden_dim)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden_dim, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SpatialProjector expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"SpatialProjector expects a BEV map [B, C, H, W], got shape {tuple(x.shape)}; "
                f"for [B, C] or pooled features use ProjectionMLP instead"
            )
        if x.shape[1] != self.in_dim:
            raise ValueError(
                f"SpatialProjector(in_dim={self.in_dim}) got {x.shape[1]} channels "
                f"(input shape {tuple(x.shape)}); build it with in_dim={x.shape[1]}"
            )
        if x.shape[-1] == 1:  # a column of sampled cells (a reads='cells' term): channels last
            return self.project_cells(x.squeeze(-1).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)
        y = self.conv2(self.relu(self.norm(self.conv1(x))))
        return F.normalize(y, dim=1, eps=NORM_EPS) if self.normalize else y

    def project_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """Project cell vectors already read from a map: ``[..., in_dim]`` -> ``[..., out_dim]``.

        The same weights and the same per-cell computation as :meth:`forward`, so
        ``project_cells(x[b, :, i, j])`` equals ``forward(x)[b, :, i, j]``. Sampling K cells first
        and projecting only those costs K cells instead of H*W (spatial InfoNCE reads a few
        hundred cells of maps with tens of thousands).
        """
        if not isinstance(cells, torch.Tensor):
            raise TypeError(f"project_cells expects a torch.Tensor, got {type(cells).__name__}")
        if cells.dim() < 1 or cells.shape[-1] != self.in_dim:
            raise ValueError(
                f"SpatialProjector(in_dim={self.in_dim}).project_cells expects [..., {self.in_dim}] "
                f"(channels last), got shape {tuple(cells.shape)}"
            )
        w1 = self.conv1.weight.flatten(1)  # [hidden, in, 1, 1] -> [hidden, in]
        w2 = self.conv2.weight.flatten(1)
        h = self.relu(self.norm.norm(F.linear(cells, w1, self.conv1.bias)))
        y = F.linear(h, w2, self.conv2.bias)
        return F.normalize(y, dim=-1, eps=NORM_EPS) if self.normalize else y
