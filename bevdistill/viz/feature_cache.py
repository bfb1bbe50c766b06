"""Hooked features of a model, captured in one forward: ad hoc (:func:`capture`) or per dataset
scene, computed once and kept (:class:`FeatureCache`, what the explorers draw from).

The pictures themselves are in :mod:`bevdistill.viz.features`; this module is the only part of
:mod:`bevdistill.viz` that runs a model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bevdistill.capture import DEFAULT_HOOK_POINTS, FeatureRecorder


def capture(
    model: nn.Module,
    inputs: dict,
    data_samples: Any = None,
    *,
    mode: str = "tensor",
    hook_points: Sequence[str] = DEFAULT_HOOK_POINTS,
    select: Mapping[str, int] | None = None,
    keep_graph: bool = False,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run ``model(inputs, data_samples, mode=mode)`` once; return ``(result, {layer: map})``.

    One map per layer, ready for the losses: a tuple output gives its element ``select[layer]``
    (default: the last, e.g. the coarsest backbone scale), a one-element list is unwrapped.
    ``keep_graph=False`` (a teacher, or pictures) runs under ``torch.no_grad``; ``True`` keeps
    the autograd graph so a loss on the maps trains the model. The model's train/eval mode is
    left as it is, and the hooks are removed before returning.
    """
    points = tuple(hook_points)
    select = dict(select) if select is not None else {}
    with FeatureRecorder(model, points, select=select, detach=not keep_graph) as rec:
        with torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()), rec.recording() as raw:
            result = model(inputs, data_samples, mode=mode)
        features = {}
        for name, value in raw.items():
            if isinstance(value, (tuple, list)):
                value = value[0] if len(value) == 1 else value[-1]
            features[name] = value
    return result, features


@dataclass
class SceneCapture:
    """What one forward of a model on one dataset item gave."""

    index: int
    item: dict
    features: dict[str, Any]
    predictions: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class FeatureCache:
    """Hooked features (and predictions) of ``model`` on ``dataset[index]``, computed once each.

    The explorers ask for the same scene many times while a learner moves a channel slider;
    one forward per scene keeps them responsive. The model runs in eval mode under
    ``torch.no_grad``; its own train/eval flag is restored afterwards, and the hooks are removed
    after every forward. With no ``hook_points`` it records predictions only.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Any,
        hook_points: Sequence[str] = DEFAULT_HOOK_POINTS,
        select: Mapping[str, int] | None = None,
        predict: bool = True,
    ):
        self.model = model
        self.dataset = dataset
        self.hook_points = tuple(hook_points)
        self.select = dict(select or {})
        self.predict = predict
        self._cache: dict[int, SceneCapture] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __call__(self, index: int) -> SceneCapture:
        index = int(index)
        if index not in self._cache:
            self._cache[index] = self._run(index)
        return self._cache[index]

    def _run(self, index: int) -> SceneCapture:
        item = self.dataset[index]
        inputs = {"points": [item["inputs"]["points"]]}
        was_training = self.model.training
        self.model.eval()
        start = time.perf_counter()
        try:
            if not self.hook_points:  # predictions only (a scene explorer needs no features)
                with torch.no_grad():
                    preds = self.model.predict(inputs, [item["data_samples"]])[0]
                features = {}
            else:
                with FeatureRecorder(self.model, self.hook_points, select=self.select, detach=True) as rec:
                    with torch.no_grad(), rec.recording() as captured:
                        if self.predict:
                            preds = self.model.predict(inputs, [item["data_samples"]])[0]
                        else:
                            preds = None
                            self.model(inputs, None, mode="tensor")
                    features = dict(captured)
        finally:
            self.model.train(was_training)
        return SceneCapture(index, item, features, preds, time.perf_counter() - start)
