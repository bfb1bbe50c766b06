"""Model drivers: how the :class:`~bevdistill.Distiller` runs one kind of model.

The Distiller knows distillation (the frozen teacher, the hooks, the terms); a driver knows a
model family: how it is built and its teacher loaded, how a batch is preprocessed and fed to
each side (``view_of``), how it computes its losses and predictions, where its class heatmaps
are, and what batch a dry forward can use. Pick one by name, with its settings::

    model = dict(type='Distiller', ..., driver=dict(type='pillar', select={'pts_backbone': -1}))

* ``'pillar'`` (default, :class:`~bevdistill.drivers.pillar.PillarDriver`): the package's own
  BEV detectors and anything with their contract, ``forward(inputs, data_samples, mode)``
  with ``mode`` in ``'tensor' | 'loss' | 'predict'``.
* ``'mmdet3d'`` (:class:`~bevdistill.drivers.mmdet3d.MMDet3DDriver`): mmdet3d detectors, each
  with its own data preprocessor, run through ``extract_feat`` and the head.
* ``'fusion'``: camera + LiDAR models of :mod:`bevdistill.models` keep the pillar contract and
  add ``inputs['imgs']`` and the camera calibration, which ``view_of`` hands to both sides
  unchanged; they use the pillar driver. A fusion model that needs more (a dry-forward batch
  with images, say) subclasses :class:`~bevdistill.drivers.pillar.PillarDriver`, overrides
  only that method, and its class path replaces the entry below.

A driver of your own: subclass ``PillarDriver`` and pass an instance (``driver=MyDriver()``),
or add ``name: 'module:Class'`` to :data:`DRIVERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

DRIVERS = {
    "pillar": "bevdistill.drivers.pillar:PillarDriver",
    "fusion": "bevdistill.drivers.pillar:PillarDriver",  # the slot for a fusion-specific driver
    "mmdet3d": "bevdistill.drivers.mmdet3d:MMDet3DDriver",
}


def make_driver(spec: Any = None, **settings: Any) -> Any:
    """A driver from its name, ``dict(type=name, **settings)`` or an instance (kept as given).

    Drivers are imported when named, so the mmdet3d one loads mmdet3d only when it is used.
    """
    if spec is None or isinstance(spec, str):
        spec = {"type": spec or "pillar"}
    if not isinstance(spec, Mapping):
        if settings:
            raise TypeError(f"driver settings {sorted(settings)} cannot be applied to a driver "
                            f"instance ({type(spec).__name__}); set them on it")
        return spec
    cfg = {**dict(spec), **settings}
    kind = cfg.pop("type", "pillar")
    if kind not in DRIVERS:
        raise ValueError(f"unknown driver {kind!r}; drivers: {sorted(DRIVERS)} (or pass an "
                         "instance of a PillarDriver subclass)")
    module, name = DRIVERS[kind].split(":")
    cls = getattr(import_module(module), name)
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise TypeError(f"driver {kind!r}: {exc}") from exc
