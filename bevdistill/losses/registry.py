"""The package's losses and connectors in mmengine's ``MODELS`` registry, by class name.

A distillation term names its loss and connector by these names
(``loss=dict(type='AttentionTransferLoss')``); a loss of your own joins them with
``@MODELS.register_module()``. Registration happens once, on the first term built, so that
``import bevdistill`` stays cheap.
"""

from __future__ import annotations

from functools import cache

from mmengine.registry import MODELS
from torch import nn


class NoConnector(nn.Identity):
    """A side that enters the loss as captured (``connector=dict(type='NoConnector')``)."""


@cache
def register_builtin_parts() -> None:
    from bevdistill.losses.attention import AttentionTransferLoss
    from bevdistill.losses.cells import SampledCellInfoNCE
    from bevdistill.losses.contrastive import (
        ContrastiveLoss,
        MemoryBankContrastiveLoss,
        SpatialContrastiveLoss,
    )
    from bevdistill.losses.feature import FeatureMSELoss
    from bevdistill.losses.response import HeatmapDistillationLoss
    from bevdistill.projection import ProjectionMLP, SpatialProjector

    for cls in (AttentionTransferLoss, SampledCellInfoNCE, ContrastiveLoss,
                MemoryBankContrastiveLoss, SpatialContrastiveLoss, FeatureMSELoss,
                HeatmapDistillationLoss, ProjectionMLP, SpatialProjector, NoConnector):
        if MODELS.get(cls.__name__) is not cls:
            MODELS.register_module(module=cls)
