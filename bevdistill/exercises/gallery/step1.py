"""Known mistakes of step 1 (the feature-capturing wrapper), compared by which checks fail."""

from __future__ import annotations

from torch import nn

from bevdistill.exercises._checking import Gallery, Misconception

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


ENTRIES = [
    Misconception(
        "the tutorial's wrapper",
        "This is the tutorial's wrapper: it has no close() and keeps no hook handles, so its hooks "
        "can never be removed, and it stores the teacher's outputs with their graph: keep the "
        "handles register_forward_hook returns, remove them in close(), and store "
        "output.detach() for the teacher.",
        lambda: _Tutorial,
    ),
    Misconception(
        "features never cleared",
        "forward never starts a new features dict, so a layer that did not run keeps the previous "
        "step's output: begin forward with self.features = {} and return that dict.",
        lambda: _NeverCleared,
    ),
    Misconception(
        "features cleared in place",
        "forward clears and returns the same dict every time, so the dict a caller kept from the "
        "previous step changes under it: assign a new dict (self.features = {}) instead of "
        ".clear().",
        lambda: _ClearedInPlace,
    ),
    Misconception(
        "teacher not detached",
        "The teacher's captured outputs keep their autograd graph: store output.detach() (each "
        "tensor of a tuple or list) when is_student is False.",
        lambda: _TeacherNotDetached,
    ),
    Misconception(
        "student detached",
        "The student's outputs are detached too, so no distillation gradient can reach the "
        "student: detach only when is_student is False.",
        lambda: _StudentDetached,
    ),
    Misconception(
        "first element only",
        "Only output[0] of a tuple or list output is kept, which drops scales of pts_backbone and "
        "changes the type: keep the whole output and detach each tensor inside it.",
        lambda: _FirstElementOnly,
    ),
    Misconception(
        "clears every hook",
        "close() empties the modules' whole hook tables, removing hooks other code installed: "
        "call .remove() on the handles this wrapper got from register_forward_hook, and only "
        "those.",
        lambda: _ClearsEveryHook,
    ),
    Misconception(
        "mode ignored",
        "forward always calls model.loss, whatever the mode: call model.predict for "
        "mode='predict' and raise ValueError for any other mode.",
        lambda: _AlwaysLoss,
    ),
    Misconception(
        "unknown mode runs predict",
        "Any mode other than 'loss' runs model.predict, so a typo such as mode='train' passes "
        "silently: end the if/elif on mode with else: raise ValueError(...).",
        lambda: _UnknownModeIsPredict,
    ),
]

GALLERY = Gallery(ENTRIES)
