"""What does one distillation step cost over what it cannot avoid?

The unavoidable part of a distillation step is a no-grad forward of the teacher plus an
ordinary training step of the student. This measures, in one process and on the same batch:

* ``reference``: ``teacher(batch)`` under ``torch.no_grad`` + student ``loss`` + backward +
  AdamW step (a copy of the distiller's student, so the two never share optimizer state);
* ``distill``: ``Distiller.loss`` + backward + AdamW step (teacher forward, student forward with
  hooks, every distillation term, the projectors' and adapters' updates);

alternating the two (warm-up first, then ``--repeats`` rounds of one step each, the order
flipped every round), and reports per distillation option the median over rounds of
``distill / reference`` within a round, with its interquartile range (goal: at most 1.10 on the
CPU preset with the default config). The ratio of the two medians is kept too; it drifts with
the machine's speed between rounds, the paired ratio does not.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over one step, above what was
allocated before it. On a CPU, torch's allocations are invisible to tracemalloc, so each mode
runs in a fresh subprocess that reports the rise of its peak resident set size
(``ru_maxrss``) over two steps above its resident size before them (a coarse figure: the
allocator keeps freed pages, and page granularity applies).

The teacher keeps its random initial weights: timing and memory do not depend on the values.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.step_overhead            # CPU preset
    .venv/bin/python -m benchmarks.step_overhead --preset bevfusion_scale --device cuda
    .venv/bin/python -m benchmarks.step_overhead --smoke --out /tmp/so.json  # CI-sized, seconds

Writes ``benchmarks/results/step_overhead.json`` (or ``--out``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from benchmarks._distill_options import OPTIONS, RESULTS_DIR, provenance  # noqa: E402

GOAL_RATIO = 1.10
MODULE = "benchmarks.step_overhead"
DISTILL_OPTIONS = [name for name, (_, o) in OPTIONS.items() if o is not None]

PRESETS: dict[str, dict[str, Any]] = {
    # the project's distill experiment: teacher/student presets, default distill config
    "cpu": dict(config="distill", batch_size=4, warmup=2, repeats=10),
    # BEVFusion's LiDAR-branch sizes (teacher) and a half-width student on the same grid
    "bevfusion_scale": dict(config="distill", batch_size=4, warmup=3, repeats=20),
    # tiny CI models, for the smoke test
    "smoke": dict(config="distill_ci", batch_size=2, warmup=1, repeats=2),
}


def _bevfusion_scale_models() -> dict[str, Any]:
    """Teacher = the bevfusion_scale preset; student = the same grid at half the widths."""
    from bevdistill.models.build import load_config

    teacher = load_config("bevfusion_scale").model.to_dict()
    student = copy.deepcopy(teacher)
    student["pts_voxel_encoder"]["feat_channels"] = [32, 128]
    student["pts_middle_encoder"]["in_channels"] = 128
    student["pts_backbone"]["out_channels"] = [64, 128]
    student["pts_neck"]["out_channels"] = [128, 128]
    student["bbox_head"].update(in_channels=256, shared_channels=64)
    return {"teacher": teacher, "student": student,
            "point_cloud_range": teacher["point_cloud_range"]}


def build(preset: str, option: str, device: str):
    """The Distiller of ``option`` (teacher left random) and a batch of synthetic scans."""
    from mmengine.registry import DATASETS, MODELS

    from bevdistill.data import bev_collate
    from bevdistill.engine.runner import load_experiment, register_modules

    register_modules()
    overrides = dict(OPTIONS[option][1] or {})
    overrides["model.teacher_ckpt"] = None
    exp = load_experiment(PRESETS[preset]["config"], overrides)
    model_cfg = exp.model.to_dict()
    pcr = list(exp.val_dataset.point_cloud_range)
    if preset == "bevfusion_scale":
        models = _bevfusion_scale_models()
        model_cfg.update(teacher=models["teacher"], student=models["student"])
        pcr = models["point_cloud_range"]
    distiller = MODELS.build(model_cfg).to(device)
    distiller.train()
    dataset = DATASETS.build(dict(type="SyntheticBEVDataset", split="val", seed=7,
                                  num_samples=PRESETS[preset]["batch_size"],
                                  point_cloud_range=pcr, augment=False))
    batch = bev_collate([dataset[i] for i in range(len(dataset))])
    batch = distiller.data_preprocessor(batch, True)
    return distiller, batch


class Steps:
    """The two steps being compared, each with its own student and optimizer."""

    def __init__(self, distiller, batch, device: str):
        self.distiller, self.device = distiller, device
        self.inputs, self.samples = batch["inputs"], batch["data_samples"]
        self.student = copy.deepcopy(distiller.student).train()
        self.opt_distill = torch.optim.AdamW(distiller.parameters(), lr=1e-4)
        self.opt_student = torch.optim.AdamW(self.student.parameters(), lr=1e-4)

    def reference(self) -> None:
        with torch.no_grad():
            self.distiller.teacher(self.inputs, self.samples, mode="tensor")
        losses = self.student.loss(self.inputs, self.samples)
        self._update(self.student, losses, self.opt_student)

    def distill(self) -> None:
        losses = self.distiller.loss(self.inputs, self.samples)
        self._update(self.distiller, losses, self.opt_distill)

    def _update(self, model, losses, optimizer) -> None:
        loss, _ = model.parse_losses(losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_option(preset: str, option: str, device: str, warmup: int, repeats: int) -> dict:
    distiller, batch = build(preset, option, device)
    steps = Steps(distiller, batch, device)
    for _ in range(warmup):
        steps.reference()
        steps.distill()
    runs: dict[str, list[tuple[float, float]]] = {"reference": [], "distill": []}
    for r in range(repeats):
        order = ("reference", "distill") if r % 2 == 0 else ("distill", "reference")
        for mode in order:
            runs[mode].append(_timed(getattr(steps, mode)))
    med = {m: {"wall_s": statistics.median(w for w, _ in v),
               "cpu_s": statistics.median(c for _, c in v)} for m, v in runs.items()}
    # Each round's two steps run back to back, so their ratio is immune to the machine drifting
    # between rounds (a shared VM's speed wanders by 10-15% over minutes): the reported ratio.
    paired = sorted(d[0] / r[0] for r, d in zip(runs["reference"], runs["distill"], strict=True))
    quartiles = (statistics.quantiles(paired, n=4, method="inclusive") if len(paired) > 1
                 else [paired[0]] * 3)
    record = {
        "option": option,
        "description": OPTIONS[option][0],
        "hook_points": list(distiller.hook_points),
        "kd_hook": distiller.kd_hook,
        "distill_params": sum(p.numel() for p in distiller.distill_loss.parameters()),
        "reference": med["reference"],
        "distill": med["distill"],
        "ratio_wall": statistics.median(paired),
        "ratio_wall_iqr": [quartiles[0], quartiles[2]],
        "ratio_of_medians_wall": med["distill"]["wall_s"] / med["reference"]["wall_s"],
        "ratio_cpu": med["distill"]["cpu_s"] / med["reference"]["cpu_s"],
    }
    if device == "cuda":
        record["memory"] = {m: _cuda_peak(getattr(steps, m)) for m in ("reference", "distill")}
    return record


def _cuda_peak(fn) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    return int(torch.cuda.max_memory_allocated() - base)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_worker(preset: str, option: str, mode: str) -> dict:
    """Run in a fresh process: peak RSS rise over two ``mode`` steps (CPU only)."""
    distiller, batch = build(preset, option, "cpu")
    steps = Steps(distiller, batch, "cpu")
    before = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):
        getattr(steps, mode)()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_before": before, "peak_rss": peak, "peak_rise": max(0, peak - before),
            "peak_moved": peak > peak_before}


def cpu_memory(preset: str, option: str, mode: str) -> dict:
    cmd = [sys.executable, "-m", MODULE, "--memory-worker", option, mode]
    cmd += ["--smoke"] if preset == "smoke" else ["--preset", preset]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"memory worker {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("cpu", "bevfusion_scale"), default="cpu")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available "
                        "for bevfusion_scale, else cpu)")
    parser.add_argument("--options", nargs="+", choices=DISTILL_OPTIONS, default=None,
                        help="distillation options to measure (default: all)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figures")
    parser.add_argument("--smoke", action="store_true",
                        help="CI models, 2 options, 2 repeats: checks that the script runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "step_overhead.json")
    parser.add_argument("--memory-worker", nargs=2, metavar=("OPTION", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    preset = "smoke" if args.smoke else args.preset
    if args.memory_worker:
        print(json.dumps(memory_worker(preset, *args.memory_worker)))
        return {}
    device = args.device or ("cuda" if preset == "bevfusion_scale" and torch.cuda.is_available()
                             else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    options = args.options or (["combined", "spatial_infonce"] if args.smoke else DISTILL_OPTIONS)
    warmup = args.warmup if args.warmup is not None else PRESETS[preset]["warmup"]
    repeats = args.repeats if args.repeats is not None else PRESETS[preset]["repeats"]

    record = provenance(MODULE, argv)
    record.update(preset=preset, device=device, batch_size=PRESETS[preset]["batch_size"],
                  warmup=warmup, repeats=repeats, goal_ratio=GOAL_RATIO,
                  teacher_weights="random (timing does not depend on the values)",
                  options=[])
    for option in options:
        row = time_option(preset, option, device, warmup, repeats)
        if device == "cpu" and not args.no_memory:
            row["memory"] = {m: cpu_memory(preset, option, m) for m in ("reference", "distill")}
        row["meets_goal"] = row["ratio_wall"] <= GOAL_RATIO
        record["options"].append(row)
        print(_row_text(row), flush=True)
    record["machine_after"] = {"load_average": [round(v, 2) for v in os.getloadavg()]}
    record["markdown"] = markdown(record["options"], device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"-> {args.out}")
    return record


def _peak_mib(row: dict, mode: str) -> str:
    mem = row.get("memory") or {}
    entry = mem.get(mode)
    if entry is None:
        return "-"
    value = entry["peak_rise"] if isinstance(entry, dict) else entry
    return f"{value / 2**20:.0f}"


def markdown(rows: list[dict], device: str) -> str:
    """The summary table the book shows: times, ratio against the goal, peak memory."""
    where = "peak RSS rise, MiB" if device == "cpu" else "peak allocated, MiB"
    lines = [
        f"| option | reference step (s) | distillation step (s) | ratio (IQR) | goal <= {GOAL_RATIO} "
        f"| memory reference ({where}) | memory distillation |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['option']} | {row['reference']['wall_s']:.3f} | {row['distill']['wall_s']:.3f} "
            f"| {row['ratio_wall']:.3f} ({row['ratio_wall_iqr'][0]:.3f}-{row['ratio_wall_iqr'][1]:.3f}) "
            f"| {'yes' if row['meets_goal'] else 'no'} "
            f"| {_peak_mib(row, 'reference')} | {_peak_mib(row, 'distill')} |"
        )
    return "\n".join(lines)


def _row_text(row: dict) -> str:
    mem = row.get("memory")
    mem_text = ""
    if mem:
        key = "peak_rise" if "peak_rise" in mem["reference"] else None
        ref = mem["reference"][key] if key else mem["reference"]
        dis = mem["distill"][key] if key else mem["distill"]
        mem_text = f"  mem {ref / 2**20:.0f} -> {dis / 2**20:.0f} MiB"
    return (f"{row['option']:16s} reference {row['reference']['wall_s']:.3f}s  distill "
            f"{row['distill']['wall_s']:.3f}s  ratio {row['ratio_wall']:.3f} "
            f"(cpu {row['ratio_cpu']:.3f}){mem_text}")


if __name__ == "__main__":
    main()
