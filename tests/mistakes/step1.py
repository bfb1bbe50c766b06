"""Known mistakes of step 1 (the feature-capturing wrapper), each with the root causes its checker must name."""

from __future__ import annotations

from torch import nn

from mistakes import Mistake

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")


class _Base(nn.Module):
    """A correct wrapper split into steps, so each mistake overrides exactly one."""

    def __init__(self, model, is_student=False):
        super().__init__()
        self.model, self.is_student, self.features = model, is_student, {}
        self.handles = [
            model.get_submodule(name).register_forward_hook(self.hook(name)) for name in LAYERS
        ]

    def hook(self, name):
        def store(module, args, output):
            self.features[name] = self.prepare(output)

        return store

    def prepare(self, output):
        if isinstance(output, (tuple, list)):
            return type(output)(self.prepare(o) for o in output)
        return output if self.is_student else output.detach()

    def run(self, mode):
        methods = {"loss": self.model.loss, "predict": self.model.predict}
        if mode not in methods:
            raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")
        return methods[mode]

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features = {}
        return self.run(mode)(batch_inputs_dict, batch_data_samples), self.features

    def close(self):
        while self.handles:
            self.handles.pop().remove()


class _Tutorial(_Base):
    """The tutorial's wrapper: hooks without kept handles, no close(), the teacher undetached."""

    def prepare(self, output):
        return output

    @property
    def close(self):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute 'close'")


class _NeverCleared(_Base):
    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        return self.run(mode)(batch_inputs_dict, batch_data_samples), dict(self.features)


class _ClearedInPlace(_Base):
    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.features.clear()
        return self.run(mode)(batch_inputs_dict, batch_data_samples), self.features


class _TeacherNotDetached(_Base):
    def prepare(self, output):
        return output


class _StudentDetached(_Base):
    def prepare(self, output):
        if isinstance(output, (tuple, list)):
            return type(output)(o.detach() for o in output)
        return output.detach()


class _FirstElementOnly(_Base):
    def prepare(self, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output if self.is_student else output.detach()


class _ClearsEveryHook(_Base):
    def close(self):
        for name in LAYERS:
            self.model.get_submodule(name)._forward_hooks.clear()
        self.handles.clear()


class _AlwaysLoss(_Base):
    def run(self, mode):
        return self.model.loss


class _UnknownModeIsPredict(_Base):
    def run(self, mode):
        return self.model.loss if mode == "loss" else self.model.predict


MISTAKES = [
    Mistake("the tutorial's wrapper", _Tutorial, ("teacher-detach", "close")),
    Mistake("features never cleared", _NeverCleared, ("stale",)),
    Mistake("features cleared in place", _ClearedInPlace, ("shared-dict",)),
    Mistake("teacher not detached", _TeacherNotDetached, ("teacher-detach",)),
    Mistake("student detached", _StudentDetached, ("student-detach",)),
    Mistake("first element only", _FirstElementOnly, ("whole-output",)),
    Mistake("clears every hook", _ClearsEveryHook, ("clears-every-hook",)),
    Mistake("mode ignored", _AlwaysLoss, ("mode-ignored",)),
    Mistake("unknown mode runs predict", _UnknownModeIsPredict, ("unknown-mode",)),
]
