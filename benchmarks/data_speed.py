"""How fast does the synthetic LiDAR world generate scans, on one CPU core?

One scan = scene generation + ray casting (32 x 1084 beams) + per-box point counts, i.e.
``simulate_sample``; the dataset line adds augmentation, cropping and tensors (no cache).
Target: at least 10 scans/s on one core. Scans of world version 2 (objects with a front and a
back, more parts each) are timed beside those of world version 1 in the same process, and
their ratio is reported.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.data_speed [--samples 60]

Prints the figures and writes benchmarks/results/data_speed.json. Wall-clock figures suffer
when other jobs share the machine; the CPU-time figures (process time of this single-threaded
process) much less so, and both are reported with the load average.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch start their thread pools

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.provenance import RESULTS_DIR, provenance  # noqa: E402
from bevdistill.data import LidarSimulator, SyntheticBEVDataset, count_points_in_boxes  # noqa: E402
from bevdistill.data.scene import WORLD_VERSION, generate_scene, scene_rng  # noqa: E402
from bevdistill.engine.report import write_json  # noqa: E402

TARGET_SCANS_PER_S = 10.0
SEED = 123  # a world no test uses
MODULE = "benchmarks.data_speed"


def _time_scans(n: int, world_version: int = WORLD_VERSION) -> dict:
    sim = LidarSimulator()
    world = {"world_version": world_version}
    for i in range(3):  # warm-up: imports, caches
        sim.scan(generate_scene(SEED, 10_000 + i, world), scene_rng(SEED, 10_000 + i, 1))
    stages = {"generate_scene": 0.0, "ray_cast": 0.0, "count_points": 0.0}
    points = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        t0 = time.process_time()
        scene = generate_scene(SEED, i, world)
        t1 = time.process_time()
        pts = sim.scan(scene, scene_rng(SEED, i, 1))
        t2 = time.process_time()
        count_points_in_boxes(pts, scene.boxes)
        t3 = time.process_time()
        stages["generate_scene"] += t1 - t0
        stages["ray_cast"] += t2 - t1
        stages["count_points"] += t3 - t2
        points.append(len(pts))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "world_version": world_version,
        "scans": n,
        "scans_per_s_wall": n / wall,
        "scans_per_s_cpu": n / cpu,
        "ms_per_scan_cpu_by_stage": {k: 1e3 * v / n for k, v in stages.items()},
        "mean_points_per_scan": float(np.mean(points)),
    }


def _time_dataset(n: int) -> dict:
    ds = SyntheticBEVDataset("train", num_samples=n, seed=SEED, augment=True, cache=False)
    ds[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        ds[i]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"items": n, "items_per_s_wall": n / wall, "items_per_s_cpu": n / cpu}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="scans to time")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    scans = _time_scans(args.samples)
    old_world = _time_scans(args.samples, world_version=1)
    dataset = _time_dataset(max(args.samples // 2, 1))
    load_after = os.getloadavg()
    record = provenance(MODULE, argv)
    out = {
        **record,
        "machine": {
            **record["machine"],
            "numpy": np.__version__,
            "load_average_1min": {"before": load_before[0], "after": load_after[0]},
            "note": "shared machine: other jobs ran at the same time, so wall-clock rates are "
                    "lower bounds; CPU-time rates are the single-core cost",
        },
        "target_scans_per_s": TARGET_SCANS_PER_S,
        "simulate_sample": scans,
        "simulate_sample_world_1": old_world,
        "world_2_vs_1_cpu_speed": scans["scans_per_s_cpu"] / old_world["scans_per_s_cpu"],
        "dataset_getitem_augmented_uncached": dataset,
        "meets_target": scans["scans_per_s_cpu"] >= TARGET_SCANS_PER_S,
    }
    print(f"scans/s on one core: {scans['scans_per_s_cpu']:.1f} (CPU time), "
          f"{scans['scans_per_s_wall']:.1f} (wall clock, load {load_before[0]:.1f}"
          f"-{load_after[0]:.1f}); target {TARGET_SCANS_PER_S:.0f}")
    print("ms per scan by stage (CPU):",
          {k: round(v, 1) for k, v in scans["ms_per_scan_cpu_by_stage"].items()})
    print(f"world 1 (symmetric objects): {old_world['scans_per_s_cpu']:.1f} scans/s (CPU); world "
          f"{WORLD_VERSION} runs at {out['world_2_vs_1_cpu_speed']:.2f}x its speed; by stage:",
          {k: round(v, 1) for k, v in old_world["ms_per_scan_cpu_by_stage"].items()})
    print(f"dataset items/s (augment, crop, tensors, no cache): "
          f"{dataset['items_per_s_cpu']:.1f} (CPU), {dataset['items_per_s_wall']:.1f} (wall)")
    path = RESULTS_DIR / "data_speed.json"
    write_json(path, out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
