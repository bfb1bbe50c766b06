# CenterPoint pillar teacher -> narrower, coarser CenterPoint pillar student, on a reduced grid
# that trains on a laptop CPU. Both are ordinary mmdet3d `CenterPoint` models; only the wrapper
# (`BEVDistiller`) comes from bevdistill.
#
#   bevdistill train bevdistill/configs/mmdet3d/centerpoint_pillar_cpu.py \
#       --cfg-options model.teacher_ckpt=TEACHER.pth
#
# Data: nuScenes in the mmdet3d 1.x info format, read by mmdet3d's NuScenesDataset; by default
# the one real frame beside this project (see data_root below).
# Single sweeps, 4 point features (x, y, z, intensity): no sweep files are needed.
default_scope = "mmdet3d"
custom_imports = dict(imports=["bevdistill.mmdet3d.distiller"], allow_failed_imports=False)

point_cloud_range = [-25.6, -25.6, -5.0, 25.6, 25.6, 3.0]
class_names = [
    "car", "truck", "construction_vehicle", "bus", "trailer", "barrier",
    "motorcycle", "bicycle", "pedestrian", "traffic_cone",
]
tasks = [
    dict(num_class=1, class_names=["car"]),
    dict(num_class=2, class_names=["truck", "construction_vehicle"]),
    dict(num_class=2, class_names=["bus", "trailer"]),
    dict(num_class=1, class_names=["barrier"]),
    dict(num_class=2, class_names=["motorcycle", "bicycle"]),
    dict(num_class=2, class_names=["pedestrian", "traffic_cone"]),
]
out_size_factor = 4


def centerpoint_pillar(pillar, channels, layer_nums, neck):
    """A CenterPoint pillar model on `point_cloud_range`; `pillar` in metres (square pillars)."""
    voxel_size = [pillar, pillar, 8.0]
    grid = round((point_cloud_range[3] - point_cloud_range[0]) / pillar)
    return dict(
        type="CenterPoint",
        data_preprocessor=dict(
            type="Det3DDataPreprocessor",
            voxel=True,
            voxel_layer=dict(max_num_points=20, voxel_size=voxel_size,
                             point_cloud_range=point_cloud_range, max_voxels=(16000, 20000))),
        pts_voxel_encoder=dict(
            type="PillarFeatureNet", in_channels=4, feat_channels=[channels[0]],
            with_distance=False, voxel_size=voxel_size, point_cloud_range=point_cloud_range,
            norm_cfg=dict(type="BN1d", eps=1e-3, momentum=0.01), legacy=False),
        pts_middle_encoder=dict(
            type="PointPillarsScatter", in_channels=channels[0], output_shape=(grid, grid)),
        pts_backbone=dict(
            type="SECOND", in_channels=channels[0], out_channels=channels,
            layer_nums=layer_nums, layer_strides=[2, 2, 2],
            norm_cfg=dict(type="BN", eps=1e-3, momentum=0.01),
            conv_cfg=dict(type="Conv2d", bias=False)),
        pts_neck=dict(
            type="SECONDFPN", in_channels=channels, out_channels=[neck] * 3,
            upsample_strides=[0.5, 1, 2], norm_cfg=dict(type="BN", eps=1e-3, momentum=0.01),
            upsample_cfg=dict(type="deconv", bias=False), use_conv_for_no_stride=True),
        pts_bbox_head=dict(
            type="CenterHead", in_channels=3 * neck, tasks=tasks,
            common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
            share_conv_channel=neck,
            bbox_coder=dict(
                type="CenterPointBBoxCoder", pc_range=point_cloud_range[:2],
                post_center_range=[-30.0, -30.0, -10.0, 30.0, 30.0, 10.0], max_num=200,
                score_threshold=0.1, out_size_factor=out_size_factor,
                voxel_size=voxel_size[:2], code_size=9),
            separate_head=dict(type="SeparateHead", init_bias=-2.19, final_kernel=3),
            loss_cls=dict(type="mmdet.GaussianFocalLoss", reduction="mean"),
            loss_bbox=dict(type="mmdet.L1Loss", reduction="mean", loss_weight=0.25),
            norm_bbox=True),
        train_cfg=dict(pts=dict(
            grid_size=[grid, grid, 1], voxel_size=voxel_size, out_size_factor=out_size_factor,
            point_cloud_range=point_cloud_range, dense_reg=1, gaussian_overlap=0.1,
            max_objs=200, min_radius=2,
            code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2])),
        test_cfg=dict(pts=dict(
            post_center_limit_range=[-30.0, -30.0, -10.0, 30.0, 30.0, 10.0],
            max_per_img=200, max_pool_nms=False, min_radius=[4, 12, 10, 1, 0.85, 0.175],
            score_threshold=0.1, pc_range=point_cloud_range[:2],
            out_size_factor=out_size_factor, voxel_size=voxel_size[:2], nms_type="rotate",
            pre_max_size=500, post_max_size=83, nms_thr=0.2)),
    )


# Teacher: 0.2 m pillars (256 x 256), wider and deeper; student: 0.4 m pillars (128 x 128),
# a quarter of the channels, shallower. Grids and channels differ on purpose: the losses
# align them (world-aligned resizing, projectors whose sizes come from a dry forward).
teacher_model = centerpoint_pillar(0.2, [32, 64, 128], [3, 5, 5], 64)
student_model = centerpoint_pillar(0.4, [16, 32, 64], [1, 2, 2], 32)

LAYERS = ["pts_middle_encoder", "pts_backbone", "pts_neck"]
model = dict(
    type="BEVDistiller",
    teacher=teacher_model,
    teacher_ckpt=None,  # set to the trained teacher's checkpoint (None: untrained, tests only)
    student=student_model,
    driver=dict(type="mmdet3d", select={"pts_backbone": -1}),
    terms=[
        dict(name="crd", loss=dict(type="CellInfoNCE", temperature=0.07), reads="cells",
             cells=dict(num_samples=256), mask=True, layers=LAYERS,
             connector=dict(type="SpatialProjector", hidden_dim=256, out_dim=64), weight=1.0),
        dict(name="at", loss=dict(type="AttentionTransferLoss"), mask=True, layers=LAYERS,
             weight=2.0),
        # the heads' class heatmaps, wherever the mmdet3d driver finds them
        dict(name="kd", loss=dict(type="HeatmapDistillationLoss"), reads="heatmaps", weight=5.0),
    ],
)

# --- data: mmdet3d's own NuScenesDataset and transforms ------------------------------------
dataset_type = "NuScenesDataset"
# (the real demo frame: $BEVDISTILL_NUSCENES_DEMO, else the copy a clone of the repository ships
# in book/data/nuscenes_frame; for your own data: --cfg-options
# train_dataloader.dataset.data_root=... .ann_file=...)
data_root = "{{$BEVDISTILL_NUSCENES_DEMO:{{ fileDirname }}/../../../book/data/nuscenes_frame}}"
ann_file = "nuscenes_demo_infos.pkl"
data_prefix = dict(pts="samples", img="samples", sweeps="sweeps")
metainfo = dict(classes=class_names)
input_modality = dict(use_lidar=True, use_camera=False)
load_points = dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=[0, 1, 2, 3])
train_pipeline = [
    load_points,
    dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True),
    dict(type="GlobalRotScaleTrans", rot_range=[-0.3925, 0.3925],
         scale_ratio_range=[0.95, 1.05], translation_std=[0, 0, 0]),
    dict(type="RandomFlip3D", flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.5),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectNameFilter", classes=class_names),
    dict(type="PointShuffle"),
    dict(type="Pack3DDetInputs", keys=["points", "gt_bboxes_3d", "gt_labels_3d"]),
]
test_pipeline = [
    load_points,
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="Pack3DDetInputs", keys=["points"]),
]
dataset = dict(
    type=dataset_type, data_root=data_root, ann_file=ann_file, data_prefix=data_prefix,
    metainfo=metainfo, modality=input_modality, box_type_3d="LiDAR", use_valid_flag=True,
    backend_args=None,
)
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(dataset, pipeline=train_pipeline, test_mode=False),
)
# No validation loop: mmdet3d's NuScenesMetric needs the nuScenes database tables, which the demo
# frame lacks. The exported student's config gets a test_dataloader built from this dataset, for
# mmdet3d.apis.inference_detector (add val_dataloader/val_evaluator for your full data set).
test_dataset = dict(dataset, pipeline=test_pipeline, test_mode=True)

# --- schedule and runtime -------------------------------------------------------------------
train_cfg = dict(type="IterBasedTrainLoop", max_iters=200, val_interval=10**9)
optim_wrapper = dict(
    type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=20, end=200, eta_min_ratio=0.01),
]
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=50, by_epoch=False, max_keep_ckpts=2),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"),
               dist_cfg=dict(backend="nccl"))
log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
