"""Distil real mmdet3d 1.x models (CenterPoint, BEVFusion) with the same components.

Importing :mod:`bevdistill.mmdet3d.distiller` registers :class:`BEVDistiller` in mmdet3d's
``MODELS`` registry, so an mmdet3d config can declare::

    custom_imports = dict(imports=['bevdistill.mmdet3d.distiller'], allow_failed_imports=False)
    model = dict(type='BEVDistiller', teacher=..., teacher_ckpt=..., student=..., terms=[...])

It needs mmcv 2.1.0, mmdet 3.2 and mmdet3d 1.4.0 (``make mmdet3d``). This package itself imports
without them, so that the CLI can tell an mmdet3d config apart and say how to install them.
"""

from __future__ import annotations

from typing import Any

from bevdistill.drivers.requirements import INSTALL_HINT, require_mmdet3d  # noqa: F401 (re-exported)

_LAZY = {
    "BEVDistiller": "bevdistill.mmdet3d.distiller",
    "build_mmdet3d_model": "bevdistill.mmdet3d.distiller",
    "export_student_checkpoint": "bevdistill.mmdet3d.export",
    "make_mmdet3d_runner": "bevdistill.mmdet3d.train",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bevdistill.mmdet3d' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [*_LAZY, "INSTALL_HINT", "require_mmdet3d"]
