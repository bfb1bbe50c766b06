# Student preset: 0.5 m pillars over the teacher's 64 m x 64 m (a 128 x 128 pillar grid),
# 32 pillar channels, a two-scale SECOND (32/64 channels at strides 2/4) and a SECONDFPN of
# 64 channels at stride 2: the heatmap has the teacher's 64 x 64 cells of 1 m. The pillar and
# backbone grids and the channels of every distilled layer differ from the teacher's.
custom_imports = dict(imports=["bevdistill.models.detector"], allow_failed_imports=False)

point_cloud_range = [-32.0, -32.0, -5.0, 32.0, 32.0, 3.0]
voxel_size = [0.5, 0.5, 8.0]

model = dict(
    type="PillarBEVDetector",
    point_cloud_range=point_cloud_range,
    voxel_size=voxel_size,
    pts_voxel_layer=dict(max_points_per_pillar=20, max_pillars=(12000, 16000)),
    pts_voxel_encoder=dict(type="PillarFeatureNet", feat_channels=[32]),
    pts_middle_encoder=dict(type="PointPillarsScatter"),
    pts_backbone=dict(type="SECOND", out_channels=[32, 64], layer_nums=[1, 2], layer_strides=[2, 2]),
    pts_neck=dict(type="SECONDFPN", out_channels=[32, 32], upsample_strides=[1, 2]),
    bbox_head=dict(
        type="CenterPointHead",
        shared_channels=32,
        num_head_convs=0,
        train_cfg=dict(gaussian_overlap=0.1, min_radius=2),
        test_cfg=dict(max_num=100, score_threshold=0.1, peak_kernel=3, nms_type="circle",
                      nms_radius=[2.0, 0.5, 0.75], post_max_size=83),
    ),
)
