# Teacher preset: 0.25 m pillars over 64 m x 64 m around the ego (a 256 x 256 pillar grid),
# 48 pillar channels, a three-scale SECOND (32/64/128 channels at strides 2/4/8) and a
# SECONDFPN of 192 channels at stride 4: the heatmap has 64 x 64 cells of 1 m.
# The detector derives every in_channels and the head's output stride; only widths are set.
custom_imports = dict(imports=["bevdistill.models.detector"], allow_failed_imports=False)

point_cloud_range = [-32.0, -32.0, -5.0, 32.0, 32.0, 3.0]
voxel_size = [0.25, 0.25, 8.0]

model = dict(
    type="PillarBEVDetector",
    point_cloud_range=point_cloud_range,
    voxel_size=voxel_size,
    pts_voxel_layer=dict(max_points_per_pillar=20, max_pillars=(25000, 30000)),
    pts_voxel_encoder=dict(type="PillarFeatureNet", feat_channels=[48]),
    pts_middle_encoder=dict(type="PointPillarsScatter"),
    pts_backbone=dict(
        type="SECOND", out_channels=[32, 64, 128], layer_nums=[1, 2, 2], layer_strides=[2, 2, 2]
    ),
    pts_neck=dict(type="SECONDFPN", out_channels=[64, 64, 64], upsample_strides=[0.5, 1, 2]),
    bbox_head=dict(
        type="CenterPointHead",
        shared_channels=64,
        num_head_convs=0,
        train_cfg=dict(gaussian_overlap=0.1, min_radius=2),
        test_cfg=dict(max_num=100, score_threshold=0.1, peak_kernel=3, nms_type="circle",
                      nms_radius=[2.0, 0.5, 0.75], post_max_size=83),
    ),
)
