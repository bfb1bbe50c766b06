"""Step 5: every distillation term of every captured layer, as one dict mmengine can sum.

Per layer present in both ``student_channels`` and ``teacher_channels``:

* ``loss_crd.<layer>``: contrastive alignment of projected features, weighted by ``alpha_crd``.
  ``contrastive='global'`` pools each map to one embedding per sample (the tutorial's
  ProjectionMLP + InfoNCE; needs B >= 2 to teach); ``'spatial'`` samples ``num_samples`` BEV
  cells, projects them and contrasts cells at the same world place (teaches at B=1); ``'none'``
  skips the term.
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

The loss is built on the parts every recipe uses (:mod:`bevdistill.losses.terms`): each
``alpha_*`` becomes one term (registered loss + connector + weight), and ``terms=[...]`` adds
terms of your own beside them: :func:`bevdistill.losses.recipe.tutorial_terms` is the one place
that says which terms the arguments stand for. Spatial InfoNCE projects only the cells it samples
(a ``reads='cells'`` term, :mod:`bevdistill.losses.cells`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from bevdistill._warnings import warn_once
from bevdistill.losses.attention import Normalization
from bevdistill.losses.recipe import CONTRASTIVE, tutorial_terms
from bevdistill.losses.terms import (
    HEATMAP,
    DistillationTerms,
    MissingFeatureError,  # noqa: F401 (re-exported: raised for a layer absent from the features)
    check_weight,
    module_key,  # noqa: F401 (re-exported)
)

Contrastive = Literal["global", "spatial", "none"]
OUTPUTS = HEATMAP  # where the heads' outputs appear among the features, unless kd_layer says


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


class BEVFusionDistillationLoss(DistillationTerms):
    """Contrastive + attention-transfer + feature + response distillation over several BEV layers.

    ``student_channels`` / ``teacher_channels``: ``{layer: channels}`` of the captured features
    (the same layer names on both sides). ``layer_weights``: ``{layer: w}`` multiplying every term
    of that layer (default 1). See the module docstring for the terms and key names.

    ``layers`` (default: every layer of the channel dicts) are the layers the ``alpha_*`` terms
    read; the channel dicts may name more, for ``terms``: extra term configs
    (:mod:`bevdistill.losses.terms`). ``kd_layer``: the feature key under which the heads'
    outputs arrive when they are passed inside the feature dicts (as the ``Distiller`` does).
    ``schedule``: a :class:`~bevdistill.losses.terms.WeightSchedule` config applied to every
    ``alpha_*`` term's weight over the Runner's iterations, e.g. ``dict(decay_begin=500,
    decay_end=1500, final=0.0)`` to imitate the teacher early and leave the student to its labels
    later.
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
        layers: Sequence[str] | None = None,
        kd_layer: str = OUTPUTS,
        terms: Sequence[Mapping[str, Any]] = (),
        schedule: Mapping[str, Any] | None = None,
    ):
        student_channels = _check_channels(student_channels, "student")
        teacher_channels = _check_channels(teacher_channels, "teacher")
        if layers is None and set(student_channels) != set(teacher_channels):
            raise ValueError(
                "student_channels and teacher_channels must name the same layers; got student "
                f"{sorted(student_channels)} and teacher {sorted(teacher_channels)}. "
                "Distil only layers both models have (drop the others from both dicts)."
            )
        self_layers = tuple(student_channels if layers is None else layers)
        absent = [x for x in self_layers if x not in student_channels or x not in teacher_channels]
        if absent:
            raise ValueError(f"layers {absent} are missing from student_channels/teacher_channels")
        if not self_layers:
            raise ValueError("no layers to distil: student_channels and teacher_channels are empty")
        if contrastive not in CONTRASTIVE:
            raise ValueError(f"contrastive must be one of {CONTRASTIVE}, got {contrastive!r}")
        keys = [module_key(layer) for layer in self_layers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"layer names {self_layers} collide once '.' is replaced by '__'")
        alphas = {name: check_weight(name, value) for name, value in (
            ("alpha_crd", alpha_crd), ("alpha_at", alpha_at), ("alpha_kd", alpha_kd),
            ("alpha_mse", alpha_mse))}
        layer_weights = dict(layer_weights or {})
        unknown = sorted(set(layer_weights) - set(self_layers))
        if unknown:
            raise ValueError(
                f"layer_weights names unknown layers {unknown}; layers: {list(self_layers)}"
            )
        weights = {layer: check_weight(f"layer_weights[{layer!r}]", layer_weights.get(layer, 1.0))
                   for layer in self_layers}
        super().__init__(
            tutorial_terms(self_layers, weights, contrastive=contrastive, feat_dim=feat_dim,
                           hidden_dim=hidden_dim, temperature=temperature, num_samples=num_samples,
                           at_normalization=at_normalization, kd_temperature=kd_temperature,
                           kd_layer=kd_layer, schedule=schedule, **alphas) + list(terms),
            student_channels, teacher_channels,
        )
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.layers, self.layer_weights, self.kd_layer = self_layers, weights, kd_layer
        self.contrastive, self.feat_dim = contrastive, feat_dim
        self.require_outputs = bool(require_outputs)

    # Named views of the terms' parts (the tutorial's attribute names).
    def _part(self, term: str, what: str) -> nn.ModuleDict:
        return getattr(self.terms[term], what) if term in self.terms else nn.ModuleDict()

    @property
    def projectors_s(self) -> nn.ModuleDict:
        return self._part("crd", "student_connectors")

    @property
    def projectors_t(self) -> nn.ModuleDict:
        return self._part("crd", "teacher_connectors")

    @property
    def feature_losses(self) -> nn.ModuleDict:
        return self._part("mse", "losses")

    @property
    def contrastive_loss(self) -> nn.Module | None:
        return next(iter(self._part("crd", "losses").values()), None)

    def forward(
        self,
        student_features: Mapping[str, Any],
        teacher_features: Mapping[str, Any],
        student_outputs: Any = None,
        teacher_outputs: Any = None,
        foreground: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Features: ``{layer: tensor}`` (a one-element list/tuple is unwrapped). Outputs: heatmap
        logits ``[B, K, H, W]``, a dict with ``'heatmap'`` or a list of per-task dicts, passed
        here or inside the feature dicts under ``kd_layer``. ``foreground`` (``[B, H, W]`` mask
        or class probabilities, any grid) focuses AT, feature MSE and spatial InfoNCE.
        """
        for side, features in (("student", student_features), ("teacher", teacher_features)):
            if not isinstance(features, Mapping):
                raise TypeError(
                    f"{side}_features must be a dict layer name -> tensor (what the wrapper "
                    f"returns), got {type(features).__name__}"
                )
        student_features, teacher_features = dict(student_features), dict(teacher_features)
        skip = set()
        if "kd" in self.terms and self.kd_layer not in student_features:
            if student_outputs is None and teacher_outputs is None:
                self._no_outputs()
                skip.add("kd")
            elif student_outputs is None or teacher_outputs is None:
                given = "student_outputs" if teacher_outputs is None else "teacher_outputs"
                raise ValueError(f"only {given} was passed; response distillation needs both")
            else:
                student_features[self.kd_layer] = student_outputs
                teacher_features[self.kd_layer] = teacher_outputs
        return self.sum_terms(student_features, teacher_features, mask=foreground, skip=skip)

    def _no_outputs(self) -> None:
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
