"""check_wrapper accepts a correct wrapper written differently and rejects wrong ones."""

from __future__ import annotations

import functools

import pytest
from torch import nn

from bevdistill import BEVFusionDistillationWrapper
from bevdistill.exercises import ExerciseFailed, check_wrapper

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")


class AltWrapper(nn.Module):
    """A correct wrapper without FeatureRecorder: partial-bound hooks and a dict of handles."""

    def __init__(self, model, is_student=False):
        super().__init__()
        self.model = model
        self.is_student = is_student
        self.features = {}
        self.layer_names = list(LAYERS)
        self._handles = {}
        self._register_hooks()

    def _register_hooks(self):
        for name in self.layer_names:
            module = getattr(self.model, name)
            self._handles[name] = module.register_forward_hook(self._get_activation_hook(name))

    def _get_activation_hook(self, name):
        return functools.partial(self._store, name)

    def _store(self, name, module, inputs, output):
        self.features[name] = self._prepare(output)

    def _prepare(self, output):
        if isinstance(output, (tuple, list)):
            return type(output)(self._prepare(o) for o in output)
        return output if self.is_student else output.detach()

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features = {}
        methods = {"loss": self.model.loss, "predict": self.model.predict}
        if mode not in methods:
            raise ValueError(f"mode must be one of {sorted(methods)}, got {mode!r}")
        return methods[mode](batch_inputs_dict, batch_data_samples), self.features

    def close(self):
        while self._handles:
            self._handles.popitem()[1].remove()


# --- mutants: each breaks one thing the step is about ------------------------------------


class TutorialSolution(nn.Module):
    """The tutorial's step-1 solution verbatim: no close(), so hooks are never removed."""

    def __init__(self, model, is_student=False):
        super().__init__()
        self.model = model
        self.is_student = is_student
        self.features = {}
        self.layer_names = []
        self._register_hooks()

    def _register_hooks(self):
        hook_layers = [
            ("pts_middle_encoder", self.model.pts_middle_encoder),
            ("pts_backbone", self.model.pts_backbone),
            ("pts_neck", self.model.pts_neck),
        ]
        for name, module in hook_layers:
            if module is not None:
                self.layer_names.append(name)
                module.register_forward_hook(self._get_activation_hook(name))

    def _get_activation_hook(self, name):
        def hook(module, input, output):
            self.features[name] = output

        return hook

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features = {}
        if mode == "loss":
            result = self.model.loss(batch_inputs_dict, batch_data_samples)
        elif mode == "predict":
            result = self.model.predict(batch_inputs_dict, batch_data_samples)
        else:
            raise ValueError(f"Unsupported mode: {mode}")
        return result, self.features


class StaleFeatures(AltWrapper):
    """Never clears: a layer that did not run keeps last step's output."""

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        method = {"loss": self.model.loss, "predict": self.model.predict}.get(mode)
        if method is None:
            raise ValueError(mode)
        return method(batch_inputs_dict, batch_data_samples), dict(self.features)


class ReusedDict(AltWrapper):
    """Clears in place and hands out the same dict every time."""

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features.clear()
        method = {"loss": self.model.loss, "predict": self.model.predict}.get(mode)
        if method is None:
            raise ValueError(mode)
        return method(batch_inputs_dict, batch_data_samples), self.features


class TeacherNotDetached(AltWrapper):
    def _prepare(self, output):
        return output


class DetachesStudentToo(AltWrapper):
    def _prepare(self, output):
        if isinstance(output, (tuple, list)):
            return type(output)(o.detach() for o in output)
        return output.detach()


class FirstElementOnly(AltWrapper):
    """Takes output[0] of every tuple/list, losing the other scales."""

    def _prepare(self, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output if self.is_student else output.detach()


class ClearsEveryHook(AltWrapper):
    """close() wipes the modules' hook tables, including hooks it did not install."""

    def close(self):
        for name in self.layer_names:
            getattr(self.model, name)._forward_hooks.clear()
        self._handles.clear()


class AlwaysLoss(AltWrapper):
    """Ignores mode: predict runs model.loss."""

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features = {}
        return self.model.loss(batch_inputs_dict, batch_data_samples), self.features


class ForgetsUnknownMode(AltWrapper):
    """Falls back to predict for any mode that is not 'loss'."""

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features = {}
        method = self.model.loss if mode == "loss" else self.model.predict
        return method(batch_inputs_dict, batch_data_samples), self.features


class Stub(nn.Module):
    def __init__(self, model, is_student=False):
        raise NotImplementedError


class Template(nn.Module):
    """The tutorial's exercise template with its TODOs unfilled."""

    def __init__(self, model, is_student=False):
        super().__init__()

    def _register_hooks(self):
        pass

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        pass


def failed_cases(result) -> list[str]:
    return [o.name for o in result.outcomes if o.status == "fail"]


def test_accepts_the_reference():
    result = check_wrapper(BEVFusionDistillationWrapper, verbose=False)  # its warnings stay in the child
    assert result.passed, result.report()


def test_accepts_an_alternative_correct_wrapper():
    result = check_wrapper(AltWrapper, verbose=False)
    assert result.passed, result.report()
    assert result.impl is AltWrapper


@pytest.mark.parametrize(
    ("mutant", "failing_case"),
    [
        (TutorialSolution, "close() removes every hook"),
        (StaleFeatures, "cleared at every forward"),
        (ReusedDict, "cleared at every forward"),
        (TeacherNotDetached, "teacher captures are detached"),
        (DetachesStudentToo, "student captures keep their autograd graph"),
        (FirstElementOnly, "tuple (pts_backbone) and list (pts_neck)"),
        (ClearsEveryHook, "closing one leaves the other working"),
        (AlwaysLoss, "mode='predict'"),
        (ForgetsUnknownMode, "unknown mode"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_rejects_mutant(mutant, failing_case):
    result = check_wrapper(mutant, verbose=False)
    assert result.passed is False
    assert result.impl is BEVFusionDistillationWrapper
    assert any(failing_case in name for name in failed_cases(result)), result.report()


def test_tutorial_solution_also_fails_on_the_undetached_teacher():
    failed = failed_cases(check_wrapper(TutorialSolution, verbose=False))
    assert "teacher captures are detached" in failed


def test_stale_features_pass_every_other_case():
    """The stale-features case is the only one that catches this mutant: it must stay."""
    assert failed_cases(check_wrapper(StaleFeatures, verbose=False)) == [
        "features are cleared at every forward (no stale or shared dict)"
    ]


@pytest.mark.parametrize("stub", [Stub, Template])
def test_unfilled_exercise_reports_not_implemented(stub):
    result = check_wrapper(stub, verbose=False)
    assert result.passed is False and result.not_implemented
    assert result.impl is BEVFusionDistillationWrapper
    assert "NOT IMPLEMENTED YET" in result.report()
    assert "not implemented yet" in result.message.lower()


def test_report_shows_the_failure_and_a_hint(capsys):
    check_wrapper(TeacherNotDetached)
    out = capsys.readouterr().out
    assert "✗ teacher captures are detached" in out
    assert "Diagnosis: The teacher's captured outputs keep their autograd graph" in out
    assert "store output.detach()" in out


def test_strict_raises(monkeypatch):
    with pytest.raises(ExerciseFailed, match="teacher captures"):
        check_wrapper(TeacherNotDetached, strict=True, verbose=False)
    monkeypatch.setenv("BEVDISTILL_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check_wrapper(TeacherNotDetached, verbose=False)
    assert check_wrapper(AltWrapper, verbose=False).passed  # strict never hits a passing impl


def test_cases_are_deterministic():
    first = check_wrapper(FirstElementOnly, verbose=False)
    second = check_wrapper(FirstElementOnly, verbose=False)
    assert [(o.name, o.status, o.detail) for o in first.outcomes] == [
        (o.name, o.status, o.detail) for o in second.outcomes
    ]
