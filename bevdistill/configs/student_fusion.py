# Student-sized fusion preset: the student preset's LiDAR branch, BEV backbone, neck and head,
# plus the fusion teacher's camera branch (six 96 x 48 renders, a small ResNet and FPN, a
# lift-splat-shoot view transform splatted straight onto the student's 0.5 m pillar grid) and a
# 1 x 1 ConvFuser back to the LiDAR map's 32 channels. Leave out the four camera modules and it
# is the student preset, module for module: the fusion-vs-LiDAR comparison a CPU can train.
_base_ = ["./student.py"]
custom_imports = dict(imports=["bevdistill.models.fusion"], allow_failed_imports=False)

model = dict(
    type="BEVFusionDetector",
    img_backbone=dict(type="ImageResNet", stem_channels=16, out_channels=[32, 64], blocks=1),
    img_neck=dict(type="ImageFPN", out_channels=48),
    view_transform=dict(type="LSSViewTransform", out_channels=32, depth_bins=[1.0, 45.0, 1.0],
                        splat_stride=1),
    fusion_layer=dict(type="ConvFuser", kernel_size=1),
)
