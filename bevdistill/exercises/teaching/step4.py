"""Step 4: attention transfer between BEV maps of any channels and grids."""

import torch.nn.functional as F
from torch import nn


def attention_map(feat):
    """Where a layer is active: the mean over channels of the squared features, [B, 1, H, W]."""
    return feat.pow(2).mean(dim=1, keepdim=True)


class MyAttentionTransferLoss(nn.Module):
    def forward(self, student_feat, teacher_feat):
        a_s = attention_map(student_feat)
        a_t = attention_map(teacher_feat.detach())  # the teacher is a fixed target
        # Bring both maps to the smaller grid by averaging cells (never bilinear when shrinking).
        size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
        a_s, a_t = F.adaptive_avg_pool2d(a_s, size), F.adaptive_avg_pool2d(a_t, size)
        # Unit L2 vectors per sample; sum over cells (a mean would shrink the loss by H*W).
        a_s = F.normalize(a_s.flatten(1), p=2, dim=1)
        a_t = F.normalize(a_t.flatten(1), p=2, dim=1)
        return (a_s - a_t).pow(2).sum(dim=1).mean()
