# The student trained with the frozen, shipped teacher (bevdistill distill distill).
# Same data and budget as train_student.py, so the two runs compare directly.
# Another teacher: --cfg-options model.teacher_ckpt=work_dirs/train_teacher/iter_3000.pth
_base_ = ["../student.py", "./_base_/bev_world.py"]

role = "distill"
custom_imports = dict(imports=["bevdistill.distiller"], allow_failed_imports=False)  # Distiller
model = dict(
    _delete_=True,
    type="Distiller",
    teacher="{{fileDirname}}/../teacher.py",
    student={{_base_.model}},
    teacher_ckpt="{{fileDirname}}/../../assets/teacher.pth",
    # The recipe, one term per kind of knowledge (bevdistill.losses.terms). Layers: the neck (the
    # map the head reads) and the last backbone scale, both on the same grids in teacher and
    # student, a few thousand cells; the 256 x 256 pillar map of pts_middle_encoder is left out:
    # it is where most of the cost was and is close to the raw points anyway. Weights from the
    # gradient norms at the start of distillation (see benchmarks/_distill_options.py): heatmap
    # KD needs a larger weight than the tutorial's 0.5 to weigh anything next to the detection
    # losses. Projectors 128 wide: their matrix products were most of what a step cost on top of
    # the two models (step_overhead). Change one with --cfg-options model.terms.<i>.weight=...
    terms=[
        # 0: InfoNCE over 256 cells at the same world places, each side projected to 64
        dict(name="crd", loss=dict(type="CellInfoNCE", temperature=0.07), reads="cells",
             cells=dict(num_samples=256), mask=True, layers=["pts_backbone", "pts_neck"],
             connector=dict(type="SpatialProjector", hidden_dim=128, out_dim=64), weight=1.0),
        # 1: attention transfer (L2-normalised spatial attention maps)
        dict(name="at", loss=dict(type="AttentionTransferLoss", normalization="l2"), mask=True,
             layers=["pts_backbone", "pts_neck"], weight=1.0),
        # 2: FitNets-style feature MSE through a 1x1 adapter: off here, on in some benchmarks
        dict(name="mse", loss=dict(type="FeatureMSELoss"), mask=True,
             layers=["pts_backbone", "pts_neck"], weight=0.0),
        # 3: response KD on the class heatmaps (binary KL per class and cell)
        dict(name="kd", loss=dict(type="HeatmapDistillationLoss", temperature=1.0),
             reads="heatmaps", layers=["heatmap"], weight=5.0),
    ],
)
train_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
val_dataset = dict(point_cloud_range={{_base_.point_cloud_range}})
