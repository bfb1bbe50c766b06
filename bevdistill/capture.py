"""Step 1: capture intermediate features of a BEV detector without modifying it.

:class:`FeatureRecorder` puts forward hooks on modules named by dotted paths and keeps what
they output; :class:`BEVFusionDistillationWrapper` is the tutorial's wrapper built on it.
Unlike the tutorial's sketch, hooks are kept as handles and removed by ``close()``, features
are cleared at every forward, a hook point that never fired is reported by name, tuple and
list outputs survive, sparse outputs are densified, and the teacher's captures are detached.
"""

from __future__ import annotations

import copy
import inspect
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bevdistill._warnings import warn_once
from bevdistill.hook_points import HookPointError, check_hook_points, resolve_hook_point

__all__ = [
    "BEVFusionDistillationWrapper", "CaptureWarning", "DEFAULT_HOOK_POINTS", "FeatureRecorder",
    "HookNotFiredError", "HookPointError", "MODES", "ON_MISSING", "resolve_hook_point",
]

DEFAULT_HOOK_POINTS: tuple[str, ...] = ("pts_middle_encoder", "pts_backbone", "pts_neck")
ON_MISSING = ("raise", "warn", "ignore")
MODES = ("loss", "predict", "tensor")

# Every hook this module installs carries this attribute, pointing at its recorder, so a new
# recorder can find and take over an older one's hook on the same module (even after a reload).
_OWNER_ATTR = "bevdistill_recorder"


class HookNotFiredError(HookPointError):
    """A hook point's module exists but did not run during a recorded forward."""


class CaptureWarning(UserWarning):
    """Something about the capture deserves attention but does not stop it."""


def _densify(value: Any, detach: bool) -> Any:
    """An output made dense and optionally detached; containers keep their type and nesting."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:  # torch sparse (COO/CSR/...): losses need dense maps
            value = value.to_dense()
        return value.detach() if detach else value
    if callable(getattr(value, "dense", None)):  # spconv SparseConvTensor and look-alikes
        return _densify(value.dense(), detach)
    if isinstance(value, tuple):
        items = [_densify(v, detach) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_densify(v, detach) for v in value]
    if isinstance(value, Mapping):
        return {k: _densify(v, detach) for k, v in value.items()}
    return value


def _pick(name: str, output: Any, index: int) -> Any:
    """Element ``index`` of a tuple/list output, with errors that name the layer."""
    if not isinstance(output, (tuple, list)):
        raise TypeError(
            f"select[{name!r}] = {index} but {name} returned a {type(output).__name__}, not a "
            f"tuple or list; drop {name!r} from select."
        )
    if not -len(output) <= index < len(output):
        raise ValueError(
            f"select[{name!r}] = {index} is out of range: {name} returned a "
            f"{type(output).__name__} of length {len(output)} (valid: {-len(output)} to "
            f"{len(output) - 1})."
        )
    return output[index]


class _CaptureHook:
    """A forward hook that hands a module's output to its recorder under ``name``.

    It holds its recorder weakly: the model must not keep a recorder (or the wrapper around
    it) alive, so that deleting the wrapper lets the recorder's finalizer remove the hooks.
    """

    def __init__(self, recorder: FeatureRecorder, name: str):
        self._recorder = weakref.ref(recorder)
        self.name = name

    @property
    def bevdistill_recorder(self) -> FeatureRecorder | None:  # the marker _OWNER_ATTR names
        return self._recorder()

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        recorder = self._recorder()
        if recorder is not None:
            recorder._store(self.name, output)

    def __deepcopy__(self, memo: dict) -> _CaptureHook:
        # A copied model's hook feeds the copied recorder (kept alive by its copied owner).
        recorder = self._recorder()
        clone = copy.copy(self)
        if recorder is not None:
            clone._recorder = weakref.ref(copy.deepcopy(recorder, memo))
        return clone


def _remove_handles(handles: dict[str, RemovableHandle]) -> None:
    """Finalizer of a recorder: the model outlives it, its hooks must not."""
    for handle in handles.values():
        handle.remove()
    handles.clear()


def _check_select(select: Mapping[str, int] | None, points: tuple[str, ...]) -> dict[str, int]:
    select = dict(select or {})
    for name, index in select.items():
        if name not in points:
            raise HookPointError(
                f"select names {name!r}, which is not a hook point; hook points: {list(points)}"
            )
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"select[{name!r}] must be an int index, got {index!r}")
    return select


class FeatureRecorder:
    """Hooks modules by dotted name and keeps their latest outputs in ``features``.

    ``detach=True`` (teacher side) stores outputs without their autograd graph, so no
    distillation gradient can reach the teacher and its graph is freed at once;
    ``detach=False`` (student side) keeps the graph, because the distillation loss must
    train the student through these very tensors.

    Use :meth:`recording` around each forward: it clears old captures first (otherwise a
    layer that did not run this time would hand back last step's tensor) and afterwards
    reports hook points that did not fire. Outside ``recording()`` captures accumulate until
    :meth:`clear`. A module that fires several times in one forward (a shared module) keeps
    its LAST output; ``fire_counts[name]`` says how often it fired.

    Only one recorder hooks a given module: a new recorder takes over (and warns about) the
    hook of an older one, so re-running a notebook cell never stacks duplicate hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        hook_points: str | Sequence[str] = DEFAULT_HOOK_POINTS,
        select: Mapping[str, int] | None = None,
        detach: bool = False,
        on_missing: str = "raise",
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"FeatureRecorder needs an nn.Module, got {type(model).__name__}")
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")
        self.model = model
        self.hook_points = check_hook_points(hook_points)
        self.select = _check_select(select, self.hook_points)
        self.detach = bool(detach)
        self.on_missing = on_missing
        self.features: dict[str, Any] = {}
        self.fire_counts: dict[str, int] = {}
        self.missing: list[str] = []
        self._handles: dict[str, RemovableHandle] = {}
        self._modules: dict[str, nn.Module] = {}
        self._taken_over: set[str] = set()
        self._closed = False
        self._recording = False
        # Resolve every name before hooking anything: a typo must leave the model untouched.
        modules = {name: resolve_hook_point(model, name) for name in self.hook_points}
        taken: list[str] = []
        for name, module in modules.items():
            taken += self._take_over(module)
            self._modules[name] = module
            self._handles[name] = module.register_forward_hook(self.hook_fn(name))
        weakref.finalize(self, _remove_handles, self._handles)
        if taken:
            warn_once(
                f"capture.take-over:{sorted(taken)}",
                f"hook points {sorted(taken)} were already hooked by another FeatureRecorder (or "
                "wrapper) that was never closed; its hooks were removed so that each module "
                "has one. Call close() on a recorder you no longer need.",
                CaptureWarning,
            )

    # --- hooks -------------------------------------------------------------------------

    def hook_fn(self, name: str) -> _CaptureHook:
        """The forward hook that stores a module's output in ``features[name]``."""
        return _CaptureHook(self, name)

    def __setstate__(self, state: dict) -> None:
        # copy.deepcopy: the copy removes its own hooks when it goes, as the original does.
        self.__dict__.update(state)
        weakref.finalize(self, _remove_handles, self._handles)

    def _store(self, name: str, output: Any) -> None:
        if name in self.select:
            try:
                output = _pick(name, output, self.select[name])
            except (TypeError, ValueError) as exc:
                # Left in place, the hook would break every later forward of the model.
                self.close()
                raise type(exc)(
                    f"{exc} This recorder's hooks were removed, so the model runs as before; "
                    "fix select and create a new recorder or wrapper."
                ) from exc
        self.features[name] = _densify(output, self.detach)
        self.fire_counts[name] = self.fire_counts.get(name, 0) + 1
        if self.fire_counts[name] == 2 and self._recording:
            warn_once(
                f"capture.fired-twice:{name}",
                f"hook point {name!r} fired more than once in one forward (a shared module?); "
                "features keep its last output, fire_counts has the count.",
                CaptureWarning,
            )

    def _take_over(self, module: nn.Module) -> list[str]:
        """Remove other recorders' hooks from ``module``; returns their hook point names."""
        taken = []
        for hook in list(module._forward_hooks.values()):
            owner = getattr(hook, _OWNER_ATTR, None)
            if owner is not None and owner is not self:
                taken += owner._release(module)
        return taken

    def _release(self, module: nn.Module) -> list[str]:
        """Give up this recorder's hooks on ``module`` (another recorder took it over)."""
        names = [n for n, m in self._modules.items() if m is module and n in self._handles]
        for name in names:
            self._handles.pop(name).remove()
            self._taken_over.add(name)
        return names

    # --- recording ---------------------------------------------------------------------

    def clear(self) -> None:
        """Forget all captures; a new dict, so dicts handed out earlier never change."""
        self.features = {}
        self.fire_counts = {}
        self.missing = []

    @contextmanager
    def recording(self) -> Iterator[dict[str, Any]]:
        """Clear, run the body (one forward), then handle hook points that did not fire."""
        if self._closed:
            raise RuntimeError("this FeatureRecorder is closed; create a new one to record again")
        if self._taken_over:
            raise RuntimeError(
                f"hook points {sorted(self._taken_over)} were taken over by a newer "
                "FeatureRecorder on the same model, so this one no longer sees them. Use the "
                "newer recorder, or close it and create this one again."
            )
        self.clear()
        self._recording = True
        try:
            yield self.features
        finally:
            self._recording = False
        self._check_fired()

    def _check_fired(self) -> None:
        self.missing = [n for n in self.hook_points if n not in self.fire_counts]
        if not self.missing or self.on_missing == "ignore":
            return
        fired = [n for n in self.hook_points if n in self.fire_counts]
        known = (
            " (BEVFusion builds pts_voxel_encoder but never calls it.)"
            if any(n.endswith("pts_voxel_encoder") for n in self.missing)
            else ""
        )
        message = (
            f"hook point(s) {self.missing} did not fire during this forward (fired: {fired}): "
            f"the module exists but the model never called it.{known} Remove it from "
            "hook_points, or pass on_missing='warn' or 'ignore' if it runs only in some modes."
        )
        if self.on_missing == "raise":
            raise HookNotFiredError(message)
        warn_once(f"capture.not-fired:{self.missing}", message, CaptureWarning)

    # --- lifetime ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Remove every hook this recorder installed (safe to call twice)."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self._closed = True

    def __enter__(self) -> FeatureRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"hooks on {list(self._handles)}"
        return f"FeatureRecorder({type(self.model).__name__}, {state}, detach={self.detach})"


class BEVFusionDistillationWrapper(nn.Module):
    """The tutorial's step-1 wrapper: runs the model and returns ``(result, features)``.

    ``is_student=False`` (teacher) captures detached tensors; ``is_student=True`` keeps their
    graph. Works with any model that has mmengine's ``loss``/``predict`` API. Call ``close()``
    (or use ``with``) to remove the hooks when done.
    """

    def __init__(
        self,
        model: nn.Module,
        is_student: bool = False,
        hook_points: str | Sequence[str] = DEFAULT_HOOK_POINTS,
        select: Mapping[str, int] | None = None,
        on_missing: str = "raise",
    ):
        super().__init__()
        while isinstance(model, BEVFusionDistillationWrapper):  # wrap the model, not a wrapper
            model = model.model
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected an nn.Module to wrap, got {type(model).__name__}")
        lacking = [m for m in ("loss", "predict") if not callable(getattr(model, m, None))]
        if lacking:
            methods = " or ".join(f"{m}()" for m in lacking)
            raise TypeError(
                f"{type(model).__name__} has no {methods} method: the wrapper needs mmengine's "
                "model API (loss, predict, forward(..., mode)). For a plain nn.Module use "
                "FeatureRecorder around your own forward call."
            )
        self.model = model
        self.is_student = bool(is_student)
        self.hook_points = check_hook_points(hook_points)
        self._select = select
        self._on_missing = on_missing
        self._recorder: FeatureRecorder | None = None
        self._register_hooks()

    def _register_hooks(self) -> None:
        """(Re)build the recorder; the teacher detaches because it must not learn from us."""
        if self._recorder is not None:
            self._recorder.close()
        self._recorder = FeatureRecorder(
            self.model,
            self.hook_points,
            select=self._select,
            detach=not self.is_student,
            on_missing=self._on_missing,
        )

    @property
    def recorder(self) -> FeatureRecorder:
        if self._recorder is None:
            raise RuntimeError("hooks are not registered; call _register_hooks() first")
        return self._recorder

    @property
    def features(self) -> dict[str, Any]:
        """Captures of the latest forward."""
        return self.recorder.features

    def forward(
        self,
        batch_inputs_dict: dict,
        batch_data_samples: Any = None,
        mode: str = "loss",
    ) -> tuple[Any, dict[str, Any]]:
        """Run ``model.loss`` / ``model.predict`` / the tensor forward and return captures.

        The returned dict is a fresh one each call, so features a caller kept from the last
        step never change under it.
        """
        run = self._runner(mode)
        with self.recorder.recording() as features:
            result = run(batch_inputs_dict, batch_data_samples)
        return result, dict(features)

    def _runner(self, mode: str):
        if mode == "loss":
            return self.model.loss
        if mode == "predict":
            return self.model.predict
        if mode == "tensor":
            params = inspect.signature(self.model.forward).parameters.values()
            if not any(p.name == "mode" or p.kind is p.VAR_KEYWORD for p in params):
                raise TypeError(
                    f"{type(self.model).__name__}.forward takes no 'mode' argument, so "
                    "mode='tensor' cannot be passed on; use mode='loss' or 'predict'."
                )
            return lambda inputs, samples: self.model(inputs, samples, mode="tensor")
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    def close(self) -> None:
        """Remove the hooks (safe to call twice); the model is left as it was."""
        if self._recorder is not None:
            self._recorder.close()

    def __enter__(self) -> BEVFusionDistillationWrapper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extra_repr(self) -> str:
        role = "student" if self.is_student else "teacher (detached)"
        return f"{role}, hook_points={list(self.hook_points)}"
