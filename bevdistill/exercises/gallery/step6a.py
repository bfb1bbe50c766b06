"""Known mistakes of step 6a (measuring channels with a dry forward), compared by failed checks."""

from __future__ import annotations

import torch

from bevdistill.capture import FeatureRecorder
from bevdistill.distiller import example_inputs_for
from bevdistill.exercises._checking import Gallery, Misconception, observe

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")


def _measurer(pick=-1, eval_mode=True, restore=True, close=True, typed=None):
    """A measure_channels that makes the mistakes its arguments name."""

    def measure_channels(model):
        if typed is not None:
            return dict(typed)
        was_training = model.training
        if eval_mode:
            model.eval()
        if close:
            with FeatureRecorder(model, LAYERS, select={"pts_backbone": pick}, detach=True) as rec:
                with torch.no_grad(), rec.recording() as captured:
                    model(example_inputs_for(model), mode="tensor")
                features = dict(captured)
        else:  # raw hooks whose handles are dropped: nothing ever removes them
            features = {}
            for name in LAYERS:
                model.get_submodule(name).register_forward_hook(
                    lambda m, i, o, name=name: features.__setitem__(name, o[pick] if name == "pts_backbone" else o))
            with torch.no_grad():
                model(example_inputs_for(model), mode="tensor")
        channels = {k: (v[0] if isinstance(v, (tuple, list)) else v).shape[1] for k, v in features.items()}
        if restore:
            model.train(was_training)
        return channels

    return measure_channels


def _observe_model(fn):
    from bevdistill.exercises.step6_build import STUDENT
    from bevdistill.exercises.step6a_channels import _detector

    model = _detector(STUDENT).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fn(model)
    return {
        "train flags": sorted({m.training for m in model.modules()}),
        "statistics moved": any(not torch.equal(v, before[k]) for k, v in model.state_dict().items()),
        "hooks left": any(m._forward_hooks for m in model.modules()),
    }


def probe(fn) -> dict:
    """The channels measured on two detectors, and what measuring did to a model."""
    from bevdistill.exercises.step6_build import STUDENT, TEACHER_OTHER
    from bevdistill.exercises.step6a_channels import _detector

    return {
        "student": observe(lambda: fn(_detector(STUDENT))),
        "wider teacher": observe(lambda: fn(_detector(TEACHER_OTHER))),
        "side effects": observe(lambda: _observe_model(fn)),
    }


ENTRIES = [
    Misconception(
        "channels typed by hand",
        "The channel counts are typed in, so they are right for one model only: read shape[1] of "
        "each feature a dry forward captures.",
        lambda: _measurer(typed={"pts_middle_encoder": 8, "pts_backbone": 16, "pts_neck": 16}),
    ),
    Misconception(
        "first backbone scale",
        "pts_backbone's first scale is measured, but the distiller distils its last "
        "(select={'pts_backbone': -1}): take value[-1] of the tuple.",
        lambda: _measurer(pick=0),
    ),
    Misconception(
        "forward in train mode",
        "The dry forward runs in train mode, so BatchNorm updates its running statistics: call "
        "model.eval() first and restore the mode after.",
        lambda: _measurer(eval_mode=False),
    ),
    Misconception(
        "mode not restored",
        "The model is left in eval mode after measuring: remember model.training and call "
        "model.train(was_training) at the end.",
        lambda: _measurer(restore=False),
    ),
    Misconception(
        "hooks left behind",
        "The measuring hooks stay on the model, so every later forward still records into them: "
        "close the recorder (a with block does it) or remove the hook handles.",
        lambda: _measurer(close=False),
    ),
]

GALLERY = Gallery(ENTRIES, probe)
