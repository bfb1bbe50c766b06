# BEVFusion-scale preset, for GPU benchmarks: a 180 x 180 BEV grid (0.6 m pillars over
# [-54, 54] m, the size of BEVFusion's nuScenes LiDAR BEV map: 0.075 m voxels x stride 8),
# a 256-channel middle encoder, SECOND [128, 256] and a SECONDFPN of 512 channels as in
# BEVFusion's LiDAR branch. Too slow to train on a CPU.
custom_imports = dict(imports=["bevdistill.models.detector"], allow_failed_imports=False)

point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.6, 0.6, 8.0]

model = dict(
    type="PillarBEVDetector",
    point_cloud_range=point_cloud_range,
    voxel_size=voxel_size,
    pts_voxel_layer=dict(max_points_per_pillar=20, max_pillars=(30000, 40000)),
    pts_voxel_encoder=dict(type="PillarFeatureNet", feat_channels=[64, 256]),
    pts_middle_encoder=dict(type="PointPillarsScatter", in_channels=256),
    pts_backbone=dict(type="SECOND", out_channels=[128, 256], layer_nums=[5, 5], layer_strides=[1, 2]),
    pts_neck=dict(type="SECONDFPN", out_channels=[256, 256], upsample_strides=[1, 2]),
    bbox_head=dict(
        type="CenterPointHead",
        in_channels=512,
        shared_channels=128,
        head_channels=64,
        num_head_convs=1,
        train_cfg=dict(gaussian_overlap=0.1, min_radius=2),
        test_cfg=dict(max_num=200, score_threshold=0.1, peak_kernel=3, nms_type="circle",
                      nms_radius=[2.0, 0.5, 0.75], post_max_size=200),
    ),
)
