# BEVFusion LiDAR + camera teacher -> LiDAR-only BEVFusion student, nuScenes (GPU only).
#
# BEVFusion lives in mmdetection3d's `projects/BEVFusion`, which is not part of the mmdet3d
# package: point MMDET3D_ROOT at your mmdetection3d checkout (with BEVFusion's ops built,
# `python projects/BEVFusion/setup.py develop`, for your GPU's architecture) and run from it:
#
#   cd $MMDET3D_ROOT && MMDET3D_ROOT=$PWD torchrun --nproc_per_node=8 -m bevdistill train \
#       /path/to/bevdistill/configs/mmdet3d/bevfusion_lc_to_l_nus.py --launcher pytorch \
#       --cfg-options model.teacher_ckpt=checkpoints/bevfusion_lidar-cam.pth
#
# Data, pipelines (points AND images: the teacher sees the cameras), schedule and runtime are
# the lidar-camera config's; the student is the lidar-only config's model. Nothing of
# BEVFusion is copied here: both are read from the checkout, its modules imported by
# custom_imports.
_base_ = [
    "{{$MMDET3D_ROOT:mmdetection3d}}/projects/BEVFusion/configs/"
    "bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-3d.py"
]
custom_imports = dict(
    imports=["projects.BEVFusion.bevfusion", "bevdistill.mmdet3d.distiller"],
    allow_failed_imports=False,
)
default_scope = "mmdet3d"
student_config = (
    "{{$MMDET3D_ROOT:mmdetection3d}}/projects/BEVFusion/configs/"
    "bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-3d.py"
)

LAYERS = ["pts_backbone", "pts_neck"]
model = dict(
    _delete_=True,
    type="BEVDistiller",
    teacher={{_base_.model}},
    teacher_ckpt=None,  # the trained lidar-camera BEVFusion: set with --cfg-options
    student=student_config,
    # Layers both models have. The teacher's backbone and neck come after its fusion layer, so
    # they carry what the cameras added; 180 x 180 BEV on both sides. (A narrower lidar-camera
    # student could add "fusion_layer"; hook points name the same module on both models.)
    # The teacher's camera branch needs real images for the dry forward: one validation sample
    driver=dict(type="mmdet3d", select={"pts_backbone": -1},
                probe=dict(dataset={{_base_.val_dataloader.dataset}})),
    # kd reads TransFusion's class heatmap (bbox_head.heatmap_head), before its query selection
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
