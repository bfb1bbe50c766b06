"""Time a preset's train step and no-grad forward, with per-part output shapes and parameter counts.

    OMP_NUM_THREADS=1 python -m bevdistill.models.timing teacher student --batch 4 --threads 1

Uses :mod:`bevdistill.models.toy_scene` scans (about 28k points each, nuScenes-sized), so
the figures do not depend on the data generator. Prints one JSON object per preset, with
medians of wall-clock time and of this process's CPU time: on a shared machine the CPU time
is the steadier figure, since waiting for a core does not count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bevdistill.models.build import PRESETS, build_detector
from bevdistill.models.toy_scene import toy_batch


def _median_time(fn, repeats: int) -> dict[str, float]:
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": round(statistics.median(wall), 4), "cpu_s": round(statistics.median(cpu), 4)}


def layer_shapes(model, inputs: dict) -> dict[str, object]:
    """Output shape of each BEVFusion-named part for ``inputs``."""
    with torch.no_grad():
        points = model._points(inputs)
        voxels, num_points, coors = model.pts_voxel_layer(points)
        pillars = model.pts_voxel_encoder(voxels, num_points, coors)
        bev = model.pts_middle_encoder(pillars, coors, len(points))
        scales = model.pts_backbone(bev)
        neck = model.pts_neck(scales)
        head = model.bbox_head(neck[0])
    return {
        "pts_voxel_layer": [list(voxels.shape), list(num_points.shape), list(coors.shape)],
        "pts_voxel_encoder": list(pillars.shape),
        "pts_middle_encoder": list(bev.shape),
        "pts_backbone": ["tuple", *[list(s.shape) for s in scales]],
        "pts_neck": ["list", *[list(n.shape) for n in neck]],
        "bbox_head": {k: list(v.shape) for k, v in head.items()},
    }


def time_preset(name: str, batch: int, repeats: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_detector(name)
    inputs, samples = toy_batch(batch, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step():
        losses = model(inputs, samples, mode="loss")
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    def forward():
        with torch.no_grad():
            model(inputs, mode="tensor")

    model.train()
    train_step()  # warm-up (allocator, oneDNN kernels)
    train = _median_time(train_step, repeats)
    model.eval()
    forward()
    fwd = _median_time(forward, repeats)
    return {
        "preset": name,
        "batch": batch,
        "points_per_scan": [int(p.shape[0]) for p in inputs["points"]],
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "pillar_grid_hw": list(model.grid.bev_shape),
        "pillar_size_m": list(model.grid.voxel_size[:2]),
        "head_grid_hw": list(model.bbox_head.feature_shape),
        "out_size_factor": model.out_size_factor,
        "train_step": train,
        "eval_forward_no_grad": fwd,
        "shapes": layer_shapes(model, inputs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="*", default=["teacher", "student"], choices=PRESETS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.presets:
        print(json.dumps(time_preset(name, args.batch, args.repeats)))


if __name__ == "__main__":
    main()
