"""What does the camera branch cost? The fusion teacher against its LiDAR-only twin.

``teacher_fusion`` and ``teacher`` share the LiDAR branch, BEV backbone, neck and head; the
fusion model adds img_backbone, img_neck, view_transform and fusion_layer. Both run on the same
batch of the synthetic world (six 96 x 48 renders + the 32-beam scan per scene), timed in the
same process, alternating: the forward in eval mode (no_grad) and a training step (loss,
backward, SGD step). Medians over ``--repeats`` and the ratio fusion / LiDAR-only; plus where
the fusion forward spends its time, module by module.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fusion_speed            # CPU, batch 2
    .venv/bin/python -m benchmarks.fusion_speed --device cuda --batch-size 4 --out ...  # a GPU

Writes benchmarks/results/fusion_speed.json (or ``--out``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch start their thread pools

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.provenance import RESULTS_DIR, provenance  # noqa: E402
from bevdistill.data import SyntheticBEVDataset, bev_collate  # noqa: E402
from bevdistill.engine.report import write_json  # noqa: E402
from bevdistill.models import build_detector  # noqa: E402
from bevdistill.models.build import model_config  # noqa: E402
from bevdistill.models.fusion import CAMERA_MODULES  # noqa: E402

MODULE = "benchmarks.fusion_speed"
SEED = 123  # a world no test uses
PARTS = (*CAMERA_MODULES, "pts_voxel_encoder", "pts_middle_encoder", "pts_backbone", "pts_neck",
         "bbox_head")


def _batch(model, batch_size: int) -> dict:
    """A batch of the synthetic world with cameras, on the model's device."""
    pcr = model.grid.point_cloud_range
    ds = SyntheticBEVDataset("val", num_samples=batch_size, seed=SEED, point_cloud_range=pcr,
                             cameras=True)
    return model.data_preprocessor(bev_collate([ds[i] for i in range(batch_size)]), training=False)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _forward(model, batch, device) -> float:
    model.eval()
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        model(batch["inputs"], mode="tensor")
    _sync(device)
    return time.perf_counter() - t0


def _train_step(model, opt, batch, device) -> float:
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    losses = model(batch["inputs"], batch["data_samples"], mode="loss")
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _module_times(model, batch, device, repeats: int) -> dict[str, float]:
    """Median milliseconds per top-level module in the eval forward (forward hooks)."""
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    handles = []
    for name in PARTS:
        module = getattr(model, name, None)
        if module is None:
            continue

        def pre(_m, _a, name=name):
            _sync(device)
            times[name].append(-time.perf_counter())

        def post(_m, _a, _o, name=name):
            _sync(device)
            times[name][-1] += time.perf_counter()
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    for _ in range(repeats):
        _forward(model, batch, device)
    for h in handles:
        h.remove()
    return {k: 1e3 * statistics.median(v) for k, v in times.items() if v}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fusion", default="teacher_fusion", help="fusion preset or config")
    parser.add_argument("--lidar", default="teacher", help="LiDAR-only preset or config")
    parser.add_argument("--fuser-kernels", type=int, nargs="*", default=[],
                        help="also time the fusion model with these fusion_layer kernel sizes "
                             "(e.g. 3, BEVFusion's, against the preset's 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "fusion_speed.json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    if args.device == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {"fusion": build_detector(args.fusion).to(args.device),
              "lidar_only": build_detector(args.lidar).to(args.device)}
    for k in args.fuser_kernels:
        cfg = model_config(args.fusion)
        cfg["fusion_layer"] = dict(cfg["fusion_layer"], kernel_size=k)
        models[f"fusion_fuser_{k}x{k}"] = build_detector(cfg).to(args.device)
    batch = _batch(models["fusion"], args.batch_size)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4) for k, m in models.items()}
    times = {k: {"forward_s": [], "train_step_s": []} for k in models}
    for i in range(args.warmup + args.repeats):
        for name, model in models.items():  # alternating: load changes hit both alike
            fwd = _forward(model, batch, args.device)
            step = _train_step(model, opts[name], batch, args.device)
            if i >= args.warmup:
                times[name]["forward_s"].append(fwd)
                times[name]["train_step_s"].append(step)
    rows = {name: {key: statistics.median(v) for key, v in t.items()} for name, t in times.items()}
    for name, model in models.items():
        rows[name]["parameters"] = sum(p.numel() for p in model.parameters())
    record = provenance(MODULE, argv)
    out = {
        **record,
        "device": args.device,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "presets": {"fusion": args.fusion, "lidar_only": args.lidar},
        "weights": "random (timing does not depend on the values)",
        "models": rows,
        "ratio_forward": rows["fusion"]["forward_s"] / rows["lidar_only"]["forward_s"],
        "ratio_train_step": rows["fusion"]["train_step_s"] / rows["lidar_only"]["train_step_s"],
        "ratios_forward_all": {k: r["forward_s"] / rows["lidar_only"]["forward_s"]
                               for k, r in rows.items()},
        "fusion_forward_ms_by_module": _module_times(models["fusion"], batch, args.device,
                                                     max(args.repeats // 2, 2)),
        "times_s": times,
    }
    for name, row in rows.items():
        print(f"{name:18s} forward {1e3 * row['forward_s']:7.1f} ms, train step "
              f"{1e3 * row['train_step_s']:7.1f} ms ({row['parameters']:,} parameters)")
    print(f"fusion / LiDAR-only: forward {out['ratio_forward']:.2f}x, train step "
          f"{out['ratio_train_step']:.2f}x (batch {args.batch_size}, {args.device})")
    print("fusion forward by module (ms):",
          {k: round(v, 1) for k, v in out["fusion_forward_ms_by_module"].items()})
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
