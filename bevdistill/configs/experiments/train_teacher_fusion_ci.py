# A tiny fusion teacher for tests and CI: train_teacher_ci's LiDAR model and schedule plus a small
# camera branch on 64 x 30 renders (train_teacher_fusion is the same change to train_teacher).
_base_ = ["./train_teacher_ci.py"]
custom_imports = dict(imports=["bevdistill.models.fusion"], allow_failed_imports=False)

model = dict(
    type="BEVFusionDetector",
    img_backbone=dict(type="ImageResNet", stem_channels=8, out_channels=[16, 16], blocks=0),
    img_neck=dict(type="ImageFPN", out_channels=16),
    view_transform=dict(type="LSSViewTransform", out_channels=8, depth_bins=[1.0, 25.0, 2.0],
                        splat_stride=2),
    fusion_layer=dict(type="ConvFuser", kernel_size=1),
)
train_dataset = dict(cameras=dict(width=64, height=30))
val_dataset = dict(cameras=dict(width=64, height=30))
