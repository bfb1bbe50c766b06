"""bevdistill: knowledge distillation for BEVFusion-style BEV 3D detectors.

Names are resolved lazily, so ``import bevdistill`` stays cheap and each step's module is
imported only when used: ``from bevdistill import ContrastiveLoss``.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    # step 1: feature capture
    "FeatureRecorder": "bevdistill.capture",
    "BEVFusionDistillationWrapper": "bevdistill.capture",
    "HookPointError": "bevdistill.capture",
    # step 2: projection
    "ProjectionMLP": "bevdistill.projection",
    "SpatialProjector": "bevdistill.projection",
    # step 3: contrastive
    "ContrastiveLoss": "bevdistill.losses.contrastive",
    "SpatialContrastiveLoss": "bevdistill.losses.contrastive",
    "MemoryBankContrastiveLoss": "bevdistill.losses.contrastive",
    # step 4: attention transfer
    "AttentionTransferLoss": "bevdistill.losses.attention",
    "FeatureMSELoss": "bevdistill.losses.feature",
    "attention_map": "bevdistill.losses.attention",
    # response distillation (the tutorial's alpha_kd)
    "HeatmapDistillationLoss": "bevdistill.losses.response",
    # step 5: combined
    "BEVFusionDistillationLoss": "bevdistill.losses.combined",
    # step 6: build
    "Distiller": "bevdistill.distiller",
    "build_bevfusion_distillation": "bevdistill.distiller",
    # BEV grid helpers
    "resize_bev": "bevdistill.bev_grid",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bevdistill' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
