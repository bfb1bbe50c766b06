# A tiny fusion teacher for tests and CI: train_teacher_ci's LiDAR model plus a small camera
# branch on 64 x 30 renders, a few iterations.
_base_ = ["./train_teacher_fusion.py"]

point_cloud_range = [-16.0, -16.0, -5.0, 16.0, 16.0, 3.0]
# The whole model is written out (_delete_) so that CI does not depend on the presets' widths.
model = dict(
    _delete_=True,
    type="BEVFusionDetector",
    point_cloud_range=point_cloud_range,
    voxel_size=[0.5, 0.5, 8.0],
    pts_voxel_layer=dict(max_points_per_pillar=16, max_pillars=(4000, 4000)),
    pts_voxel_encoder=dict(type="PillarFeatureNet", feat_channels=[16]),
    pts_middle_encoder=dict(type="PointPillarsScatter"),
    pts_backbone=dict(type="SECOND", out_channels=[16, 32], layer_nums=[1, 1], layer_strides=[2, 2]),
    pts_neck=dict(type="SECONDFPN", out_channels=[16, 16], upsample_strides=[1, 2]),
    bbox_head=dict(type="CenterPointHead", shared_channels=16, head_channels=16,
                   num_head_convs=0),
    img_backbone=dict(type="ImageResNet", stem_channels=8, out_channels=[16, 16], blocks=0),
    img_neck=dict(type="ImageFPN", out_channels=16),
    view_transform=dict(type="LSSViewTransform", out_channels=8, depth_bins=[1.0, 25.0, 2.0],
                        splat_stride=2),
    fusion_layer=dict(type="ConvFuser", kernel_size=1),
)
train_dataset = dict(num_samples=16, point_cloud_range=point_cloud_range,
                     cameras=dict(_delete_=True, width=64, height=30))
val_dataset = dict(num_samples=4, point_cloud_range=point_cloud_range,
                   cameras=dict(_delete_=True, width=64, height=30))
data = dict(batch_size=2, val_batch_size=2, num_workers=0)
schedule = dict(max_iters=6, warmup_iters=2, val_interval=None, checkpoint_interval=2,
                log_interval=2, lr=5e-3)
