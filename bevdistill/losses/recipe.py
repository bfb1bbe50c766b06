"""The tutorial's recipe as terms, in one place.

The tutorial writes its loss as weights: ``alpha_crd`` (contrastive), ``alpha_at`` (attention
transfer), ``alpha_kd`` (heatmap KD), here also ``alpha_mse`` (feature MSE).
:func:`tutorial_terms` turns those arguments into the term list that
:class:`~bevdistill.BEVFusionDistillationLoss` is built on and that a config writes out as
``terms=[...]``. :func:`upgrade_recipe` converts the keys configs used before terms
(``distill=dict(alpha_at=...)``, ``hook_points``, ``kd_hook``) and says how to write them now.
"""

from __future__ import annotations

import copy
import pprint
from collections.abc import Mapping, Sequence
from typing import Any

from bevdistill.capture import DEFAULT_HOOK_POINTS
from bevdistill.losses.terms import HEATMAP, TermConfigError

TUTORIAL_TERMS = ("crd", "at", "mse", "kd")  # the names of the alpha_* terms
FEATURE_TERMS = ("crd", "at", "mse")  # the ones that read the hooked layers
LAYERS = DEFAULT_HOOK_POINTS  # the tutorial's hooked layers
TUTORIAL_DEFAULTS: dict[str, Any] = dict(
    feat_dim=128, temperature=0.07, alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5,
    contrastive="global", num_samples=256, at_normalization="l2", kd_temperature=1.0,
    alpha_mse=0.0, hidden_dim=256, schedule=None,
)
CONTRASTIVE = ("global", "spatial", "none")


def contrastive_parts(contrastive: str, *, temperature: float, feat_dim: int, hidden_dim: int,
                      num_samples: int) -> dict[str, Any]:
    """What the ``crd`` term reads and computes: InfoNCE on pooled embeddings (``'global'``, the
    tutorial's) or on cells at the same world places (``'spatial'``, teaches at batch 1)."""
    if contrastive not in CONTRASTIVE:
        raise ValueError(f"contrastive must be one of {CONTRASTIVE}, got {contrastive!r}")
    if contrastive == "spatial":
        return dict(loss=dict(type="CellInfoNCE", temperature=temperature), reads="cells",
                    cells=dict(num_samples=num_samples), mask=True,
                    connector=dict(type="SpatialProjector", hidden_dim=hidden_dim, out_dim=feat_dim))
    return dict(loss=dict(type="ContrastiveLoss", temperature=temperature), reads="features",
                mask=False,
                connector=dict(type="ProjectionMLP", hidden_dim=hidden_dim, out_dim=feat_dim))


def tutorial_terms(layers: Sequence[str] = LAYERS,
                   layer_weights: Mapping[str, float] | None = None, *,
                   kd_layer: str = HEATMAP, **settings: Any) -> list[dict[str, Any]]:
    """The term configs the tutorial's arguments stand for (``settings``: the ``alpha_*``
    weights, ``contrastive``, ``feat_dim``... see :data:`TUTORIAL_DEFAULTS`), each with
    ``schedule`` on its weight. Weight-0 terms are listed too: they build nothing."""
    unknown = sorted(set(settings) - set(TUTORIAL_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown tutorial settings {unknown}; known: {sorted(TUTORIAL_DEFAULTS)}")
    cfg = {**TUTORIAL_DEFAULTS, **settings}
    weights = dict(layer_weights or {})
    per_layer = [dict(student=layer, weight=weights.get(layer, 1.0)) for layer in layers]
    crd = contrastive_parts(cfg["contrastive"], temperature=cfg["temperature"],
                            feat_dim=cfg["feat_dim"], hidden_dim=cfg["hidden_dim"],
                            num_samples=cfg["num_samples"])
    terms = [
        dict(name="crd", layers=per_layer,
             weight=cfg["alpha_crd"] if cfg["contrastive"] != "none" else 0.0, **crd),
        dict(name="at", loss=dict(type="AttentionTransferLoss",
                                  normalization=cfg["at_normalization"]),
             layers=per_layer, weight=cfg["alpha_at"], mask=True, spatial_only=True),
        dict(name="mse", loss=dict(type="FeatureMSELoss"), layers=per_layer,
             weight=cfg["alpha_mse"], mask=True),
        dict(name="kd", loss=dict(type="HeatmapDistillationLoss",
                                  temperature=cfg["kd_temperature"]),
             reads="heatmaps", layers=[dict(student=kd_layer, teacher=kd_layer, label="heatmap")],
             weight=cfg["alpha_kd"]),
    ]
    return [dict(term, schedule=cfg["schedule"]) for term in terms]


# --- the keys of the recipes before terms ----------------------------------------------------

_WEIGHTS = {"alpha_crd": "crd", "alpha_at": "at", "alpha_kd": "kd", "alpha_mse": "mse"}
_REFUSED = ("student_channels", "teacher_channels", "layers", "kd_layer", "terms",
            "require_outputs")


class _Recipe:
    """Term dicts being edited by old keys, with the ``--cfg-options`` key of each edit."""

    def __init__(self, terms: Sequence[Mapping[str, Any]]):
        self.terms = [copy.deepcopy(dict(t)) for t in terms]
        self.advice: dict[str, Any] = {}

    def index(self, name: str, old: str) -> int:
        for i, term in enumerate(self.terms):
            if term.get("name") == name:
                return i
        raise TermConfigError(
            f"{old} sets the term {name!r}, which this recipe's terms lack "
            f"(terms: {[t.get('name') for t in self.terms]}); add it to terms=[...]"
        )

    def set(self, name: str, old: str, path: str, value: Any) -> None:
        i = self.index(name, old)
        *parents, leaf = path.split(".")
        node = self.terms[i]
        for key in parents:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        node[leaf] = value
        self.advice[f"model.terms.{i}.{path}"] = value

    def connectors(self, name: str, old: str, key: str, value: Any) -> None:
        term = self.terms[self.index(name, old)]
        for side in ("connector", "student_connector", "teacher_connector"):
            if term.get(side):
                self.set(name, old, f"{side}.{key}", value)


def upgrade_recipe(terms: Sequence[Mapping[str, Any]] | None, old: Mapping[str, Any],
                   ) -> tuple[list[dict[str, Any]], str]:
    """``terms`` with the old keys in ``old`` (``distill``, ``hook_points``, ``kd_hook``)
    applied, and advice on how to write them as terms (empty when there were none).

    With ``terms=None`` the old keys describe the whole recipe (the tutorial's, expanded);
    otherwise they edit the tutorial-named terms of ``terms`` as they edited ``distill`` before.
    """
    if terms is not None and not old:
        return [dict(t) for t in terms], ""
    distill = dict(old.get("distill") or {})
    refused = sorted(set(distill) & set(_REFUSED))
    if refused:
        raise ValueError(
            f"distill must not set {refused}: channels are read from a dry forward; layers, the "
            "KD layer and extra terms are written in terms=[...]"
        )
    unknown = sorted(set(distill) - set(TUTORIAL_DEFAULTS) - {"layer_weights"})
    if unknown:
        raise TermConfigError(f"distill: unknown keys {unknown}; write the recipe as terms=[...]")
    kd_hook = old.get("kd_hook", HEATMAP)
    kd_hook = HEATMAP if kd_hook == "auto" else kd_hook
    if kd_hook is None:
        if float(distill.get("alpha_kd", 0.0)) > 0:
            raise ValueError("distill['alpha_kd'] > 0 needs a kd_hook (the heatmap logits)")
        distill["alpha_kd"] = 0.0
    hook_points = old.get("hook_points")
    hook_points = (hook_points,) if isinstance(hook_points, str) else hook_points
    if terms is None:
        expanded = tutorial_terms(
            tuple(hook_points or LAYERS), distill.pop("layer_weights", None),
            kd_layer=kd_hook, **distill)
        if not old:
            return expanded, ""
        return expanded, ("write the recipe as terms=[...] (the keys above are the tutorial's "
                          "alpha_* language, now converted):\n" + pprint.pformat(expanded))
    recipe = _Recipe(terms)
    if "contrastive" in distill:
        kind = distill.pop("contrastive")
        if kind == "none":
            recipe.set("crd", "distill.contrastive", "weight", 0.0)
        else:
            crd = recipe.terms[recipe.index("crd", "distill.contrastive")]
            connector = dict(crd.get("connector") or crd.get("student_connector") or {})
            parts = contrastive_parts(
                kind, temperature=dict(crd.get("loss") or {}).get("temperature", 0.07),
                feat_dim=connector.get("out_dim", TUTORIAL_DEFAULTS["feat_dim"]),
                hidden_dim=connector.get("hidden_dim", TUTORIAL_DEFAULTS["hidden_dim"]),
                num_samples=dict(crd.get("cells") or {}).get("num_samples", 256))
            for key in ("cells", "student_connector", "teacher_connector"):
                crd.pop(key, None)
            for key, value in parts.items():
                recipe.set("crd", "distill.contrastive", key, value)
    for key, value in distill.items():
        where = f"distill.{key}"
        if key in _WEIGHTS:
            recipe.set(_WEIGHTS[key], where, "weight", value)
        elif key in ("feat_dim", "hidden_dim"):
            recipe.connectors("crd", where, "out_dim" if key == "feat_dim" else key, value)
        elif key == "temperature":
            recipe.set("crd", where, "loss.temperature", value)
        elif key == "num_samples":
            recipe.set("crd", where, "cells.num_samples", value)
        elif key == "at_normalization":
            recipe.set("at", where, "loss.normalization", value)
        elif key == "kd_temperature":
            recipe.set("kd", where, "loss.temperature", value)
        elif key == "schedule":
            for name in TUTORIAL_TERMS:
                if any(t.get("name") == name for t in recipe.terms):
                    recipe.set(name, where, "schedule", dict(value) if value else None)
    layer_weights = dict(distill.get("layer_weights") or {})
    if hook_points is not None or layer_weights:
        for name in FEATURE_TERMS:
            i = recipe.index(name, "hook_points")
            layers = hook_points or [p if isinstance(p, str) else p["student"]
                                     for p in recipe.terms[i]["layers"]]
            recipe.set(name, "hook_points", "layers",
                       [dict(student=x, weight=layer_weights.get(x, 1.0)) for x in layers])
    if "kd_hook" in old and kd_hook is None:
        recipe.set("kd", "kd_hook", "weight", 0.0)
    elif "kd_hook" in old:
        recipe.set("kd", "kd_hook", "layers",
                   [dict(student=kd_hook, teacher=kd_hook, label="heatmap")])
    advice = " ".join(f"{k}={v!r}" for k, v in recipe.advice.items())
    return recipe.terms, f"write them as terms: --cfg-options {advice}"
