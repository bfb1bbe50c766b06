"""Checker for tutorial step 1: the learner's ``BEVFusionDistillationWrapper``.

The learner's class follows the tutorial's contract: ``cls(model, is_student=False)``,
``forward(batch_inputs_dict, batch_data_samples=None, mode='loss')`` returning
``(result, features)``, hooks on ``pts_middle_encoder``, ``pts_backbone`` and ``pts_neck``,
and ``close()`` to remove them. Every case builds a fresh seeded :class:`TinyBEVDetector`.

Not checked here, on purpose: that wrapping a model twice *without* closing leaves one hook
per module. The reference does that with a registry of owners, which is library engineering
beyond this step; a learner's two wrappers each with their own hooks are correct as long as
closing one leaves the other working, and case 7 checks exactly that.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from bevdistill.capture import DEFAULT_HOOK_POINTS, BEVFusionDistillationWrapper
from bevdistill.exercises._checking import (
    Case,
    CheckFailure,
    CheckResult,
    expect,
    expect_close,
    expect_shape,
    run_cases,
)
from bevdistill.exercises._probes import cause
from bevdistill.models.tiny import TinyBEVDetector, random_batch

STEP = "Step 1: BEVFusionDistillationWrapper"
SEED = 0
_BATCH = 2


# --- helpers ---------------------------------------------------------------------------


class _NeckSkippingDetector(TinyBEVDetector):
    """A detector whose neck can be bypassed, so a hooked layer may not run in a forward."""

    def __init__(self) -> None:
        super().__init__(channels=(32, 32), neck_channels=32)
        self.skip_neck = False

    def extract_feat(self, batch_inputs_dict: dict) -> torch.Tensor:
        feats = self.pts_backbone(self.pts_middle_encoder(batch_inputs_dict["points"]))
        return feats[0] if self.skip_neck else self.pts_neck(feats)[0]


def _model(cls: type[TinyBEVDetector] = TinyBEVDetector) -> TinyBEVDetector:
    torch.manual_seed(SEED)
    return cls()


def _batch(seed: int = 0) -> tuple[dict, list[dict]]:
    return random_batch(batch_size=_BATCH, num_points=1500, seed=seed)


def _call(wrapper: Any, inputs: dict, samples: Any, mode: str) -> tuple[Any, dict]:
    """``wrapper(inputs, samples, mode=mode)``, checked to be a ``(result, features)`` pair."""
    out = wrapper(inputs, samples, mode=mode)
    if out is None:  # the tutorial's template: forward's body is still `pass`
        raise NotImplementedError("forward returned None")
    expect(
        isinstance(out, tuple) and len(out) == 2,
        f"forward must return (result, features); got {type(out).__name__}",
        "end forward with `return result, features`",
    )
    result, features = out
    expect(
        isinstance(features, dict),
        f"features must be a dict of layer name -> output; got {type(features).__name__}",
        "store each hooked output in a dict under its layer name",
    )
    missing = [n for n in DEFAULT_HOOK_POINTS if n not in features]
    expect(
        not missing,
        f"features has no entry for {missing} (keys: {list(features)})",
        "hook pts_middle_encoder, pts_backbone and pts_neck; store outputs by those names",
        causes=[C["captured"]],
    )
    return result, features


def _as_list(value: Any, what: str) -> list[torch.Tensor]:
    """A captured output as a list of tensors (one for a tensor, each item of a tuple/list)."""
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    for i, item in enumerate(items):
        expect(
            isinstance(item, torch.Tensor),
            f"{what}[{i}] is a {type(item).__name__}, expected a tensor",
            "keep the module's output as it is: a tensor, or a tuple/list of tensors",
        )
    return items


def _expected_outputs(model: TinyBEVDetector, inputs: dict) -> dict[str, list[torch.Tensor]]:
    """What the three default layers output, computed by calling them directly on a copy."""
    bev = model.pts_middle_encoder(inputs["points"])
    scales = model.pts_backbone(bev)
    return {
        "pts_middle_encoder": [bev],
        "pts_backbone": list(scales),
        "pts_neck": list(model.pts_neck(scales)),
    }


def _hook_counts(model: torch.nn.Module) -> list[int]:
    return [len(model.get_submodule(n)._forward_hooks) for n in DEFAULT_HOOK_POINTS]


def _compare_features(features: dict, expected: dict[str, list[torch.Tensor]], hint: str) -> None:
    for name, tensors in expected.items():
        got = _as_list(features[name], f"features[{name!r}]")
        expect(
            len(got) == len(tensors),
            f"features[{name!r}] holds {len(got)} tensor(s); {name} output {len(tensors)}",
            hint,
        )
        for i, (g, e) in enumerate(zip(got, tensors, strict=True)):
            expect_close(g, e, f"features[{name!r}][{i}]", rtol=1e-5, hint=hint)


# --- cases -----------------------------------------------------------------------------


def _case_result_and_keys(cls: Any) -> None:
    model = _model()
    direct = copy.deepcopy(model)
    inputs, samples = _batch()
    result, _ = _call(cls(model, is_student=False), inputs, samples, "loss")
    expected = direct.loss(inputs, samples)
    expect(
        isinstance(result, dict) and set(result) == set(expected),
        f"mode='loss' result should be model.loss(...)'s dict with keys {sorted(expected)}; "
        f"got {result if not isinstance(result, dict) else sorted(result)}",
    )
    for key, value in expected.items():
        expect_close(result[key], value, f"result[{key!r}]", rtol=1e-5)


def _case_values(cls: Any) -> None:
    model = _model()
    expected = _expected_outputs(copy.deepcopy(model), _batch()[0])
    _, features = _call(cls(model, is_student=True), *_batch(), "loss")
    _compare_features(features, expected, "store the hook's `output` argument itself")


def _case_tuple_and_list(cls: Any) -> None:
    _, features = _call(cls(_model(), is_student=False), *_batch(), "loss")
    shapes = {
        "pts_backbone": [[_BATCH, 16, 32, 32], [_BATCH, 32, 16, 16]],  # a tuple of two scales
        "pts_neck": [[_BATCH, 32, 32, 32]],  # a list with one tensor
    }
    for name, expected in shapes.items():
        value = features[name]
        expect(
            isinstance(value, (tuple, list)),
            f"features[{name!r}] is a {type(value).__name__}; {name} returns a "
            f"{'tuple' if name == 'pts_backbone' else 'list'} of {len(expected)} tensor(s)",
        )
        got = _as_list(value, f"features[{name!r}]")
        expect(
            len(got) == len(expected),
            f"features[{name!r}] has {len(got)} element(s), expected {len(expected)}",
        )
        for i, (tensor, shape) in enumerate(zip(got, expected, strict=True)):
            expect_shape(tensor, shape, f"features[{name!r}][{i}]")


def _case_fresh_features(cls: Any) -> None:
    model = _model(_NeckSkippingDetector)
    wrapper = cls(model, is_student=False)
    _, first = _call(wrapper, *_batch(seed=1), "loss")
    kept = {name: [t.detach().clone() for t in _as_list(v, name)] for name, v in first.items()}
    model.skip_neck = True  # the next forward never runs pts_neck
    second: dict | None = None
    try:
        second = wrapper(*_batch(seed=2), mode="predict")[1]
    except NotImplementedError:
        raise
    except Exception as exc:  # reporting that pts_neck did not fire is a correct answer
        expect(
            "pts_neck" in str(exc),
            f"with pts_neck skipped, forward raised {type(exc).__name__}: {exc}",
            "either leave pts_neck out of this forward's features or raise an error naming it",
        )
    if second is not None:
        expect(
            "pts_neck" not in second,
            "pts_neck did not run in this forward, yet features['pts_neck'] is there: a stale "
            "capture from the previous forward",
            causes=[C["stale"]],
        )
        expect(second is not first, "forward returned the same dict object as the last forward",
               causes=[C["shared-dict"]])
        expect(
            not torch.equal(second["pts_middle_encoder"], kept["pts_middle_encoder"][0]),
            "features['pts_middle_encoder'] did not change with a new batch",
        )
    for name, tensors in kept.items():
        expect(name in first, f"the features dict returned by the previous forward lost {name!r}",
               causes=[C["shared-dict"]])
        now = _as_list(first[name], name)
        expect(
            len(now) == len(tensors)
            and all(torch.equal(a, b) for a, b in zip(now, tensors, strict=True)),
            f"the features dict returned by the previous forward changed ({name!r}): the same "
            "dict object is being reused",
            causes=[C["shared-dict"]],
        )


def _case_teacher_detached(cls: Any) -> None:
    with torch.enable_grad():
        _, features = _call(cls(_model(), is_student=False), *_batch(), "loss")
    for name in DEFAULT_HOOK_POINTS:
        for i, tensor in enumerate(_as_list(features[name], name)):
            expect(
                not tensor.requires_grad,
                f"teacher features[{name!r}][{i}] still carries an autograd graph",
            )


def _case_student_graph(cls: Any) -> None:
    model = _model()
    _, features = _call(cls(model, is_student=True), *_batch(), "loss")
    tensors = [t for n in ("pts_backbone", "pts_neck") for t in _as_list(features[n], n)]
    expect(
        all(t.grad_fn is not None for t in tensors),
        "student features of pts_backbone / pts_neck have no grad_fn: they were detached",
    )
    sum(t.pow(2).mean() for t in tensors).backward()
    grads = [p.grad for p in model.pts_backbone.parameters()]
    expect(
        all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads),
        "a loss on the student's captured features did not reach pts_backbone's weights",
    )


def _case_close(cls: Any) -> None:
    model = _model()
    model.pts_backbone.register_forward_hook(lambda module, args, output: None)  # not yours
    before = _hook_counts(model)
    wrapper = cls(model, is_student=False)
    _call(wrapper, *_batch(), "loss")
    installed = _hook_counts(model)
    expect(
        all(i > b for i, b in zip(installed, before, strict=True)),
        f"no forward hook was added on some of {list(DEFAULT_HOOK_POINTS)} "
        f"(hooks before {before}, after construction {installed})",
        "call module.register_forward_hook(...) for each layer in _register_hooks()",
    )
    expect(callable(getattr(wrapper, "close", None)), "the wrapper has no close() method")
    wrapper.close()
    wrapper.close()  # a second close must be harmless
    after = _hook_counts(model)
    expect(
        after == before,
        f"hooks per layer {list(DEFAULT_HOOK_POINTS)}: {before} before wrapping, {after} after "
        "close()" + (" (close() removed a hook it did not install)" if after < before else ""),
    )


def _case_two_wrappers(cls: Any) -> None:
    model = _model()
    inputs, samples = _batch()
    expected = _expected_outputs(copy.deepcopy(model), inputs)
    first = cls(model, is_student=False)
    _call(first, inputs, samples, "loss")
    second = cls(model, is_student=True)
    first.close()
    try:
        _, features = _call(second, inputs, samples, "loss")
        _compare_features(features, expected, hint="")
    except CheckFailure as failure:
        raise CheckFailure(
            f"after closing the first of two wrappers, the second: {failure}"
        ) from None
    second.close()
    expect(
        _hook_counts(model) == [0, 0, 0],
        f"after closing both wrappers, hooks per layer are {_hook_counts(model)}",
    )


def _case_predict(cls: Any) -> None:
    model = _model()
    direct = copy.deepcopy(model)
    inputs, samples = _batch()
    result, _ = _call(cls(model, is_student=False), inputs, samples, "predict")
    expected = direct.predict(inputs, samples)
    expect(
        isinstance(result, list) and len(result) == len(expected),
        f"mode='predict' should return model.predict(...)'s list of {len(expected)} results; "
        f"got {type(result).__name__}",
    )
    for i, (got, want) in enumerate(zip(result, expected, strict=True)):
        expect(isinstance(got, dict) and "heatmap" in got, f"result[{i}] has no 'heatmap'")
        expect_close(got["heatmap"], want["heatmap"], f"result[{i}]['heatmap']", rtol=1e-5)


def _case_unknown_mode(cls: Any) -> None:
    wrapper = cls(_model(), is_student=False)
    _call(wrapper, *_batch(), "loss")
    try:
        wrapper(*_batch(), mode="train")
    except ValueError:
        return
    raise CheckFailure("mode='train' did not raise ValueError")


C = {
    "captured": cause("captured", "The returned features miss a requested layer (a hook on a layer that "
                      "never runs, a misspelt name, or a dict that is never filled): hook pts_middle_encoder, "
                      "pts_backbone and pts_neck and store each output under its name.", "loss-result",
                      "output-stored", "whole-output", "stale", "shared-dict", "teacher-detach",
                      "student-detach", "stacked", "close", "clears-every-hook", "mode-ignored", "unknown-mode"),
    "loss-result": cause("loss-result", "mode='loss' must return model.loss(...)'s dict as the result: "
                         "result = self.model.loss(batch_inputs_dict, batch_data_samples).", "mode-ignored"),
    "output-stored": cause("output-stored", "The hook does not store the layer's output itself: the hook "
                           "gets (module, input, output); store `output`.", "clears-every-hook"),
    "whole-output": cause("whole-output", "A tuple or list output is not kept whole (output[0] only, or "
                          "its type changed), which drops scales of pts_backbone: keep the whole output "
                          "and detach each tensor inside it.", "output-stored", "clears-every-hook"),
    "stale": cause("stale", "forward never starts a new features dict, so a layer that did not run keeps "
                   "the previous step's output: begin forward with self.features = {} and return that dict."),
    "shared-dict": cause("shared-dict", "forward clears and returns the same dict every time, so the dict "
                         "a caller kept from the previous step changes under it: assign a new dict "
                         "(self.features = {}) instead of .clear()."),
    "teacher-detach": cause("teacher-detach", "The teacher's captured outputs keep their autograd graph: "
                            "store output.detach() (each tensor of a tuple or list) when is_student is False."),
    "student-detach": cause("student-detach", "The student's outputs are detached too, so no distillation "
                            "gradient can reach the student: detach only when is_student is False."),
    "close": cause("close", "close() does not remove the hooks this wrapper installed (or is missing): keep "
                   "the handles register_forward_hook returns and call .remove() on each in close()."),
    "stacked": cause("stacked", "Every forward registers its hooks again, so they stack up and each layer "
                     "runs more hooks at every step: register them once, in __init__."),
    "clears-every-hook": cause("clears-every-hook", "close() removes hooks other code installed (it "
                               "empties the modules' whole hook tables): call .remove() on this wrapper's "
                               "own handles only.", "close"),
    "mode-ignored": cause("mode-ignored", "mode='predict' does not return model.predict(...): call "
                          "model.predict for mode='predict'.", "unknown-mode"),
    "unknown-mode": cause("unknown-mode", "Any mode other than 'loss' and 'predict' must raise, so that a "
                          "typo such as mode='train' does not pass silently: end the if/elif on mode with "
                          "else: raise ValueError(...)."),
}


def _case_hooks_do_not_stack(cls: Any) -> None:
    model = _model()
    wrapper = cls(model, is_student=False)
    counts = []
    for seed in range(3):
        _call(wrapper, *_batch(seed), "loss")
        counts.append(_hook_counts(model))
    expect(counts[0] == counts[-1], f"hooks per layer after 1, 2 and 3 forwards: {counts}")


CASES: Sequence[Case] = (
    Case(
        "returns (result, features); result is model.loss(...)",
        _case_result_and_keys,
        "mode='loss' -> result = self.model.loss(batch_inputs_dict, batch_data_samples)",
        cause=C["loss-result"],
    ),
    Case(
        "captured values equal what the three layers output",
        _case_values,
        "the hook gets (module, input, output): store `output`",
        cause=C["output-stored"],
    ),
    Case(
        "tuple (pts_backbone) and list (pts_neck) outputs are kept whole",
        _case_tuple_and_list,
        "don't take output[0] or call .detach() on a tuple: handle each tensor inside it",
        cause=C["whole-output"],
    ),
    Case(
        "features are cleared at every forward (no stale or shared dict)",
        _case_fresh_features,
        "start forward with a NEW dict (self.features = {}) and return that one",
    ),
    Case(
        "teacher captures are detached",
        _case_teacher_detached,
        "when is_student is False, store output.detach() (each tensor of a tuple/list)",
        cause=C["teacher-detach"],
    ),
    Case(
        "student captures keep their autograd graph",
        _case_student_graph,
        "when is_student is True, store the output as is: the distillation loss trains it",
        cause=C["student-detach"],
    ),
    Case("hooks do not stack up over forwards", _case_hooks_do_not_stack, cause=C["stacked"]),
    Case(
        "close() removes every hook it installed, and only those",
        _case_close,
        "add close(): keep the handles register_forward_hook returns, call .remove() on each",
        cause=C["close"],
    ),
    Case(
        "two wrappers on one model: closing one leaves the other working",
        _case_two_wrappers,
        "close() removes only its own handles (never module._forward_hooks.clear())",
        cause=C["clears-every-hook"],
    ),
    Case(
        "mode='predict' returns model.predict(...)",
        _case_predict,
        "mode='predict' -> result = self.model.predict(batch_inputs_dict, batch_data_samples)",
        cause=C["mode-ignored"],
    ),
    Case(
        "an unknown mode raises ValueError",
        _case_unknown_mode,
        "end the if/elif on mode with: else: raise ValueError(...)",
        cause=C["unknown-mode"],
    ),
)


def check_wrapper(
    learner_cls: Any,
    strict: bool | None = None,
    verbose: bool = True,
    time_limit_s: float | None = None,
) -> CheckResult:
    """Run every step-1 case on ``learner_cls``; ``.impl`` is it if all pass, else the reference."""
    return run_cases(
        STEP,
        learner_cls,
        BEVFusionDistillationWrapper,
        CASES,
        strict,
        verbose,
        SEED,
        time_limit_s=time_limit_s,
    )
