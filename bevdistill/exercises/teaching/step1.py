"""Step 1: record what three layers output, with forward hooks that can be removed."""

from torch import nn


def _detached(output):
    if isinstance(output, (tuple, list)):  # pts_backbone returns a tuple of scales
        return type(output)(_detached(o) for o in output)
    return output.detach()


class MyDistillationWrapper(nn.Module):
    HOOK_POINTS = ("pts_middle_encoder", "pts_backbone", "pts_neck")

    def __init__(self, model, is_student=False):
        super().__init__()
        self.model, self.is_student, self.features = model, is_student, {}
        self._handles = [  # keep the handles: they are how close() removes exactly these hooks
            model.get_submodule(name).register_forward_hook(self._hook(name))
            for name in self.HOOK_POINTS
        ]

    def _hook(self, name):
        def store(module, inputs, output):
            # The student keeps its graph (the loss trains it); the teacher is a fixed target.
            self.features[name] = output if self.is_student else _detached(output)

        return store

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        if mode not in ("loss", "predict"):
            raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")
        self.features = {}  # a new dict: no stale layer, no dict shared with the last step
        run = self.model.loss if mode == "loss" else self.model.predict
        return run(batch_inputs_dict, batch_data_samples), self.features

    def close(self):
        while self._handles:
            self._handles.pop().remove()
