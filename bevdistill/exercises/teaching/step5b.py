"""Step 5b: every distillation term of several layers, named for mmengine, in float32."""

import torch
from torch import nn

from bevdistill import AttentionTransferLoss, ContrastiveLoss, ProjectionMLP
from bevdistill.exercises.teaching.step5a import heatmap_kd  # in the notebook: yours, from 5a


def layer_input(features, layer, channels, side):
    """features[layer] in float32, or an error naming what is wrong (never print and go on)."""
    if layer not in features:
        raise KeyError(f"{side} features have no {layer!r}; they have {sorted(features)}")
    x = features[layer]
    if x.shape[1] != channels:
        raise ValueError(f"{side} {layer!r}: expected {channels} channels, got {x.shape[1]}")
    return x.float()


class MyDistillationLoss(nn.Module):
    def __init__(self, student_channels, teacher_channels, feat_dim=128, temperature=0.07,
                 alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5):
        super().__init__()
        self.channels = {k: (student_channels[k], teacher_channels[k]) for k in student_channels}
        self.alpha_crd, self.alpha_at, self.alpha_kd = alpha_crd, alpha_at, alpha_kd
        # nn.ModuleDict registers the projectors (so they train); '.' is not allowed in its keys.
        self.proj_s = nn.ModuleDict({k.replace(".", "_"): ProjectionMLP(c, out_dim=feat_dim)
                                     for k, (c, _) in self.channels.items()})
        self.proj_t = nn.ModuleDict({k.replace(".", "_"): ProjectionMLP(c, out_dim=feat_dim)
                                     for k, (_, c) in self.channels.items()})
        self.contrastive, self.attention = ContrastiveLoss(temperature), AttentionTransferLoss()

    def forward(self, student_features, teacher_features, student_outputs=None, teacher_outputs=None):
        losses = {}
        device = next(iter(student_features.values())).device.type
        with torch.autocast(device_type=device, enabled=False):  # float32 even under autocast
            for layer, (cs, ct) in self.channels.items():
                s = layer_input(student_features, layer, cs, "student")
                t = layer_input(teacher_features, layer, ct, "teacher").detach()
                key = layer.replace(".", "_")
                z_s, z_t = self.proj_s[key](s), self.proj_t[key](t)
                losses[f"loss_crd.{layer}"] = self.alpha_crd * self.contrastive(z_s, z_t)
                losses[f"loss_at.{layer}"] = self.alpha_at * self.attention(s, t)
            if student_outputs is not None and teacher_outputs is not None:
                kd = heatmap_kd(student_outputs.float(), teacher_outputs.float())
                losses["loss_kd.heatmap"] = self.alpha_kd * kd
        return losses
