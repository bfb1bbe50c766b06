"""The package's losses and connectors in mmengine's ``MODELS`` registry, by class name.

A distillation term names its loss and connector by these names
(``loss=dict(type='AttentionTransferLoss')``). Each class registers itself with
``@MODELS.register_module()``, in its own module, like a loss of your own; this module only
imports the package's loss modules and the connectors once, on the first term built, so that
``import bevdistill`` stays cheap and a new built-in loss needs no edit here.
"""

from __future__ import annotations

import pkgutil
from functools import cache
from importlib import import_module

from mmengine.registry import MODELS
from torch import nn


@MODELS.register_module()
class NoConnector(nn.Identity):
    """A side that enters the loss as captured (``connector=dict(type='NoConnector')``)."""


@cache
def register_builtin_parts() -> None:
    import bevdistill.losses as losses

    for module in pkgutil.iter_modules(losses.__path__):
        if not module.name.startswith("_"):
            import_module(f"bevdistill.losses.{module.name}")
    import_module("bevdistill.projection")  # ProjectionMLP, SpatialProjector
