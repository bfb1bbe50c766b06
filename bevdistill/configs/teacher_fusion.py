# Fusion teacher preset: the teacher preset's LiDAR branch, BEV backbone, neck and head (same
# widths), plus BEVFusion's camera branch on six 96 x 48 renders: a small ResNet (strides 4, 8)
# and FPN (48 channels at stride 4, i.e. 24 x 12 feature pixels a camera), a lift-splat-shoot
# view transform (44 one-metre depth bins from 1 m, splatted on 0.5 m cells, 32 channels,
# upsampled to the 0.25 m pillar grid) and a ConvFuser back to the LiDAR map's 48 channels.
# The fuser is 1 x 1, not BEVFusion's 3 x 3: on the 256 x 256 pillar grid a 3 x 3 fuser costs
# more than the whole teacher on a CPU (benchmarks.fusion_speed), and the camera map is already
# smoothed by view_transform's 3 x 3 conv at 0.5 m. Leave out the four camera modules and it is
# the teacher preset, module for module.
_base_ = ["./teacher.py"]
custom_imports = dict(imports=["bevdistill.models.fusion"], allow_failed_imports=False)

model = dict(
    type="BEVFusionDetector",
    img_backbone=dict(type="ImageResNet", stem_channels=16, out_channels=[32, 64], blocks=1),
    img_neck=dict(type="ImageFPN", out_channels=48),
    view_transform=dict(type="LSSViewTransform", out_channels=32, depth_bins=[1.0, 45.0, 1.0],
                        splat_stride=2),
    fusion_layer=dict(type="ConvFuser", kernel_size=1),
)
