"""Distil real mmdet3d 1.x models (CenterPoint, BEVFusion) with the same components.

Importing :mod:`bevdistill.mmdet3d.distiller` registers :class:`BEVDistiller` in mmdet3d's
``MODELS`` registry, so an mmdet3d config can declare::

    custom_imports = dict(imports=['bevdistill.mmdet3d.distiller'], allow_failed_imports=False)
    model = dict(type='BEVDistiller', teacher=..., teacher_ckpt=..., student=..., distill=...)

It needs mmcv 2.1.0, mmdet 3.2 and mmdet3d 1.4.0 (``make mmdet3d``). This package itself imports
without them, so that the CLI can tell an mmdet3d config apart and say how to install them.
"""

from __future__ import annotations

from typing import Any

INSTALL_HINT = (
    "bevdistill.mmdet3d needs mmcv 2.1.0 (with ops), mmdet 3.2 and mmdet3d 1.4.0. Install them "
    "with `make mmdet3d` from the bevdistill repository (it builds and caches the mmcv wheel); "
    "see the book's set-up page for a CUDA build."
)
_LAZY = {
    "BEVDistiller": "bevdistill.mmdet3d.distiller",
    "build_mmdet3d_model": "bevdistill.mmdet3d.distiller",
    "export_student_checkpoint": "bevdistill.mmdet3d.export",
    "make_mmdet3d_runner": "bevdistill.mmdet3d.train",
}


def require_mmdet3d() -> None:
    """Import mmdet3d's models, or raise ImportError saying how to install them."""
    try:
        import mmcv.ops  # noqa: F401  compiled ops: a pure-python mmcv cannot run mmdet3d models
        import mmdet3d.models  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} (import failed: {exc})") from exc


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bevdistill.mmdet3d' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [*_LAZY, "INSTALL_HINT", "require_mmdet3d"]
