"""Known mistakes of step 6a (measuring channels with a dry forward), each with the root causes its checker must name."""

from __future__ import annotations

import torch

from bevdistill.capture import FeatureRecorder
from bevdistill.distiller import example_inputs_for
from mistakes import Mistake

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


MISTAKES = [
    Mistake("channels typed by hand", _measurer(typed={"pts_middle_encoder": 8, "pts_backbone": 16, "pts_neck": 16}), ("values",)),
    Mistake("first backbone scale", _measurer(pick=0), ("values",)),
    Mistake("forward in train mode", _measurer(eval_mode=False), ("statistics",)),
    Mistake("mode not restored", _measurer(restore=False), ("mode",)),
    Mistake("hooks left behind", _measurer(close=False), ("hooks",)),
]
