"""Step 2: pool any feature map to one vector per sample, project it, L2-normalise it."""

import torch.nn.functional as F
from torch import nn


class MyProjectionMLP(nn.Module):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),  # per sample: works at batch size 1, unlike BatchNorm1d
            nn.ReLU(),
            nn.Dropout(0.1),  # a module, so .eval() switches it off
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x):
        if x.dim() > 2:  # [B, C, N], [B, C, H, W], [B, C, D, H, W]: average every position
            x = x.flatten(2).mean(dim=2)
        return F.normalize(self.mlp(x), dim=1)  # each row a unit vector (dim=1, not 0)
