"""Known mistakes of step 2 (the projection head), compared by which checks fail.

A projector has its own random weights, so answers are compared by behaviour (which check
fails, or which error the code raises), not by value.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from bevdistill.exercises._checking import Gallery, Misconception


class _Base(nn.Module):
    """A correct projector split into steps, so each mistake overrides exactly one."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.layer1 = nn.Linear(in_dim, hidden_dim)
        self.norm = self.make_norm(hidden_dim)
        self.dropout = nn.Dropout(0.1)
        self.layer2 = nn.Linear(hidden_dim, out_dim)

    def make_norm(self, hidden_dim):
        return nn.LayerNorm(hidden_dim)

    def pool(self, x):
        return x.flatten(2).mean(2) if x.dim() > 2 else x

    def mlp(self, x):
        return self.layer2(self.dropout(F.relu(self.norm(self.layer1(x)))))

    def forward(self, x):
        return F.normalize(self.mlp(self.pool(x)), dim=1)


class _BatchNorm(_Base):
    def make_norm(self, hidden_dim):
        return nn.BatchNorm1d(hidden_dim)


class _NoL2Norm(_Base):
    def forward(self, x):
        return self.mlp(self.pool(x))


class _NormaliseDim0(_Base):
    def forward(self, x):
        return F.normalize(self.mlp(self.pool(x)), dim=0)


class _FlattenPositions(_Base):
    def pool(self, x):
        return x.flatten(1)


class _NotEveryRank(_Base):
    def pool(self, x):
        if x.dim() == 4:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x.mean(dim=2) if x.dim() == 3 else x


class _FixedOutDim(_Base):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__(in_dim, hidden_dim, 128)


class _MaxPool(_Base):
    def pool(self, x):
        return x.flatten(2).amax(2) if x.dim() > 2 else x


class _DropoutAlwaysOn(_Base):
    def mlp(self, x):
        return self.layer2(F.dropout(F.relu(self.norm(self.layer1(x))), 0.3, training=True))


class _InputDetached(_Base):
    def forward(self, x):
        return super().forward(x.detach())


ENTRIES = [
    Misconception(
        "BatchNorm head",
        "BatchNorm1d needs more than one sample per channel in training mode, so the head "
        "crashes at batch size 1: use nn.LayerNorm(hidden_dim), which normalises each sample "
        "on its own.",
        lambda: _BatchNorm,
    ),
    Misconception(
        "no L2 normalisation",
        "The output is never L2-normalised, so its rows are not unit vectors: end forward with "
        "F.normalize(x, dim=1).",
        lambda: _NoL2Norm,
    ),
    Misconception(
        "normalised over the batch",
        "The output is normalised over the batch (dim=0), which mixes samples and leaves rows "
        "that are not unit vectors: use F.normalize(x, dim=1).",
        lambda: _NormaliseDim0,
    ),
    Misconception(
        "positions flattened into channels",
        "The positions are flattened into the channel vector instead of pooled, so the first "
        "Linear layer sees C*H*W inputs: average over positions with x.flatten(2).mean(2).",
        lambda: _FlattenPositions,
    ),
    Misconception(
        "not every rank pooled",
        "The pooling does not reduce every dimension after the channels for every input rank "
        "([B, C, N], [B, C, H, W], [B, C, D, H, W]): use x.flatten(2).mean(2) whenever "
        "x.dim() > 2.",
        lambda: _NotEveryRank,
    ),
    Misconception(
        "out_dim ignored",
        "The output width is fixed instead of taken from out_dim: build the last layer as "
        "nn.Linear(hidden_dim, out_dim).",
        lambda: _FixedOutDim,
    ),
    Misconception(
        "max pooling",
        "The positions are max-pooled, but the projector must average them: use "
        "x.flatten(2).mean(2).",
        lambda: _MaxPool,
    ),
    Misconception(
        "dropout always on",
        "F.dropout(..., training=True) stays on in eval mode, so eval outputs are random: use an "
        "nn.Dropout module, which .eval() switches off.",
        lambda: _DropoutAlwaysOn,
    ),
    Misconception(
        "input detached",
        "The input is detached (or the forward runs under no_grad), so no gradient reaches the "
        "features being projected: use x as it is.",
        lambda: _InputDetached,
    ),
]

GALLERY = Gallery(ENTRIES)
