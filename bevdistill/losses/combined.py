"""Step 5: every distillation term of every captured layer, as one dict mmengine can sum.

Per layer present in both ``student_channels`` and ``teacher_channels``:

* ``loss_crd.<layer>``: contrastive alignment of projected features, weighted by ``alpha_crd``.
  ``contrastive='global'`` pools each map to one embedding per sample (the tutorial's
  ProjectionMLP + InfoNCE; needs B >= 2 to teach); ``'spatial'`` projects every BEV cell and
  contrasts cells at the same world place (teaches at B=1); ``'none'`` skips the term.
* ``loss_at.<layer>``: attention transfer, weighted by ``alpha_at``, for layers whose student and
  teacher features are both spatial maps (``[B, C, H, W]`` or ``[B, C, D, H, W]``).
* ``loss_mse.<layer>``: FitNets-style feature imitation (:class:`FeatureMSELoss`: 1x1 adapter,
  student resized to the teacher grid, MSE), weighted by ``alpha_mse`` (default 0: off), for
  layers whose features are both BEV maps ``[B, C, H, W]``.

and, when head outputs are passed, ``loss_kd.heatmap``: binary-KL response distillation of the
class heatmaps, weighted by ``alpha_kd`` (the tutorial accepts ``alpha_kd`` and never uses it).
If ``alpha_kd > 0`` and no outputs are passed, there is no ``loss_kd`` key and a one-time warning
says so (``require_outputs=True`` raises instead).

Every key contains ``loss``, so mmengine's ``parse_losses`` sums them all; a term whose weight
(``alpha * layer_weights[layer]``) is 0 is neither computed nor returned, and its projectors are
not built (DDP rejects parameters that never receive a gradient).

Where the tutorial wraps each layer in ``try/except: print`` (a mistyped layer name or channel
count then silently trains without distillation), this raises at the first call with what was
wrong and how to fix it. All terms are computed in float32 even under autocast; the teacher's
features and outputs are detached.

Cost: spatial InfoNCE draws its K cells first and projects only those (K vectors per sample,
not H*W). For the teacher, whose grid the cells are drawn on, this is exactly the projection
of the full map read at the cells. The student is read at the same world points by bilinear
interpolation of its *raw* features, then projected; where the student grid differs from the
teacher's this interpolates before the (non-linear) projector instead of after it, the same
choice a per-point projector makes, and still compares the two models at the same world place.
Where the grids are equal (the neck and the last backbone scale of the presets) both readings
are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, Literal

import torch
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.bev_grid import cell_centres, gather_cells, sample_cells
from bevdistill.losses._checks import LossInputError, NonFiniteLossError
from bevdistill.losses.attention import AttentionTransferLoss, Normalization
from bevdistill.losses.contrastive import ContrastiveLoss, SpatialContrastiveLoss
from bevdistill.losses.feature import FeatureMSELoss
from bevdistill.losses.response import HeatmapDistillationLoss, heatmap_logits
from bevdistill.projection import ProjectionMLP, SpatialProjector

Contrastive = Literal["global", "spatial", "none"]
_CONTRASTIVE = ("global", "spatial", "none")
_HALF = (torch.float16, torch.bfloat16)


class MissingFeatureError(KeyError):
    """A layer the loss was built for is absent from the captured features."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def module_key(layer: str) -> str:
    """A ModuleDict-safe key for a dotted layer name ('bbox_head.heatmap_head')."""
    return layer.replace(".", "__")


def _check_channels(channels: Any, side: str) -> dict[str, int]:
    if not isinstance(channels, Mapping):
        raise TypeError(
            f"{side}_channels must be a dict layer name -> channels, e.g. {{'pts_neck': 512}}, "
            f"got {type(channels).__name__}"
        )
    for layer, c in channels.items():
        if not isinstance(layer, str) or not layer:
            raise TypeError(
                f"{side}_channels: layer names must be non-empty strings, got {layer!r}"
            )
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"{side}_channels[{layer!r}] must be a positive int, got {c!r}")
    return dict(channels)


def _check_weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _to_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32; float32 and float64 (gradcheck) stay as they are."""
    return x.float() if x.dtype in _HALF else x


class BEVFusionDistillationLoss(nn.Module):
    """Contrastive + attention-transfer + response distillation over several BEV layers.

    ``student_channels`` / ``teacher_channels``: ``{layer: channels}`` of the captured features
    (the same layer names on both sides). ``layer_weights``: ``{layer: w}`` multiplying every term
    of that layer (default 1). See the module docstring for the terms and key names.
    """

    def __init__(
        self,
        student_channels: Mapping[str, int],
        teacher_channels: Mapping[str, int],
        feat_dim: int = 128,
        temperature: float = 0.07,
        alpha_crd: float = 1.0,
        alpha_at: float = 0.5,
        alpha_kd: float = 0.5,
        layer_weights: Mapping[str, float] | None = None,
        contrastive: Contrastive = "global",
        num_samples: int = 256,
        at_normalization: Normalization = "l2",
        kd_temperature: float = 1.0,
        require_outputs: bool = False,
        alpha_mse: float = 0.0,
        hidden_dim: int = 256,
    ):
        super().__init__()
        self.student_channels = _check_channels(student_channels, "student")
        self.teacher_channels = _check_channels(teacher_channels, "teacher")
        if set(self.student_channels) != set(self.teacher_channels):
            raise ValueError(
                "student_channels and teacher_channels must name the same layers; got student "
                f"{sorted(self.student_channels)} and teacher {sorted(self.teacher_channels)}. "
                "Distil only layers both models have (drop the others from both dicts)."
            )
        if not self.student_channels:
            raise ValueError("no layers to distil: student_channels and teacher_channels are empty")
        if contrastive not in _CONTRASTIVE:
            raise ValueError(f"contrastive must be one of {_CONTRASTIVE}, got {contrastive!r}")
        self.layers = tuple(self.student_channels)
        keys = [module_key(layer) for layer in self.layers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"layer names {self.layers} collide once '.' is replaced by '__'")

        self.alpha_crd = _check_weight("alpha_crd", alpha_crd)
        self.alpha_at = _check_weight("alpha_at", alpha_at)
        self.alpha_kd = _check_weight("alpha_kd", alpha_kd)
        self.alpha_mse = _check_weight("alpha_mse", alpha_mse)
        layer_weights = dict(layer_weights or {})
        unknown = sorted(set(layer_weights) - set(self.layers))
        if unknown:
            raise ValueError(
                f"layer_weights names unknown layers {unknown}; layers: {list(self.layers)}"
            )
        self.layer_weights = {
            layer: _check_weight(f"layer_weights[{layer!r}]", layer_weights.get(layer, 1.0))
            for layer in self.layers
        }
        self.contrastive = contrastive
        self.feat_dim = feat_dim
        self.require_outputs = bool(require_outputs)

        self.projectors_s = nn.ModuleDict()
        self.projectors_t = nn.ModuleDict()
        projector = SpatialProjector if contrastive == "spatial" else ProjectionMLP
        for layer in self._layers_with("crd"):
            key = module_key(layer)
            self.projectors_s[key] = projector(
                self.student_channels[layer], hidden_dim=hidden_dim, out_dim=feat_dim
            )
            self.projectors_t[key] = projector(
                self.teacher_channels[layer], hidden_dim=hidden_dim, out_dim=feat_dim
            )
        self.feature_losses = nn.ModuleDict({
            module_key(layer): FeatureMSELoss(
                self.student_channels[layer], self.teacher_channels[layer]
            )
            for layer in self._layers_with("mse")
        })
        if contrastive == "spatial":
            self.contrastive_loss = SpatialContrastiveLoss(temperature, num_samples=num_samples)
        else:
            self.contrastive_loss = ContrastiveLoss(temperature)
        self.attention_loss = AttentionTransferLoss(normalization=at_normalization)
        self.response_loss = HeatmapDistillationLoss(kd_temperature)

    def weight(self, term: str, layer: str) -> float:
        """The factor of ``loss_<term>.<layer>``: the term's alpha times the layer's weight."""
        alpha = {
            "crd": self.alpha_crd if self.contrastive != "none" else 0.0,
            "at": self.alpha_at,
            "mse": self.alpha_mse,
        }
        return alpha[term] * self.layer_weights[layer]

    def _layers_with(self, term: str) -> list[str]:
        return [layer for layer in self.layers if self.weight(term, layer) > 0]

    # --- input checks: every mistake raises at the first call, naming the layer ---------------

    def _feature(self, features: Any, side: str, layer: str) -> torch.Tensor:
        if not isinstance(features, Mapping):
            raise TypeError(
                f"{side}_features must be a dict layer name -> tensor (what the wrapper returns), "
                f"got {type(features).__name__}"
            )
        if layer not in features:
            raise MissingFeatureError(
                f"{side} features have no {layer!r} (present: {sorted(features)}). Capture it "
                "(hook points of the wrapper/recorder) or build the loss without it."
            )
        x = features[layer]
        if isinstance(x, (list, tuple)):
            if len(x) != 1:
                shapes = [
                    tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__ for e in x
                ]
                raise ValueError(
                    f"{side} feature {layer!r} is a {type(x).__name__} of {len(x)} elements with "
                    f"shapes {shapes}; pick one scale when capturing, e.g. select={{{layer!r}: -1}} "
                    "on the wrapper/recorder"
                )
            x = x[0]
        if not isinstance(x, torch.Tensor) and hasattr(x, "dense"):
            x = x.dense()  # spconv's SparseConvTensor
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise LossInputError(
                f"{side} feature {layer!r} must be a float tensor, got {_describe(x)}"
            )
        if x.numel() == 0:
            raise LossInputError(
                f"{side} feature {layer!r} is empty (shape {tuple(x.shape)}): a batch of 0 "
                "samples or a grid with 0 cells has nothing to distil; skip empty batches"
            )
        if not 2 <= x.dim() <= 5:
            raise ValueError(
                f"{side} feature {layer!r} has shape {tuple(x.shape)}; expected [B, C], [B, C, N], "
                "[B, C, H, W] or [B, C, D, H, W]"
            )
        expected = (self.student_channels if side == "student" else self.teacher_channels)[layer]
        if x.shape[1] != expected:
            raise ValueError(
                f"{side} feature {layer!r} has {x.shape[1]} channels (shape {tuple(x.shape)}) but "
                f"the loss was built with {side}_channels[{layer!r}]={expected}; rebuild it with "
                f"{x.shape[1]} (build_bevfusion_distillation infers channels by a dry forward) or "
                "check that the right module is hooked"
            )
        if self.contrastive == "spatial" and self.weight("crd", layer) > 0 and x.dim() != 4:
            raise ValueError(
                f"{side} feature {layer!r} has shape {tuple(x.shape)}; contrastive='spatial' needs a "
                f"BEV map [B, C, H, W]. Use contrastive='global' or layer_weights={{{layer!r}: 0}}"
            )
        if self.weight("mse", layer) > 0 and x.dim() != 4:
            raise ValueError(
                f"{side} feature {layer!r} has shape {tuple(x.shape)}; alpha_mse > 0 needs a BEV "
                f"map [B, C, H, W]. Set alpha_mse=0 or layer_weights={{{layer!r}: 0}}"
            )
        return x

    def _outputs(self, student_outputs: Any, teacher_outputs: Any):
        if self.alpha_kd == 0:
            return None
        if student_outputs is None and teacher_outputs is None:
            if self.require_outputs:
                raise ValueError(
                    "alpha_kd > 0 and require_outputs=True, but no student_outputs/teacher_outputs "
                    "were passed; pass the heads' heatmap logits or set alpha_kd=0"
                )
            warn_once(
                "BEVFusionDistillationLoss.no_outputs",
                "BEVFusionDistillationLoss: alpha_kd > 0 but no head outputs were passed, so there "
                "is no response-distillation term (loss_kd); pass student_outputs and "
                "teacher_outputs, or set alpha_kd=0 to silence this.",
                UserWarning,
            )
            return None
        if student_outputs is None or teacher_outputs is None:
            given = "student_outputs" if teacher_outputs is None else "teacher_outputs"
            raise ValueError(f"only {given} was passed; response distillation needs both")
        return heatmap_logits(student_outputs, who="student"), heatmap_logits(
            teacher_outputs, who="teacher"
        )

    # --- the loss -------------------------------------------------------------------------------

    def forward(
        self,
        student_features: Mapping[str, Any],
        teacher_features: Mapping[str, Any],
        student_outputs: Any = None,
        teacher_outputs: Any = None,
        foreground: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Features: ``{layer: tensor}`` (a one-element list/tuple is unwrapped). Outputs: heatmap
        logits ``[B, K, H, W]``, a dict with ``'heatmap'`` or a list of per-task dicts. ``foreground``
        (``[B, H, W]`` mask or class probabilities, any grid) focuses AT and spatial InfoNCE.
        """
        pairs = {}
        for layer in self.layers:
            s = self._feature(student_features, "student", layer)
            t = self._feature(teacher_features, "teacher", layer)
            if s.shape[0] != t.shape[0]:
                raise ValueError(
                    f"{layer!r}: student batch size {s.shape[0]} differs from the teacher's "
                    f"{t.shape[0]}; both models must see the same samples"
                )
            pairs[layer] = (s, t)
        outputs = self._outputs(student_outputs, teacher_outputs)

        device_type = next(iter(pairs.values()))[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._losses(pairs, outputs, foreground)

    def _losses(self, pairs, outputs, foreground) -> dict[str, torch.Tensor]:
        if foreground is not None:
            foreground = _to_fp32(foreground.detach())
        losses: dict[str, torch.Tensor] = {}
        for layer, (s, t) in pairs.items():
            s, t = _to_fp32(s), _to_fp32(t.detach())
            w_crd = self.weight("crd", layer)
            key = module_key(layer)
            if w_crd > 0:
                if self.contrastive == "spatial":
                    crd = self._spatial_crd(key, s, t, foreground)
                else:
                    crd = _term(f"loss_crd.{layer}", self.contrastive_loss,
                                self.projectors_s[key](s), self.projectors_t[key](t))
                losses[f"loss_crd.{layer}"] = w_crd * crd
            w_at = self.weight("at", layer)
            if w_at > 0 and s.dim() in (4, 5) and t.dim() in (4, 5):
                at = _term(f"loss_at.{layer}", self.attention_loss, s, t, foreground)
                losses[f"loss_at.{layer}"] = w_at * at
            w_mse = self.weight("mse", layer)
            if w_mse > 0:
                mse = _term(f"loss_mse.{layer}", self.feature_losses[key], s, t, foreground)
                losses[f"loss_mse.{layer}"] = w_mse * mse
        if outputs is not None:
            s_logits, t_logits = _to_fp32(outputs[0]), _to_fp32(outputs[1].detach())
            kd = _term("loss_kd.heatmap", self.response_loss, s_logits, t_logits)
            losses["loss_kd.heatmap"] = self.alpha_kd * kd
        return losses

    def _spatial_crd(self, key: str, s: torch.Tensor, t: torch.Tensor, foreground) -> torch.Tensor:
        """Spatial InfoNCE on the K sampled cells only (see the module docstring for why)."""
        loss_fn: SpatialContrastiveLoss = self.contrastive_loss  # type: ignore[assignment]
        index = loss_fn.draw_cell_indices(s.shape[0], t.shape[-2:], foreground, device=t.device)
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
                    f"{name} feature {key.replace('__', '.')!r} contains NaN or inf at the cells "
                    "sampled for spatial InfoNCE; the loss would be NaN. Check the layer that "
                    "produced it (e.g. run the model in fp32 or lower the learning rate)"
                )
        s_emb = self.projectors_s[key].project_cells(s_cells)
        t_emb = self.projectors_t[key].project_cells(t_cells)
        return loss_fn.cell_loss(s_emb, t_emb)


def _term(key: str, loss: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
    """``loss(*inputs)``; a bad input is re-raised naming the term (and so the layer)."""
    try:
        return loss(*inputs)
    except LossInputError as exc:
        raise type(exc)(f"{key}: {exc}") from exc


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
