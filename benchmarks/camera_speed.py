"""How fast do the synthetic world's six cameras render, against the LiDAR scan of the same scene?

Per scene, in one process on one core: scene generation, one 32-beam LiDAR scan, and the six
camera renders (the same ray caster's narrow phase; the cameras' own broad phase and shading),
each timed separately on the same scenes. Target: at least 10 scenes/s on one core for the
renders; a dataset built with ``cameras=True`` and a ``cache_dir`` renders each scene once.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.camera_speed [--scenes 40] [--width 96 --height 48]

Prints the figures and writes benchmarks/results/camera_speed.json (or ``--out``). CPU-time
figures (process time of this single-threaded process) are the single-core cost; wall-clock
figures suffer when other jobs share the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch start their thread pools

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.provenance import RESULTS_DIR, provenance  # noqa: E402
from bevdistill.data import CameraRig, LidarSimulator  # noqa: E402
from bevdistill.data.scene import generate_scene, scene_rng  # noqa: E402
from bevdistill.engine.report import write_json  # noqa: E402

TARGET_SCENES_PER_S = 10.0
SEED = 123  # a world no test uses
MODULE = "benchmarks.camera_speed"


def _cpu(fn) -> tuple[float, object]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def time_renders(n: int, width: int, height: int) -> dict:
    """CPU seconds per stage over ``n`` scenes, plus wall-clock rates of the renders."""
    sim, rig = LidarSimulator(), CameraRig(dict(width=width, height=height))
    for i in range(2):  # warm-up
        scene = generate_scene(SEED, 10_000 + i)
        sim.scan(scene, scene_rng(SEED, 10_000 + i, 1))
        rig.render(scene)
    cpu = {"generate_scene": 0.0, "lidar_scan": 0.0, "camera_render": 0.0}
    wall_render = 0.0
    for i in range(n):
        dt, scene = _cpu(lambda i=i: generate_scene(SEED, i))
        cpu["generate_scene"] += dt
        cpu["lidar_scan"] += _cpu(lambda scene=scene, i=i: sim.scan(scene, scene_rng(SEED, i, 1)))[0]
        w0 = time.perf_counter()
        cpu["camera_render"] += _cpu(lambda scene=scene: rig.render(scene))[0]
        wall_render += time.perf_counter() - w0
    rays = {"lidar": sim.config.n_rings * sim.config.n_azimuth,
            "cameras": len(rig.names) * width * height}
    return {
        "scenes": n,
        "image_size": [width, height],
        "rays_per_scene": rays,
        "ms_per_scene_cpu": {k: 1e3 * v / n for k, v in cpu.items()},
        "render_scenes_per_s_cpu": n / cpu["camera_render"],
        "render_scenes_per_s_wall": n / wall_render,
        "render_over_scan_cpu": cpu["camera_render"] / cpu["lidar_scan"],
        "render_over_scan_per_ray_cpu": (cpu["camera_render"] / rays["cameras"])
                                        / (cpu["lidar_scan"] / rays["lidar"]),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40, help="scenes to time")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--sizes", action="store_true",
                        help="also time 64 x 30 and 128 x 64 (the size choice)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "camera_speed.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    main_row = time_renders(args.scenes, args.width, args.height)
    rows = [main_row]
    if args.sizes:
        rows += [time_renders(max(args.scenes // 2, 1), w, h) for w, h in ((64, 30), (128, 64))]
    record = provenance(MODULE, argv)
    out = {
        **record,
        "machine": {**record["machine"], "numpy": np.__version__,
                    "load_average_1min": {"before": load_before[0],
                                          "after": os.getloadavg()[0]}},
        "target_scenes_per_s": TARGET_SCENES_PER_S,
        "default": main_row,
        "sizes": rows,
        "meets_target": main_row["render_scenes_per_s_cpu"] >= TARGET_SCENES_PER_S,
    }
    for row in rows:
        ms = row["ms_per_scene_cpu"]
        print(f"{row['image_size'][0]}x{row['image_size'][1]}: six cameras "
              f"{ms['camera_render']:.1f} ms/scene ({row['render_scenes_per_s_cpu']:.1f} scenes/s "
              f"CPU, {row['render_scenes_per_s_wall']:.1f} wall), LiDAR scan "
              f"{ms['lidar_scan']:.1f} ms, scene {ms['generate_scene']:.1f} ms; render/scan "
              f"{row['render_over_scan_cpu']:.2f}x ({row['render_over_scan_per_ray_cpu']:.2f}x "
              f"per ray); target {TARGET_SCENES_PER_S:.0f} scenes/s")
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
