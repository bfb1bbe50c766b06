"""Measurements of one distillation recipe on one student's weights: what each term pulls, and
how alike the student's and the teacher's maps are.

* :func:`linear_cka`: linear centred kernel alignment (Kornblith et al., 2019) between two sets
  of features of the same samples; here the samples are BEV cells, so it asks whether the two
  maps tell the same cells apart, whatever their channels mean. 1 for maps that differ only by
  an orthogonal transform and a scale, near 0 for unrelated maps.
* :func:`box_cells`: which cells of a BEV grid lie inside ground-truth boxes (the foreground).
* :class:`TermProbe`: a Distiller of the full recipe, into which any run's weights are loaded,
  to measure at those weights the gradient of every distillation loss key and of the detection
  loss (on the student's parameters and on each hooked map), and the CKA of each hooked map with
  the teacher's, over all cells and over the foreground.

Used by :mod:`benchmarks.term_diagnosis`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bevdistill.bev_grid import resize_bev
from bevdistill.losses.response import heatmap_logits
from bevdistill.losses.terms import as_feature

DETECTION = "detection"  # the student's own losses, summed
HEATMAP_LABEL = "heatmap"  # how tables name the head's class-heatmap layer


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of ``x`` [N, P] and ``y`` [N, Q], rows the same N samples (float64 inside).

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``:
    invariant to orthogonal transforms and isotropic scaling of either side, 1 for ``x`` with
    itself.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs [N, P] and [N, Q] features of the same N samples, got "
                         f"shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"linear_cka needs at least 2 samples, got {x.shape[0]}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    xx, yy = torch.linalg.matrix_norm(x.T @ x), torch.linalg.matrix_norm(y.T @ y)
    if xx == 0 or yy == 0:
        raise ValueError("linear_cka: one side is constant over the samples (no variance); "
                         "CKA is undefined there. Pick samples where both maps vary")
    return float((y.T @ x).pow(2).sum() / (xx * yy))


def box_cells(boxes: torch.Tensor, grid: tuple[int, int], pc_range: Sequence[float]
              ) -> torch.Tensor:
    """``[H, W]`` bool: cells whose centre lies inside a box in bird's-eye view, plus the cell
    holding each box's centre (so that a box smaller than a cell still has one).

    ``boxes``: ``[M, >=7]`` (x, y, z, l, w, h, yaw, ...) in metres; rows of the grid run along y
    and columns along x over ``pc_range`` (x0, y0, z0, x1, y1, z1), as the pillar scatter lays
    them out.
    """
    h, w = grid
    x0, y0, _, x1, y1, _ = (float(v) for v in pc_range)
    mask = torch.zeros(h, w, dtype=torch.bool)
    if boxes.numel() == 0:
        return mask
    boxes = boxes.double()
    cx = x0 + (torch.arange(w, dtype=torch.float64) + 0.5) * (x1 - x0) / w
    cy = y0 + (torch.arange(h, dtype=torch.float64) + 0.5) * (y1 - y0) / h
    dx = cx[None, None, :] - boxes[:, 0, None, None]  # [M, 1, W]
    dy = cy[None, :, None] - boxes[:, 1, None, None]  # [M, H, 1]
    c, s = boxes[:, 6].cos()[:, None, None], boxes[:, 6].sin()[:, None, None]
    along, across = c * dx + s * dy, -s * dx + c * dy
    inside = (along.abs() <= boxes[:, 3, None, None] / 2) & (
        across.abs() <= boxes[:, 4, None, None] / 2)
    mask |= inside.any(0)
    col = ((boxes[:, 0] - x0) / (x1 - x0) * w).floor().long().clamp(0, w - 1)
    row = ((boxes[:, 1] - y0) / (y1 - y0) * h).floor().long().clamp(0, h - 1)
    mask[row, col] = True
    return mask


def as_map(value: Any, hook: str, heatmap: bool, role: str) -> torch.Tensor:
    """The ``[B, C, H, W]`` map a hook recorded (the heatmap logits for the head)."""
    return heatmap_logits(value, who=f"{role} {hook!r}") if heatmap else as_feature(hook, value,
                                                                                     role)


def _grad_vector(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]
                 ) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, params, strict=True)])


class TermProbe:
    """The full recipe's Distiller, to measure any run's weights with (see the module docstring).

    Args:
        model: a built Distiller whose terms are the recipe at its own weights.
        probe_batches: batches (as the data loader gives them) of the tuning split, for CKA.
        grad_batches: training batches, for the gradients.
        pc_range: the student's point-cloud range (the grids' extent).
    """

    def __init__(self, model: Any, probe_batches: Sequence[dict], grad_batches: Sequence[dict],
                 pc_range: Sequence[float]):
        self.model, self.pc_range = model, list(pc_range)
        self.driver = model.driver
        self.hooks = list(model.hooks["student"])
        self.heatmap_hook = model.kd_hook
        self.teacher_hook = {p.student: p.teacher for spec in model.specs for p in spec.pairs}
        self.labels = {h: HEATMAP_LABEL if h == self.heatmap_hook else h for h in self.hooks}
        self.probe_batches = [model.data_preprocessor(b, False) for b in probe_batches]
        self.grad_batches = [model.data_preprocessor(b, True) for b in grad_batches]
        self.init_state = {k: v.clone() for k, v in model.state_dict().items()}
        first = self._maps("student")
        self.grids = {h: (int(m[0].shape[-2]), int(m[0].shape[-1])) for h, m in first.items()}
        self.teacher_maps = self._maps("teacher", self.grids)
        self.masks = self._foreground()

    # --- weights ---------------------------------------------------------------------------

    def load(self, checkpoint: str | Path | None, trained_alone: bool) -> list[str]:
        """Load a run's weights (None: the initialisation); returns the recipe's keys the run did
        not have (the connectors of terms it trained without stay at their initialisation)."""
        from bevdistill.engine.checkpoint import read_state_dict

        self.model.load_state_dict(self.init_state)
        if checkpoint is None:
            return []
        state = read_state_dict(checkpoint)
        if trained_alone:
            state = {f"student.{k}": v for k, v in state.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        student_missing = [k for k in missing if k.startswith("student.")]
        if student_missing or unexpected:
            raise RuntimeError(f"{checkpoint} does not fit the probe's student: missing "
                               f"{student_missing[:5]}, unexpected {unexpected[:5]}")
        return sorted(missing)

    # --- maps and CKA ----------------------------------------------------------------------

    def _maps(self, role: str, grids: Mapping[str, tuple[int, int]] | None = None
              ) -> dict[str, list[torch.Tensor]]:
        """Per hooked layer (named by the student's hook), ``role``'s maps of the probe scenes
        (eval mode, no gradient), resized to ``grids`` where given (the teacher's grids may
        differ from the student's)."""
        out: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        model = self.model
        model.eval()
        for data in self.probe_batches:
            # Through the Distiller's own recorders, with the data samples the driver's
            # forwards take.
            with torch.no_grad():
                if role == "teacher":
                    self.driver.teacher_forward(model.teacher, data["inputs"],
                                                data["data_samples"], model.hooks["teacher"])
                else:
                    self.driver.student_tensor(model.student, data["inputs"],
                                               data["data_samples"], model.hooks["student"])
            captured = model.captured(role)
            for s_hook in self.hooks:
                hook = s_hook if role == "student" else self.teacher_hook[s_hook]
                m = as_map(captured[hook], hook, s_hook == self.heatmap_hook, role).detach()
                out[s_hook].append(resize_bev(m.float(), grids[s_hook]) if grids else m.float())
        return out

    def _foreground(self) -> dict[str, torch.Tensor]:
        """Per hooked layer, ``[N]`` bool over the flattened cells of the probe scenes."""
        masks = {}
        for hook, grid in self.grids.items():
            rows = [box_cells(sample["gt_boxes"], grid, self.pc_range).reshape(-1)
                    for data in self.probe_batches for sample in data["data_samples"]]
            masks[hook] = torch.cat(rows)
        return masks

    @staticmethod
    def _cells(maps: list[torch.Tensor]) -> torch.Tensor:
        """``[N, C]``: every cell of every scene, a sample each."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(-1, m.shape[1]) for m in maps])

    def cka(self) -> list[dict[str, Any]]:
        """CKA of the student's maps (its current weights) with the teacher's, per hooked layer,
        over all cells and over the cells inside boxes."""
        student = self._maps("student")
        rows = []
        for hook in self.hooks:
            s, t = self._cells(student[hook]), self._cells(self.teacher_maps[hook])
            fg = self.masks[hook]
            rows.append(dict(layer=self.labels[hook], cells="all", n=len(s),
                             cka=linear_cka(s, t)))
            n_fg = int(fg.sum())
            rows.append(dict(layer=self.labels[hook], cells="foreground", n=n_fg,
                             cka=linear_cka(s[fg], t[fg]) if n_fg >= 2 else None))
        return rows

    # --- gradients -------------------------------------------------------------------------

    def gradients(self) -> list[dict[str, Any]]:
        """Per loss key, per term (its keys summed), for the detection loss and for the sum of
        everything (what the optimiser is handed): the norm of its gradient on the student's
        parameters and on each hooked map, and the cosine of its parameter gradient with the
        detection loss's; norms averaged over the gradient batches, in train mode as in a step."""
        model = self.model
        params = [p for p in model.student.parameters() if p.requires_grad]
        keys = list(model.loss_keys)
        sums: dict[str, dict[str, float]] = {}
        model.train()
        for data in self.grad_batches:
            losses = model.loss(data["inputs"], data["data_samples"])
            captured = model.captured("student")
            maps = [as_map(captured[h], h, h == self.heatmap_hook, "student") for h in self.hooks]
            detection = sum(v for k, v in losses.items() if k.startswith("loss") and k not in keys)
            groups = {DETECTION: detection, **{k: losses[k] for k in keys}}
            vectors, feats = {}, {}
            for name, loss in groups.items():
                grads = torch.autograd.grad(loss, params + maps, retain_graph=True,
                                            allow_unused=True)
                vectors[name] = _grad_vector(grads[:len(params)], params)
                # None: the key does not reach that map (it lies downstream of the key's layer)
                feats[name] = [None if g is None else float(g.norm()) for g in grads[len(params):]]
            for term in model.distill_loss.terms.values():  # a term: its layers' keys summed
                vectors[f"term:{term.name}"] = sum(vectors[k] for k in term.loss_keys)
                feats[f"term:{term.name}"] = None
            vectors["total"] = sum(vectors[k] for k in groups)
            feats["total"] = None
            det = vectors[DETECTION]
            for name, vec in vectors.items():
                row = sums.setdefault(name, {})
                row["param_norm"] = row.get("param_norm", 0.0) + float(vec.norm())
                cos = torch.nn.functional.cosine_similarity(vec, det, dim=0)
                row["cosine_to_detection"] = row.get("cosine_to_detection", 0.0) + float(cos)
                for hook, norm in zip(self.hooks, feats[name] or [], strict=False):
                    if norm is not None:
                        key = f"map_norm.{self.labels[hook]}"
                        row[key] = row.get(key, 0.0) + norm
            model.zero_grad(set_to_none=True)
        model.eval()
        n = len(self.grad_batches)
        det = sums[DETECTION]
        rows = []
        for name, row in sums.items():
            mean = {k: v / n for k, v in row.items()}
            out = dict(key=name, param_norm=mean["param_norm"],
                       param_ratio_to_detection=mean["param_norm"] / (det["param_norm"] / n),
                       cosine_to_detection=mean["cosine_to_detection"])
            for k, v in mean.items():
                if k.startswith("map_norm."):
                    out[k] = v
                    d = det[k] / n
                    out[k.replace("map_norm", "map_ratio")] = v / d if d > 0 else None
            rows.append(out)
        return rows
