"""``BEVDistiller``: the core :class:`~bevdistill.Distiller` handed the mmdet3d driver.

Registered in mmdet3d's ``MODELS``, so an mmdet3d config declares it like any model::

    custom_imports = dict(imports=['bevdistill.mmdet3d.distiller'], allow_failed_imports=False)
    model = dict(type='BEVDistiller', teacher=..., student=..., teacher_ckpt=..., terms=[...])

How mmdet3d models are built, preprocess, run and expose their heatmaps is the driver's
(:mod:`bevdistill.drivers.mmdet3d`); everything else (terms, hooks, the frozen teacher, export)
is the core's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bevdistill.distiller import Distiller
from bevdistill.drivers.mmdet3d import (  # noqa: F401 (the helpers' former home: re-exported)
    build_mmdet3d_model,
    head_name,
    mmdet3d_model_config,
    run_head,
)


def _register(cls: type) -> type:
    from mmdet3d.registry import MODELS

    MODELS.register_module(module=cls)
    return cls


@_register
class BEVDistiller(Distiller):
    """A frozen mmdet3d teacher distilling into an mmdet3d student: the Distiller with
    ``driver='mmdet3d'`` (a ``driver`` dict without ``type`` gets it)."""

    def __init__(self, teacher: Any, student: Any, teacher_ckpt: Any = None,
                 terms: Any = None, *, driver: Any = "mmdet3d", **kwargs: Any):
        if isinstance(driver, Mapping) and "type" not in driver:
            driver = {"type": "mmdet3d", **driver}
        super().__init__(teacher, student, teacher_ckpt, terms, driver=driver, **kwargs)
