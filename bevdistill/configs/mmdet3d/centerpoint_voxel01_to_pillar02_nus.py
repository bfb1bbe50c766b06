# CenterPoint voxel 0.1 m (sparse-conv teacher) -> CenterPoint pillar 0.2 m (student), nuScenes.
# A GPU job: the teacher's sparse convolutions need mmcv built with CUDA ops (book: Set-up).
#
#   torchrun --nproc_per_node=8 -m bevdistill train \
#       bevdistill/configs/mmdet3d/centerpoint_voxel01_to_pillar02_nus.py --launcher pytorch \
#       --cfg-options model.teacher_ckpt=checkpoints/centerpoint_voxel01_nus.pth
#
# Everything but the model comes from mmdet3d's own pillar 0.2 config (nuScenes data with 10
# sweeps, NuScenesMetric, cyclic schedule, runtime): the student trains exactly as it would
# alone. Data in mmdet3d's layout under data/nuscenes (tools/create_data.py nuscenes).
_base_ = ["mmdet3d::centerpoint/centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py"]
custom_imports = dict(imports=["bevdistill.mmdet3d.distiller"], allow_failed_imports=False)
default_scope = "mmdet3d"

LAYERS = ["pts_middle_encoder", "pts_backbone", "pts_neck"]
model = dict(
    _delete_=True,
    type="BEVDistiller",
    # mmdet3d's voxel 0.1 CenterPoint config, read from the installed mmdet3d package
    teacher="mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py",
    teacher_ckpt=None,  # the trained teacher's weights: set with --cfg-options
    student={{_base_.model}},
    # Both BEV maps are 128 x 128 at the neck (strides 8 and 4 of 0.1 m and 0.2 m cells):
    # teacher neck 512 channels, student 384; the projectors' sizes come from a dry forward.
    driver=dict(type="mmdet3d", select={"pts_backbone": -1}),
    # kd reads the six task heatmaps (pts_bbox_head), same classes and order on both sides
    terms=[
        dict(name="crd", loss=dict(type="CellInfoNCE", temperature=0.07), reads="cells",
             cells=dict(num_samples=256), mask=True, layers=LAYERS,
             connector=dict(type="SpatialProjector", hidden_dim=256, out_dim=128), weight=1.0),
        dict(name="at", loss=dict(type="AttentionTransferLoss"), mask=True, layers=LAYERS,
             weight=2.0),
        # the heads' class heatmaps, wherever the mmdet3d driver finds them
        dict(name="kd", loss=dict(type="HeatmapDistillationLoss"), reads="heatmaps", weight=5.0),
    ],
)
