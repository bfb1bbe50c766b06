"""Distillation terms composed in config: a recipe is a list, not code.

A term is a registered loss (mmengine ``MODELS``), what it reads, the layer(s) it reads (student
and teacher hook names, which may differ), a connector per side that maps features before the
loss (a projection MLP, a 1x1 spatial projector, or none), a weight and an optional schedule::

    terms = [
        dict(name='kl', loss=dict(type='MyNeckKL', tau=2.0), layers=['pts_neck'], weight=0.5),
        dict(name='crd', loss=dict(type='CellInfoNCE', temperature=0.07), reads='cells',
             connector=dict(type='SpatialProjector', out_dim=64), mask=True,
             layers=[dict(student='pts_neck', teacher='pts_neck', weight=2.0)],
             schedule=dict(warmup_iters=200)),
        dict(name='kd', loss=dict(type='HeatmapDistillationLoss'), reads='heatmaps', weight=5.0),
    ]

Every loss has one signature, ``forward(student, teacher, *, mask=None)``, and the term declares
what it hands over:

* ``reads``: ``'features'`` (default: the maps the layers output, channel-checked, through the
  connectors), ``'cells'`` (K cells drawn at the same world places of both maps, each side a
  ``[B, C, K, 1]`` map, so a per-cell connector projects K cells instead of H*W; ``cells=dict(
  num_samples=256, foreground_fraction=0.5)``) or ``'heatmaps'`` (the heads' class-heatmap
  logits; ``layers`` defaults to ``['heatmap']``, which a Distiller resolves to the head its
  model driver names);
* ``mask``: True when the loss takes the foreground mask (``loss(s, t, mask=...)``; a
  ``'cells'`` term draws its cells with it instead). The mask is whatever the caller passes (the
  Distiller's ``foreground='teacher_heatmap'``); False (default) calls ``loss(s, t)``.

Connectors live in the term: ``connector`` for both sides, or ``student_connector`` /
``teacher_connector``. Each term returns ``loss_<name>.<label>`` per layer (the label is the
student's layer name unless given), multiplied by its weight and schedule, so mmengine's
``parse_losses`` sums them. Channel sizes come from the caller (the ``Distiller`` reads them by
a dry forward): a loss or connector whose constructor takes ``student_channels``/
``teacher_channels`` or ``in_dim``/``in_channels`` gets them filled in.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from mmengine.logging import MessageHub
from mmengine.registry import MODELS
from torch import nn

from bevdistill.errors import UserError
from bevdistill.losses._checks import LossInputError
from bevdistill.losses.cells import CellSampler
from bevdistill.losses.registry import register_builtin_parts
from bevdistill.losses.response import heatmap_logits

_HALF = (torch.float16, torch.bfloat16)
READS = ("features", "cells", "heatmaps")
HEATMAP = "heatmap"  # a heatmaps term's layer: the head's class heatmaps, wherever they are
TERM_KEYS = ("name", "loss", "layers", "weight", "connector", "student_connector",
             "teacher_connector", "reads", "mask", "cells", "schedule", "spatial_only")


class TermConfigError(UserError, ValueError):
    """A distillation term's config is wrong (unknown loss, bad layer, weight or schedule)."""


class MissingFeatureError(KeyError):
    """A layer a term was built for is absent from the captured features."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def module_key(layer: str) -> str:
    """A ModuleDict-safe key for a dotted layer name ('bbox_head.heatmap_head')."""
    return layer.replace(".", "__")


def check_weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise TermConfigError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LayerPair:
    """Which student and teacher hook a term compares, under which key label, with what weight."""

    student: str
    teacher: str
    label: str
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: Any, term: str) -> LayerPair:
        """``'pts_neck'`` or ``dict(student=..., teacher=..., label=..., weight=...)``."""
        if isinstance(spec, str) and spec:
            return cls(spec, spec, spec)
        if isinstance(spec, Mapping) and spec.get("student"):
            unknown = set(spec) - {"student", "teacher", "label", "weight"}
            if unknown:
                raise TermConfigError(f"term {term!r}: unknown layer keys {sorted(unknown)}")
            student = str(spec["student"])
            return cls(student, str(spec.get("teacher", student)), str(spec.get("label", student)),
                       check_weight(f"term {term!r} layer {student!r} weight", spec.get("weight", 1.0)))
        raise TermConfigError(
            f"term {term!r}: each layer is a hook name ('pts_neck') or dict(student='pts_neck', "
            f"teacher='pts_neck', label=None, weight=1.0); got {spec!r}"
        )


@dataclass(frozen=True)
class WeightSchedule:
    """A factor on a term's weight over training iterations: linear warm-up from 0, then an
    optional linear decay to ``final`` between ``decay_begin`` and ``decay_end``."""

    warmup_iters: int = 0
    decay_begin: int | None = None
    decay_end: int | None = None
    final: float = 1.0

    def __post_init__(self) -> None:
        if self.warmup_iters < 0:
            raise TermConfigError(f"schedule warmup_iters must be >= 0, got {self.warmup_iters}")
        if (self.decay_begin is None) != (self.decay_end is None) or (
            self.decay_begin is not None and not self.decay_begin < self.decay_end
        ):
            raise TermConfigError(
                "schedule: give both decay_begin < decay_end, or neither; got "
                f"decay_begin={self.decay_begin}, decay_end={self.decay_end}"
            )

    def factor(self, iteration: int) -> float:
        warm = min(1.0, (iteration + 1) / self.warmup_iters) if self.warmup_iters else 1.0
        if self.decay_begin is None or iteration <= self.decay_begin:
            return warm
        done = min(1.0, (iteration - self.decay_begin) / (self.decay_end - self.decay_begin))
        return warm * (1.0 + (self.final - 1.0) * done)


def current_iteration() -> int:
    """The Runner's iteration (mmengine's RuntimeInfoHook records it); 0 outside a Runner."""
    return int(MessageHub.get_current_instance().get_info("iter", 0) or 0)


def as_feature(name: str, value: Any, role: str) -> torch.Tensor:
    """The ``[B, C, ...]`` float tensor a hook gave, or an error saying how to make it one."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                      for v in value]
            raise ValueError(
                f"{role} feature {name!r} is a {type(value).__name__} of {len(value)} elements "
                f"with shapes {shapes}; the losses take one map per layer. Pick one scale when "
                f"capturing, e.g. select={{{name!r}: -1}} on the wrapper/recorder"
            )
        value = value[0]  # SECONDFPN-style necks return a list with one map
    if not isinstance(value, torch.Tensor) and hasattr(value, "dense"):
        value = value.dense()  # spconv's SparseConvTensor
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        shown = (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                 if isinstance(value, torch.Tensor) else type(value).__name__)
        raise LossInputError(f"{role} feature {name!r} must be a float tensor, got {shown}")
    if value.numel() == 0:
        raise LossInputError(
            f"{role} feature {name!r} is empty (shape {tuple(value.shape)}): a batch of 0 samples "
            "or a grid with 0 cells has nothing to distil; skip empty batches"
        )
    if not 2 <= value.dim() <= 5:
        raise ValueError(
            f"{role} feature {name!r} has shape {tuple(value.shape)}; expected [B, C], "
            "[B, C, N], [B, C, H, W] or [B, C, D, H, W] with channels in dim 1"
        )
    return value


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32; float32 and float64 (gradcheck) stay as they are."""
    return x.float() if x.dtype in _HALF else x


@dataclass(frozen=True)
class TermSpec:
    """One term's config, parsed and checked once (see the module docstring for the keys)."""

    name: str
    loss: Any
    pairs: tuple[LayerPair, ...]
    weight: float = 1.0
    student_connector: Any = None
    teacher_connector: Any = None
    reads: str = "features"
    mask: bool = False
    cells: Mapping[str, Any] | None = None
    schedule: WeightSchedule | None = None
    spatial_only: bool = False

    @classmethod
    def parse(cls, spec: Any) -> TermSpec:
        if isinstance(spec, TermSpec):
            return spec
        if not isinstance(spec, Mapping) or "name" not in spec or "loss" not in spec:
            raise TermConfigError(
                "a term is dict(name='kl', loss=dict(type=...), layers=['pts_neck'], weight=1.0, "
                f"reads='features', mask=False, connector=None, schedule=None); got {spec!r}"
            )
        name = spec["name"]
        if not isinstance(name, str) or not name.isidentifier():
            raise TermConfigError(f"a term's name must be an identifier like 'kl', got {name!r}")
        unknown = sorted(set(spec) - set(TERM_KEYS))
        if unknown:
            raise TermConfigError(f"term {name!r}: unknown keys {unknown}; a term has {TERM_KEYS}")
        reads = spec.get("reads", "features")
        if reads == "outputs":
            raise TermConfigError(f"term {name!r}: reads='outputs' is now reads='heatmaps'")
        if reads not in READS:
            raise TermConfigError(f"term {name!r}: reads must be one of {READS}, got {reads!r}")
        layers = spec.get("layers", [HEATMAP] if reads == "heatmaps" else None)
        if isinstance(layers, (str, Mapping)) or not layers:
            raise TermConfigError(f"term {name!r}: layers must be a non-empty list, got {layers!r}")
        pairs = tuple(LayerPair.parse(layer, name) for layer in layers)
        labels = [p.label for p in pairs]
        if len(set(labels)) != len(labels):
            raise TermConfigError(f"term {name!r} has two layers with one label: {labels}")
        if not isinstance(spec.get("mask", False), bool):
            raise TermConfigError(f"term {name!r}: mask must be True or False (whether the loss "
                                  f"takes the foreground mask), got {spec['mask']!r}")
        if spec.get("cells") is not None and reads != "cells":
            raise TermConfigError(f"term {name!r}: cells=... needs reads='cells'")
        connector = spec.get("connector")
        try:
            schedule = WeightSchedule(**dict(spec["schedule"])) if spec.get("schedule") else None
        except TypeError as exc:
            raise TermConfigError(f"term {name!r} schedule: {exc}") from exc
        return cls(
            name=name, loss=spec["loss"], pairs=pairs,
            weight=check_weight(f"term {name!r} weight", spec.get("weight", 1.0)),
            student_connector=spec.get("student_connector") or connector,
            teacher_connector=spec.get("teacher_connector") or connector,
            reads=reads, mask=spec.get("mask", False), cells=spec.get("cells"),
            schedule=schedule, spatial_only=bool(spec.get("spatial_only", False)),
        )

    def hooks(self, side: str) -> list[str]:
        """The ``side`` ('student'/'teacher') layers this term reads, in order."""
        return list(dict.fromkeys(p.student if side == "student" else p.teacher
                                  for p in self.pairs))

    def resolve(self, student: Mapping[str, str], teacher: Mapping[str, str]) -> TermSpec:
        """The spec with layer names renamed per side (``'heatmap'`` -> the head a driver names)."""
        pairs = tuple(dataclasses.replace(p, student=student.get(p.student, p.student),
                                          teacher=teacher.get(p.teacher, p.teacher))
                      for p in self.pairs)
        return dataclasses.replace(self, pairs=pairs)

    def live(self) -> TermSpec:
        """The spec without its weight-0 layers (they build, hook and compute nothing)."""
        return dataclasses.replace(self, pairs=tuple(p for p in self.pairs
                                                     if self.weight * p.weight > 0))

    def factor(self, iteration: int) -> float:
        """The term's weight times its schedule at ``iteration``."""
        return self.weight * (self.schedule.factor(iteration) if self.schedule else 1.0)


def parse_terms(terms: Sequence[Any]) -> list[TermSpec]:
    """Every term spec parsed once; two terms of one name are an error."""
    if isinstance(terms, (str, Mapping)):
        raise TermConfigError(f"terms must be a list of term dicts, got {terms!r}")
    specs = [t.spec if isinstance(t, DistillationTerm) else TermSpec.parse(t) for t in terms]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TermConfigError(f"two terms are named {twice}; rename one")
    return specs


def build_part(cfg: Any, what: str, **fill: Any) -> nn.Module:
    """A registered module from ``dict(type=...)``, with ``fill`` arguments its constructor takes."""
    register_builtin_parts()
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise TermConfigError(f"{what} must be dict(type=<registered name>, ...), got {cfg!r}")
    cls = MODELS.get(cfg["type"]) if isinstance(cfg["type"], str) else cfg["type"]
    if cls is None:
        raise TermConfigError(
            f"{what}: no module named {cfg['type']!r} in mmengine's MODELS registry. Register "
            "yours with @MODELS.register_module() and import it (custom_imports in the config)"
        )
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in cfg.items() if k != "type"}
    args.update({k: v for k, v in fill.items() if k not in args and (k in params or takes_any)})
    try:
        return cls(**args)
    except TypeError as exc:
        raise TermConfigError(f"{what}: {cls.__name__}(**{args}) failed: {exc}") from exc


class DistillationTerm(nn.Module):
    """One term: per layer pair, ``weight * pair.weight * schedule(iter) * loss(s', t')``.

    ``s'`` and ``t'`` are what the term reads, after each side's connector; the teacher is
    detached. Pairs whose weight is 0 build no loss and no connector (DDP rejects parameters
    that never receive a gradient).
    """

    def __init__(self, spec: TermSpec | Mapping[str, Any], student_channels: Mapping[str, int],
                 teacher_channels: Mapping[str, int]):
        super().__init__()
        spec = TermSpec.parse(spec).live()
        self.spec, self.name = spec, spec.name
        try:
            self.sampler = CellSampler(**dict(spec.cells or {})) if spec.reads == "cells" else None
        except (TypeError, ValueError) as exc:
            raise TermConfigError(f"term {spec.name!r} cells: {exc}") from exc
        self.losses = nn.ModuleDict()
        self.channels: dict[tuple[str, str], int | None] = {}  # (side, layer) -> channels
        self.student_connectors = nn.ModuleDict()
        self.teacher_connectors = nn.ModuleDict()
        for pair in spec.pairs:
            s_ch = self._channels(student_channels, pair.student, "student")
            t_ch = self._channels(teacher_channels, pair.teacher, "teacher")
            self.channels[("student", pair.student)] = s_ch
            self.channels[("teacher", pair.teacher)] = t_ch
            key = module_key(pair.label)
            self.losses[key] = build_part(spec.loss, f"term {spec.name!r} loss",
                                          student_channels=s_ch, teacher_channels=t_ch)
            for side, cfg, ch, store in (
                ("student", spec.student_connector, s_ch, self.student_connectors),
                ("teacher", spec.teacher_connector, t_ch, self.teacher_connectors),
            ):
                if cfg is not None:
                    store[key] = build_part(cfg, f"term {spec.name!r} {side} connector",
                                            in_dim=ch, in_channels=ch)
        self.loss_keys = tuple(f"loss_{spec.name}.{p.label}" for p in spec.pairs)

    @property
    def pairs(self) -> tuple[LayerPair, ...]:
        return self.spec.pairs

    @property
    def weight(self) -> float:
        return self.spec.weight

    @property
    def schedule(self) -> WeightSchedule | None:
        return self.spec.schedule

    def _channels(self, channels: Mapping[str, int], layer: str, side: str) -> int | None:
        if self.spec.reads == "heatmaps":
            return None
        if layer not in channels:
            raise TermConfigError(
                f"term {self.name!r} reads {side} layer {layer!r}, which is not captured "
                f"(captured: {sorted(channels)}); add it to the hooked layers or fix the name"
            )
        return channels[layer]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(p.student for p in self.pairs)

    def _input(self, features: Mapping[str, Any], layer: str, side: str):
        if not isinstance(features, Mapping):
            raise TypeError(
                f"{side}_features must be a dict layer name -> tensor (what the wrapper returns), "
                f"got {type(features).__name__}"
            )
        if layer not in features:
            raise MissingFeatureError(
                f"{side} features have no {layer!r} (present: {sorted(features)}). Capture it "
                f"(hook points of the wrapper/recorder) or build term {self.name!r} without it."
            )
        if self.spec.reads == "heatmaps":
            return _fp32(heatmap_logits(features[layer], who=f"{side} {layer!r}"))
        x = _fp32(as_feature(layer, features[layer], side))
        expected = self.channels[(side, layer)]
        if x.shape[1] != expected:
            raise ValueError(
                f"{side} feature {layer!r} has {x.shape[1]} channels (shape {tuple(x.shape)}) but "
                f"term {self.name!r} was built with {side}_channels[{layer!r}]={expected}; rebuild "
                f"it with {x.shape[1]} (build_bevfusion_distillation infers channels by a dry "
                "forward) or check that the right module is hooked"
            )
        if self.spec.reads == "cells" and x.dim() != 4:
            raise ValueError(
                f"{side} feature {layer!r} has shape {tuple(x.shape)}; term {self.name!r} reads "
                "cells and needs a BEV map [B, C, H, W]. Distil another layer or give this layer "
                "weight 0"
            )
        return x

    def forward(self, student_features: Mapping[str, Any], teacher_features: Mapping[str, Any],
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        factor = self.spec.factor(current_iteration())
        out: dict[str, torch.Tensor] = {}
        for pair, key in zip(self.pairs, self.loss_keys, strict=True):
            s = self._input(student_features, pair.student, "student")
            t = self._input(teacher_features, pair.teacher, "teacher").detach()
            if s.shape[0] != t.shape[0]:
                raise ValueError(
                    f"{pair.student!r}: student batch size {s.shape[0]} differs from the "
                    f"teacher's {t.shape[0]}; both models must see the same samples"
                )
            if self.spec.spatial_only and not (s.dim() in (4, 5) and t.dim() in (4, 5)):
                continue  # e.g. attention transfer on pooled features: nothing spatial to match
            if factor == 0:  # faded out by its schedule: nothing to compute
                out[key] = s.new_zeros(())
                continue
            out[key] = factor * pair.weight * self._call(pair, key, s, t, mask)
        return out

    def _call(self, pair: LayerPair, key: str, s, t, mask):
        ckey = module_key(pair.label)
        mask = _fp32(mask.detach()) if self.spec.mask and mask is not None else None
        kwargs = {"mask": mask} if self.spec.mask and self.sampler is None else {}
        try:
            if self.sampler is not None:
                cells = self.sampler(s, t, mask)
                if cells is None:
                    return s.sum() * 0.0
                s, t = cells
            if ckey in self.student_connectors:
                s = self.student_connectors[ckey](s)
            if ckey in self.teacher_connectors:
                t = self.teacher_connectors[ckey](t)
            return self.losses[ckey](s, t, **kwargs)
        except LossInputError as exc:
            raise type(exc)(f"{key}: {exc}") from exc


class DistillationTerms(nn.Module):
    """Every term of a recipe, summed by mmengine: ``{loss_<term>.<label>: weighted loss}``.

    ``terms``: term configs (see the module docstring), parsed :class:`TermSpec` or built
    :class:`DistillationTerm` modules. ``student_channels``/``teacher_channels``: channels of
    every captured layer.
    """

    def __init__(self, terms: Sequence[Any], student_channels: Mapping[str, int],
                 teacher_channels: Mapping[str, int]):
        super().__init__()
        self.terms = nn.ModuleDict()
        for given, spec in zip(terms, parse_terms(terms), strict=True):  # all checked first
            term = given if isinstance(given, DistillationTerm) else DistillationTerm(
                spec, student_channels, teacher_channels)
            if term.pairs:
                self.terms[term.name] = term

    @property
    def loss_keys(self) -> tuple[str, ...]:
        """Every key :meth:`forward` can return, for logs and tables (never a hard-coded list)."""
        return tuple(k for term in self.terms.values() for k in term.loss_keys)

    def active(self, iteration: int | None = None) -> bool:
        """Whether any term weighs more than 0 at ``iteration`` (default: the Runner's): when
        none does, a step needs no teacher forward."""
        it = current_iteration() if iteration is None else iteration
        return any(term.spec.factor(it) > 0 for term in self.terms.values())

    def forward(self, student_features: Mapping[str, Any], teacher_features: Mapping[str, Any],
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.sum_terms(student_features, teacher_features, mask)

    def sum_terms(self, student_features: Mapping[str, Any], teacher_features: Mapping[str, Any],
                  mask: torch.Tensor | None = None, skip: set[str] | frozenset = frozenset(),
                  ) -> dict[str, torch.Tensor]:
        """Every term but ``skip``, in float32 even under autocast."""
        first = next((v for v in student_features.values() if isinstance(v, torch.Tensor)), None)
        device_type = first.device.type if first is not None else "cpu"
        losses: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=device_type, enabled=False):
            for name, term in self.terms.items():
                if name not in skip:
                    losses.update(term(student_features, teacher_features, mask))
        return losses


def term_layers(terms: Sequence[Any], side: str) -> tuple[list[str], list[str]]:
    """The ``side`` ('student'/'teacher') hooks that ``terms`` read: (feature maps, heatmaps)."""
    features: list[str] = []
    heatmaps: list[str] = []
    for spec in parse_terms(terms):
        into = heatmaps if spec.reads == "heatmaps" else features
        into.extend(h for h in spec.hooks(side) if h not in into)
    return features, heatmaps
