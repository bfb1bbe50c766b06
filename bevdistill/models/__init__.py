"""BEV detectors with BEVFusion's attribute names (LiDAR branch, and the fusion detector's
camera branch and fusion_layer).

Names resolve lazily, so importing ``bevdistill.models.tiny`` does not pull in mmengine;
``build_detector`` (or importing ``bevdistill.models.detector``) registers the pillar
detector and its parts in mmengine's ``MODELS`` registry.
"""

from importlib import import_module

_EXPORTS = {
    "TinyBEVDetector": "bevdistill.models.tiny",
    "random_batch": "bevdistill.models.tiny",
    "PillarBEVDetector": "bevdistill.models.detector",
    "BEVFusionDetector": "bevdistill.models.fusion",
    "ConvFuser": "bevdistill.models.fusion",
    "LSSViewTransform": "bevdistill.models.lss",
    "ImageResNet": "bevdistill.models.image",
    "ImageFPN": "bevdistill.models.image",
    "build_detector": "bevdistill.models.build",
    "preset_path": "bevdistill.models.build",
    "list_presets": "bevdistill.models.build",
    "load_config": "bevdistill.models.build",
    "PRESETS": "bevdistill.models.build",
    "BEVGrid": "bevdistill.models.geometry",
    "PillarVoxelizer": "bevdistill.models.voxelize",
    "PillarFeatureNet": "bevdistill.models.pillar_encoder",
    "PointPillarsScatter": "bevdistill.models.scatter",
    "SECOND": "bevdistill.models.second",
    "SECONDFPN": "bevdistill.models.second",
    "CenterPointHead": "bevdistill.models.centerpoint_head",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bevdistill.models' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
