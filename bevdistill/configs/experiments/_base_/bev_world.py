# What every experiment on the synthetic BEV world shares: data, schedule, seed.
# These are bevdistill's high-level experiment keys; bevdistill.engine.runner expands them into
# an mmengine runner config (optimizer, warm-up + cosine schedule, hooks, dataloaders).
# The experiments set the datasets' point_cloud_range from their model preset. The registries
# are filled by bevdistill.engine.runner.register_modules (the presets' custom_imports add the
# detector).
seed = 0
deterministic = False
amp = True  # mixed precision on CUDA only; ignored (fp32) on a CPU

# world_version 2: objects with a front and a back (1: the older symmetric world, on which the
# models shipped with cards that name no world_version were trained; to train on it, pass
# --cfg-options train_dataset.world_version=1 val_dataset.world_version=1).
train_dataset = dict(type="SyntheticBEVDataset", split="train", num_samples=4000, seed=0,
                     augment=True, world_version=2)
val_dataset = dict(type="SyntheticBEVDataset", split="val", num_samples=200, seed=0,
                   augment=False, world_version=2)
val_evaluator = dict(type="BEVDetectionMetric")

data = dict(batch_size=4, val_batch_size=4, num_workers=2)
schedule = dict(
    max_iters=3000,
    lr=2e-3,
    weight_decay=0.01,
    warmup_iters=150,
    min_lr_ratio=0.01,
    grad_clip=10.0,
    val_interval=1000,
    checkpoint_interval=500,
    max_keep_ckpts=2,
    log_interval=50,
)
