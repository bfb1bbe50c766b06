"""Known mistakes of step 2 (the projection head), each with the root causes its checker must name."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from mistakes import Mistake


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


MISTAKES = [
    Mistake("BatchNorm head", _BatchNorm, ("batchnorm",)),
    Mistake("no L2 normalisation", _NoL2Norm, ("l2",)),
    Mistake("normalised over the batch", _NormaliseDim0, ("rows",)),
    Mistake("positions flattened into channels", _FlattenPositions, ("ranks",)),
    Mistake("not every rank pooled", _NotEveryRank, ("ranks",)),
    Mistake("out_dim ignored", _FixedOutDim, ("out-dim",)),
    Mistake("max pooling", _MaxPool, ("pooling-max",)),
    Mistake("dropout always on", _DropoutAlwaysOn, ("dropout",)),
    Mistake("input detached", _InputDetached, ("input-grad",)),
]
