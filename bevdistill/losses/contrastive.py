"""Step 3: contrastive (InfoNCE) distillation losses.

* :class:`ContrastiveLoss` is the tutorial's symmetric InfoNCE on one pooled embedding per
  sample. Its negatives are the *other samples of the batch*: at the per-GPU batch sizes of
  BEV detectors (BEVFusion trains at 4, BEVFormer at 1) that is 0-3 negatives, and at B=1 the
  loss is identically zero, so it teaches nothing.
* :class:`SpatialContrastiveLoss` contrasts BEV *cells* instead: K cells sampled at the same
  world coordinates in the student and the teacher map; a student cell's positive is the teacher
  cell at the same place and the other sampled cells are its negatives. K - 1 negatives per
  anchor at any batch size, including 1.
* :class:`MemoryBankContrastiveLoss` keeps CRD's other remedy: a memory of teacher embeddings
  from earlier batches, keyed on the data set index, supplies thousands of negatives at B=1.

Every loss validates its input, warns once on degenerate input and never returns NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.bev_grid import cell_centres, resize_bev, sample_cells
from bevdistill.losses._checks import LossInputError, NonFiniteLossError, as_fp32, full_precision

NORM_EPS = 1e-12  # F.normalize's eps: a zero vector normalises to zero, not NaN


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0 (logits are divided by it), "
            f"got {temperature!r}; "
            f"0.07 (CLIP, CRD) is the usual choice"
        )
    return t


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteLossError(
            f"{name} contains NaN or inf; the loss would be NaN. Check the layer that produced it "
            f"(e.g. run the model in fp32 or lower the learning rate)"
        )


def _check_tensor(name: str, x: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_features(name: str, x: object) -> None:
    _check_tensor(name, x)
    if not x.is_floating_point():
        raise LossInputError(
            f"{name} has dtype {x.dtype}; contrastive losses need floating-point features "
            f"(pass {name}.float())"
        )


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the row-wise and column-wise cross-entropy with the diagonal as the positives.

    ``logits`` is ``[N, N]`` or a batch ``[B, N, N]`` of independent problems (averaged equally).
    """
    n = logits.shape[-1]
    rows = logits.reshape(-1, n)
    cols = logits.transpose(-1, -2).reshape(-1, n)
    labels = torch.arange(n, device=logits.device).repeat(rows.shape[0] // n)
    return (F.cross_entropy(rows, labels) + F.cross_entropy(cols, labels)) / 2


@MODELS.register_module()
class ContrastiveLoss(nn.Module):
    """The tutorial's symmetric InfoNCE between pooled embeddings ``[B, D]`` (CLIP's loss).

    ``logits = normalize(s) @ normalize(t).T / temperature``; student ``i`` should pick teacher
    ``i`` among the batch and vice versa. Needs B >= 2 to teach anything: at B=1 it returns 0
    (with a one-time warning); use :class:`SpatialContrastiveLoss` or
    :class:`MemoryBankContrastiveLoss` for small batches.
    """

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, *,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("ContrastiveLoss compares pooled embeddings, which have no cells to "
                             "mask; declare its term with mask=False (the default)")
        _check_features("student_feat", student_feat)
        _check_features("teacher_feat", teacher_feat)
        if student_feat.dim() != 2 or student_feat.shape != teacher_feat.shape:
            raise ValueError(
                f"ContrastiveLoss expects student_feat and teacher_feat of the same shape [B, D], "
                f"got {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}; project both "
                f"with ProjectionMLP(..., out_dim=D) first (it pools spatial maps to [B, D])"
            )
        if student_feat.shape[0] == 0:
            raise ValueError("ContrastiveLoss got an empty batch (B=0)")
        _check_finite("student_feat", student_feat)
        _check_finite("teacher_feat", teacher_feat)
        if student_feat.shape[0] == 1:
            warn_once(
                "ContrastiveLoss.batch1",
                "ContrastiveLoss at batch size 1: the only candidate is the positive, so InfoNCE "
                "is identically 0 and gives no gradient. Use SpatialContrastiveLoss (BEV cells as "
                "negatives) or MemoryBankContrastiveLoss (negatives from earlier batches).",
            )
        with full_precision(student_feat):
            s = F.normalize(as_fp32(student_feat), dim=1, eps=NORM_EPS)
            t = F.normalize(teacher_feat.to(s.dtype), dim=1, eps=NORM_EPS)
            return symmetric_info_nce(s @ t.T / self.temperature)


def foreground_weights(foreground: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """Turn a mask or heatmap into non-negative sampling weights ``[B, H*W]`` on grid ``size``.

    Accepts ``[B, H, W]``, ``[B, 1, H, W]`` or per-class ``[B, K, H, W]`` (max over classes), of any
    resolution covering the same world area; it is resized with :func:`resize_bev`.
    """
    _check_tensor("foreground", foreground)
    fg = foreground.detach()
    if not fg.is_floating_point():
        fg = fg.float()
    if fg.dim() == 3:
        fg = fg.unsqueeze(1)
    if fg.dim() != 4 or fg.shape[0] != batch:
        raise ValueError(
            f"foreground must be [B, H, W], [B, 1, H, W] or [B, num_classes, H, W] with B={batch}, "
            f"got shape {tuple(foreground.shape)}"
        )
    if not torch.isfinite(fg).all() or (fg < 0).any():
        raise ValueError(
            "foreground must be a mask or probabilities (finite, >= 0); for heatmap logits pass "
            "heatmap.sigmoid()"
        )
    return resize_bev(fg.amax(dim=1, keepdim=True), size).flatten(1)


def draw_cells(
    batch: int,
    n_cells: int,
    k: int,
    weights: torch.Tensor | None = None,
    foreground_fraction: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices ``[B, k]`` of distinct cells per sample.

    Without ``weights``: uniform. With ``weights`` ``[B, n_cells]``: ``round(fraction * k)`` cells
    drawn proportional to the weights (fewer if fewer cells have weight > 0), the rest uniformly
    from the cells not yet drawn. All draws are without replacement.
    """
    if weights is None:
        uniform = torch.ones(batch, n_cells, device=device)
        return torch.multinomial(uniform, k, replacement=False, generator=generator)
    n_fg = int(round(foreground_fraction * k))
    rows = []
    for w in weights:
        available = int((w > 0).sum())
        if available == 0 and n_fg > 0:
            warn_once(
                "SpatialContrastiveLoss.empty_foreground",
                "SpatialContrastiveLoss: a sample's foreground is empty (all zero); its cells are "
                "drawn uniformly instead.",
            )
        k_fg = min(n_fg, available)
        picked = w.new_zeros(0, dtype=torch.long)
        if k_fg > 0:
            picked = torch.multinomial(w, k_fg, replacement=False, generator=generator)
        rest = torch.ones_like(w)
        rest[picked] = 0
        if k > k_fg:
            others = torch.multinomial(rest, k - k_fg, replacement=False, generator=generator)
            picked = torch.cat([picked, others])
        rows.append(picked)
    return torch.stack(rows)


@MODELS.register_module()
class SpatialContrastiveLoss(nn.Module):
    """InfoNCE over BEV cells at the same world coordinates in student and teacher maps.

    For every sample, ``K = min(num_samples, Ht*Wt)`` distinct teacher cells are drawn; both maps
    are read at those cells' centres with :func:`~bevdistill.bev_grid.sample_cells` (bilinear,
    ``align_corners=False``, so grids of different and non-square sizes align), each cell vector
    is L2-normalised, and a symmetric InfoNCE treats the same-place teacher cell as the positive
    and the other K - 1 sampled cells of that sample as negatives. The loss is averaged over the
    batch, so it teaches at B=1.

    ``foreground`` (mask or heatmap probabilities) biases a ``foreground_fraction`` share of the
    samples towards objects: most BEV cells are empty road, which are easy, uninformative pairs.
    Cells are drawn on the teacher grid; when the teacher is finer than the student, neighbouring
    samples can fall in one student cell and be hard to tell apart, which ``num_samples`` well
    below ``Ht*Wt`` makes rare.
    """

    def __init__(
        self, temperature: float = 0.07, num_samples: int = 256, foreground_fraction: float = 0.5
    ):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(
                f"num_samples must be an int >= 2 (one positive, >= 1 negative), "
                f"got {num_samples!r}"
            )
        if not 0.0 <= float(foreground_fraction) <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
        self.num_samples = num_samples
        self.foreground_fraction = float(foreground_fraction)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, num_samples={self.num_samples}, "
            f"foreground_fraction={self.foreground_fraction}"
        )

    def forward(
        self,
        student_map: torch.Tensor,
        teacher_map: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``student_map`` ``[B, D, Hs, Ws]``, ``teacher_map`` ``[B, D, Ht, Wt]`` -> scalar loss.

        ``generator`` (on the maps' device) fixes the cell sampling, e.g. for gradcheck; without
        it the sampling uses torch's global RNG.
        """
        _check_features("student_map", student_map)
        _check_features("teacher_map", teacher_map)
        if student_map.dim() != 4 or teacher_map.dim() != 4:
            raise ValueError(
                f"SpatialContrastiveLoss expects BEV maps [B, D, H, W], "
                f"got {tuple(student_map.shape)} "
                f"and {tuple(teacher_map.shape)}; for pooled [B, D] embeddings use ContrastiveLoss"
            )
        if student_map.shape[0] != teacher_map.shape[0]:
            raise ValueError(
                f"student and teacher batch sizes differ: {student_map.shape[0]} vs "
                f"{teacher_map.shape[0]}; pass maps of the same samples"
            )
        if student_map.shape[1] != teacher_map.shape[1]:
            raise ValueError(
                f"student and teacher maps have {student_map.shape[1]} and {teacher_map.shape[1]} "
                f"channels; map both to a common dimension with SpatialProjector(in_dim, out_dim=D)"
            )
        _check_finite("student_map", student_map)
        _check_finite("teacher_map", teacher_map)
        if student_map.numel() == 0 or teacher_map.numel() == 0:
            raise LossInputError(
                f"SpatialContrastiveLoss got an empty batch or grid: student "
                f"{tuple(student_map.shape)}, teacher {tuple(teacher_map.shape)}"
            )
        student_map, teacher_map = as_fp32(student_map), as_fp32(teacher_map)
        ht, wt = teacher_map.shape[-2:]
        idx = self.draw_cell_indices(student_map.shape[0], (ht, wt), mask, generator,
                                     device=teacher_map.device)
        if idx is None:
            return student_map.sum() * 0.0
        coords = cell_centres(ht, wt, device=idx.device, dtype=student_map.dtype)[idx]
        with full_precision(student_map):
            return self.cell_loss(
                sample_cells(student_map, coords), sample_cells(teacher_map, coords)
            )

    def draw_cell_indices(
        self,
        batch: int,
        teacher_size: tuple[int, int] | torch.Size,
        foreground: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor | None:
        """Flat (row-major) indices ``[B, K]`` of the teacher cells to contrast.

        None (with a one-time warning) when the teacher grid has fewer than 2 cells. Together
        with :meth:`cell_loss` this lets a caller read and project only the K sampled cells
        instead of whole maps (what :class:`~bevdistill.BEVFusionDistillationLoss` does).
        """
        ht, wt = int(teacher_size[0]), int(teacher_size[1])
        n_cells = ht * wt
        if n_cells < 2:
            warn_once(
                "SpatialContrastiveLoss.few_cells",
                f"SpatialContrastiveLoss: the teacher grid has {n_cells} cell(s), so there is no "
                f"negative; the loss is 0. Distil a layer with a spatial grid.",
            )
            return None
        k = min(self.num_samples, n_cells)
        weights = None
        if foreground is not None and self.foreground_fraction > 0:
            weights = foreground_weights(foreground, batch, (ht, wt)).to(device)
        return draw_cells(batch, n_cells, k, weights, self.foreground_fraction, generator, device)

    def cell_loss(self, student_cells: torch.Tensor, teacher_cells: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of cell vectors ``[B, K, D]`` read at the same places (row k of
        both is the positive pair); vectors are L2-normalised here."""
        if student_cells.dim() != 3 or student_cells.shape != teacher_cells.shape:
            raise ValueError(
                f"cell_loss expects student and teacher cells of the same shape [B, K, D], got "
                f"{tuple(student_cells.shape)} and {tuple(teacher_cells.shape)}"
            )
        s = F.normalize(student_cells, dim=2, eps=NORM_EPS)
        t = F.normalize(teacher_cells.to(s.dtype), dim=2, eps=NORM_EPS)
        return symmetric_info_nce(torch.bmm(s, t.transpose(1, 2)) / self.temperature)


class MemoryBankContrastiveLoss(nn.Module):
    """InfoNCE whose negatives come from a memory of teacher embeddings, as CRD's do (CRD
    scores them with binary NCE, RepDistiller's ``ContrastLoss``; this is a softmax over them).

    ``memory[i]`` holds a running average of the teacher embedding of data set sample ``i``
    (random unit vectors at first). For each student embedding, the positive is the current
    teacher embedding of the same sample and ``num_negatives`` memory rows of *other* samples
    (drawn uniformly with replacement, as CRD does) are the negatives, so the loss is useful at
    B=1. After the loss, in training mode, the rows at ``index`` move towards the new teacher
    embeddings (``m <- normalize(momentum * m + (1 - momentum) * t)``); in eval mode the memory
    is left alone so validation samples do not overwrite training rows.
    """

    memory: torch.Tensor

    def __init__(
        self,
        feat_dim: int,
        bank_size: int,
        num_negatives: int = 4096,
        temperature: float = 0.07,
        momentum: float = 0.5,
    ):
        super().__init__()
        for name, value, low in (
            ("feat_dim", feat_dim, 1),
            ("bank_size", bank_size, 2),
            ("num_negatives", num_negatives, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.feat_dim, self.bank_size, self.num_negatives = feat_dim, bank_size, num_negatives
        self.temperature = _check_temperature(temperature)
        self.momentum = float(momentum)
        self.register_buffer("memory", F.normalize(torch.randn(bank_size, feat_dim), dim=1))

    def extra_repr(self) -> str:
        return (
            f"feat_dim={self.feat_dim}, bank_size={self.bank_size}, "
            f"num_negatives={self.num_negatives}, "
            f"temperature={self.temperature}, momentum={self.momentum}"
        )

    def _check_inputs(
        self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, index: torch.Tensor
    ) -> None:
        _check_features("student_emb", student_emb)
        _check_features("teacher_emb", teacher_emb)
        _check_tensor("index", index)
        batch = student_emb.shape[0] if student_emb.dim() == 2 else -1
        if (
            batch < 1
            or student_emb.shape != (batch, self.feat_dim)
            or teacher_emb.shape != student_emb.shape
        ):
            raise ValueError(
                f"MemoryBankContrastiveLoss(feat_dim={self.feat_dim}) expects student_emb and "
                f"teacher_emb of shape [B, {self.feat_dim}], got {tuple(student_emb.shape)} and "
                f"{tuple(teacher_emb.shape)}; project both with "
                f"ProjectionMLP(..., out_dim={self.feat_dim})"
            )
        if index.dtype not in (torch.int64, torch.int32) or index.shape != (batch,):
            raise TypeError(
                f"index must be an integer tensor [B] = [{batch}] of data set sample indices, got "
                f"dtype {index.dtype} and shape {tuple(index.shape)}"
            )
        if (index < 0).any() or (index >= self.bank_size).any():
            raise ValueError(
                f"index values must lie in [0, {self.bank_size}), got min {int(index.min())}, max "
                f"{int(index.max())}; set bank_size to the data set's length"
            )
        _check_finite("student_emb", student_emb)
        _check_finite("teacher_emb", teacher_emb)

    def forward(
        self,
        student_emb: torch.Tensor,
        teacher_emb: torch.Tensor,
        index: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self._check_inputs(student_emb, teacher_emb, index)
        index = index.to(device=self.memory.device, dtype=torch.long)
        with full_precision(student_emb):
            return self._loss(as_fp32(student_emb), as_fp32(teacher_emb), index, generator)

    def _loss(self, student_emb, teacher_emb, index, generator) -> torch.Tensor:
        s = F.normalize(student_emb, dim=1, eps=NORM_EPS)
        t = F.normalize(teacher_emb.to(s.dtype), dim=1, eps=NORM_EPS)
        # Draw from bank_size - 1 rows, then skip each sample's own row.
        draw = torch.randint(
            0,
            self.bank_size - 1,
            (s.shape[0], self.num_negatives),
            generator=generator,
            device=self.memory.device,
        )
        neg_idx = draw + (draw >= index.unsqueeze(1)).long()
        negatives = self.memory[neg_idx].to(device=s.device, dtype=s.dtype)  # [B, N, D], no grad
        pos = (s * t).sum(dim=1, keepdim=True)
        neg = torch.bmm(negatives, s.unsqueeze(2)).squeeze(2)
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(s.shape[0], dtype=torch.long, device=s.device))
        if self.training:
            self._update(t.detach(), index)
        return loss

    @torch.no_grad()
    def _update(self, teacher: torch.Tensor, index: torch.Tensor) -> None:
        rows = self.memory[index] * self.momentum + teacher.to(self.memory) * (1 - self.momentum)
        self.memory[index] = F.normalize(rows, dim=1, eps=NORM_EPS)
