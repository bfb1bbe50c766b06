"""Step 6a: read each hooked layer's channel count from one dry forward of the model."""

import torch

from bevdistill import FeatureRecorder
from bevdistill.distiller import example_inputs_for

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")
PICK = {"pts_backbone": -1}  # pts_backbone returns a tuple of scales: distil the last


def measure_channels(model):
    """{layer: channels} of a model, without changing it (eval, no grad, hooks removed)."""
    was_training = model.training
    model.eval()  # in train mode, BatchNorm would update its running statistics
    with FeatureRecorder(model, LAYERS, select=PICK, detach=True) as recorder:
        with torch.no_grad(), recorder.recording() as features:
            model(example_inputs_for(model), mode="tensor")
        channels = {}
        for name, value in features.items():
            if isinstance(value, (tuple, list)):  # SECONDFPN returns a list with one map
                value = value[0]
            channels[name] = value.shape[1]
    model.train(was_training)
    return channels
