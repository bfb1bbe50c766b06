"""What does one distillation step cost over what it cannot avoid?

The unavoidable part of a distillation step is a no-grad forward of the teacher plus an
ordinary training step of the student. This measures, in one process and on the same batch:

* ``reference``: the teacher's forward (its driver's ``teacher_forward``) under ``torch.no_grad``
  + student ``loss`` + backward + AdamW step, each model on its own view of the batch (a copy
  of the distiller's student, so the two never share optimizer state);
* ``distill``: ``Distiller.loss`` + backward + AdamW step (teacher forward, student forward with
  hooks, every distillation term, the projectors' and adapters' updates);

alternating the two (warm-up first, then ``--repeats`` rounds of one step each, the order
flipped every round), and reports per distillation option the median over rounds of
``distill / reference`` within a round, with its interquartile range (goal: at most 1.10 on the
CPU preset with the default config). The ratio of the two medians is kept too; it drifts with
the machine's speed between rounds, the paired ratio does not.

Peak memory of a training step, measured after the timed rounds on ``MEMORY_STEPS`` more steps
of each mode (alternating, in the same process, so that the profiler never slows a timed step):
on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, above what was
allocated before the step; on a CPU ``torch.profiler`` with ``profile_memory=True``: the peak
of the bytes that tensors allocated during the step hold at once (activations, gradients,
optimizer temporaries; the weights, optimizer state and anything allocated before the step are
not counted, nor the Python heap). A resident-set figure measured model building instead (the
peak RSS of a process is reached while it builds the models, before any step), hence not that.
Each mode reports the whole step's peak and the peak after the teacher's forward has returned:
where the teacher's no-grad forward holds the step's peak (the CPU preset's 0.25 m teacher),
the first is the same for both modes and only the second shows what distillation adds. The
JSON says how in ``memory_method``; ``memory_ratio`` (``memory_ratio_after_teacher``) is
distillation over reference.

Provenance: the record and each option's row carry the commit, whether the tree was dirty, the
start time and the duration (rows: ``commit``, ``dirty``, ``started``, ``duration_s``).

The teacher keeps its random initial weights: timing and memory do not depend on the values.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.step_overhead            # CPU preset
    .venv/bin/python -m benchmarks.step_overhead --preset bevfusion_scale --device cuda
                                                       # (as benchmarks/gpu_check.sh runs it)
    .venv/bin/python -m benchmarks.step_overhead --smoke --out /tmp/so.json  # CI-sized, seconds

Writes ``benchmarks/results/step_overhead.json`` (or ``--out``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from benchmarks._distill_options import OPTIONS, TRAINED_ALONE, as_the_cli_reads  # noqa: E402
from benchmarks.provenance import RESULTS_DIR, provenance  # noqa: E402

GOAL_RATIO = 1.10
MEMORY_STEPS = 2  # untimed steps per mode whose peak memory is measured (the max is reported)
_AFTER_TEACHER = ("; after_teacher_bytes: the same peak counted only once the teacher's no-grad "
                  "forward has returned (marked by hooks on the teacher)")
MEMORY_METHOD = {
    "cpu": f"torch.profiler (profile_memory=True) over {MEMORY_STEPS} untimed steps per mode "
           "after the timed rounds, alternating: peak_bytes is the peak of the bytes held at once "
           "by tensors allocated during the step (weights, optimizer state and earlier "
           "allocations not counted; no Python heap, no pages the allocator keeps), max over the "
           "steps" + _AFTER_TEACHER,
    "cuda": "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus "
            f"memory_allocated() just before the step, over {MEMORY_STEPS} untimed steps per mode "
            "after the timed rounds, alternating; max over the steps" + _AFTER_TEACHER,
}
MODULE = "benchmarks.step_overhead"
DISTILL_OPTIONS = [name for name in OPTIONS if name not in TRAINED_ALONE]
WEIGHT_START_KEYS = ("model.student_init", "init_from")

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
    # Where the student's weights start (the teacher_init_* options) changes no step's cost, and
    # this preset's student is not the teacher's network: those options are timed from scratch.
    overrides = as_the_cli_reads({k: v for k, v in (OPTIONS[option][1] or {}).items()
                                  if k not in WEIGHT_START_KEYS})
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
        d = self.distiller
        with torch.no_grad():  # each model on its own view, as Distiller.loss feeds them
            d.driver.teacher_forward(d.teacher, self.inputs, self.samples, d.hooks["teacher"])
        losses = self.student.loss(d.driver.view_of(self.inputs, "student"), self.samples)
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


def time_option(preset: str, option: str, device: str, warmup: int, repeats: int,
                memory: bool, argv: list[str] | None) -> dict:
    """One option's row: paired timings, then (``memory``) the peak memory of a step, with the
    commit, tree state, start time and duration of this row (the tree may change during a run)."""
    started = provenance(MODULE, argv)
    t0 = time.perf_counter()
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
        "commit": started["git_commit"],
        "dirty": started["uncommitted_changes"],
        "started": started["date"],
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
    if memory:
        mem = record["memory"] = step_memory(steps, device)
        record["memory_ratio"] = mem["distill"]["peak_bytes"] / mem["reference"]["peak_bytes"]
        record["memory_ratio_after_teacher"] = (mem["distill"]["after_teacher_bytes"]
                                                / mem["reference"]["after_teacher_bytes"])
    record["duration_s"] = time.perf_counter() - t0
    return record


def step_memory(steps: Steps, device: str) -> dict:
    """Peak memory of ``MEMORY_STEPS`` steps of each mode, alternating (see ``MEMORY_METHOD``).

    Per mode: ``peak_bytes``, the whole step's peak, and ``after_teacher_bytes``, the peak once
    the teacher's no-grad forward has returned (student forward and backward, distillation
    terms, optimizer step, with the teacher's captured features still held). The second is
    the one distillation can raise: where the teacher's forward holds the step's peak, the
    first is the same for both modes.
    """
    peak = _cuda_peak if device == "cuda" else _cpu_peak
    per_step: dict[str, list[tuple[int, int]]] = {"reference": [], "distill": []}
    for r in range(MEMORY_STEPS):
        for mode in (("reference", "distill") if r % 2 == 0 else ("distill", "reference")):
            per_step[mode].append(peak(getattr(steps, mode), steps.distiller.teacher))
    return {m: {"peak_bytes": max(p for p, _ in v), "after_teacher_bytes": max(a for _, a in v),
                "per_step": [list(x) for x in v]} for m, v in per_step.items()}


def _cuda_peak(fn, teacher: torch.nn.Module) -> tuple[int, int]:
    """(step peak, peak after the teacher's forward) of CUDA allocations above the start."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    teacher_peak: list[int] = []

    def after_teacher(module, args, output) -> None:
        torch.cuda.synchronize()
        teacher_peak.append(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()  # from here the peak is the rest of the step's

    handle = teacher.register_forward_hook(after_teacher)
    try:
        fn()
    finally:
        handle.remove()
    if len(teacher_peak) != 1:
        raise RuntimeError(f"the teacher ran {len(teacher_peak)} times in one step, expected 1")
    after = torch.cuda.max_memory_allocated()
    return int(max(teacher_peak[0], after) - base), int(after - base)


_TEACHER_LABEL = "step_overhead::teacher_forward"


def _cpu_peak(fn, teacher: torch.nn.Module) -> tuple[int, int]:
    """(step peak, peak after the teacher's forward) of the bytes held at once by tensors that
    ``fn`` allocates, from the profiler's allocation and free events (frees of tensors
    allocated before ``fn`` are ignored: they were not counted in). The teacher's forward is
    marked by a ``record_function`` range opened and closed by hooks on the teacher."""
    from torch.profiler import ProfilerActivity, profile, record_function

    ranges: list[record_function] = []

    def enter(module, args) -> None:
        ranges.append(record_function(_TEACHER_LABEL))
        ranges[-1].__enter__()

    def leave(module, args, output) -> None:
        ranges[-1].__exit__(None, None, None)

    handles = [teacher.register_forward_pre_hook(enter), teacher.register_forward_hook(leave)]
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    finally:
        for handle in handles:
            handle.remove()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    marks = [e for e in events if e.get("name") == _TEACHER_LABEL and e.get("ph") == "X"]
    if len(marks) != 1:
        raise RuntimeError(f"found {len(marks)} teacher forwards in one step's trace, expected 1")
    teacher_end = marks[0]["ts"] + marks[0]["dur"]
    mem = sorted((e for e in events if e.get("name") == "[memory]"
                  and e["args"].get("Device Type") == 0), key=lambda e: e["ts"])
    if not any(e["args"]["Bytes"] > 0 for e in mem):
        raise RuntimeError("torch.profiler recorded no CPU allocation during the step: this "
                           f"torch ({torch.__version__}) does not report CPU memory events")
    live = peak = after = 0
    mine: dict[int, int] = {}
    for event in mem:
        nbytes, addr = event["args"]["Bytes"], event["args"]["Addr"]
        if nbytes > 0:
            mine[addr] = nbytes
            live += nbytes
        elif addr in mine:
            live -= mine.pop(addr)
        peak = max(peak, live)
        if event["ts"] >= teacher_end:
            after = max(after, live)
    return peak, after


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
    args = parser.parse_args(argv)

    preset = "smoke" if args.smoke else args.preset
    device = args.device or ("cuda" if preset == "bevfusion_scale" and torch.cuda.is_available()
                             else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    options = args.options or (["combined", "spatial_infonce"] if args.smoke else DISTILL_OPTIONS)
    warmup = args.warmup if args.warmup is not None else PRESETS[preset]["warmup"]
    repeats = args.repeats if args.repeats is not None else PRESETS[preset]["repeats"]

    t0 = time.perf_counter()
    record = provenance(MODULE, argv)
    record.update(preset=preset, device=device, batch_size=PRESETS[preset]["batch_size"],
                  warmup=warmup, repeats=repeats, goal_ratio=GOAL_RATIO,
                  memory_method=None if args.no_memory else MEMORY_METHOD[device],
                  teacher_weights="random (timing does not depend on the values)",
                  options=[])
    for option in options:
        row = time_option(preset, option, device, warmup, repeats, not args.no_memory, argv)
        row["meets_goal"] = row["ratio_wall"] <= GOAL_RATIO
        record["options"].append(row)
        print(_row_text(row), flush=True)
    record["machine_after"] = {"load_average": [round(v, 2) for v in os.getloadavg()]}
    record["duration_s"] = time.perf_counter() - t0
    record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record["markdown"] = markdown(record["options"], device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"-> {args.out}")
    return record


def _peak_mib(row: dict, mode: str, key: str = "peak_bytes") -> str:
    entry = (row.get("memory") or {}).get(mode)
    return "-" if entry is None else f"{entry[key] / 2**20:.1f}"


def _mem_cell(row: dict, mode: str) -> str:
    """'step peak (peak after the teacher's forward)' in MiB."""
    return f"{_peak_mib(row, mode)} ({_peak_mib(row, mode, 'after_teacher_bytes')})"


def markdown(rows: list[dict], device: str) -> str:
    """The summary table the book shows: times, ratio against the goal, peak step memory."""
    where = ("peak of the step's tensor allocations" if device == "cpu"
             else "peak CUDA allocation of the step")
    lines = [
        f"| option | reference step (s) | distillation step (s) | ratio (IQR) | goal <= {GOAL_RATIO} "
        f"| memory reference, MiB ({where}; after the teacher's forward) | memory distillation "
        "| memory ratio (after the teacher's forward) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mem_ratio = (f"{row['memory_ratio']:.2f} ({row['memory_ratio_after_teacher']:.2f})"
                     if "memory_ratio" in row else "-")
        lines.append(
            f"| {row['option']} | {row['reference']['wall_s']:.3f} | {row['distill']['wall_s']:.3f} "
            f"| {row['ratio_wall']:.3f} ({row['ratio_wall_iqr'][0]:.3f}-{row['ratio_wall_iqr'][1]:.3f}) "
            f"| {'yes' if row['meets_goal'] else 'no'} "
            f"| {_mem_cell(row, 'reference')} | {_mem_cell(row, 'distill')} | {mem_ratio} |"
        )
    return "\n".join(lines)


def _row_text(row: dict) -> str:
    mem_text = ""
    if "memory" in row:
        mem_text = (f"  mem {_mem_cell(row, 'reference')} -> {_mem_cell(row, 'distill')} MiB "
                    f"(x{row['memory_ratio']:.2f}, after teacher "
                    f"x{row['memory_ratio_after_teacher']:.2f})")
    return (f"{row['option']:16s} reference {row['reference']['wall_s']:.3f}s  distill "
            f"{row['distill']['wall_s']:.3f}s  ratio {row['ratio_wall']:.3f} "
            f"(cpu {row['ratio_cpu']:.3f}){mem_text}")


if __name__ == "__main__":
    main()
