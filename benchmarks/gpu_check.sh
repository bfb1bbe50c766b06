#!/usr/bin/env bash
# The GPU check (issue 9, item 7): on a machine with a CUDA device, run
#   1. notebook 06 in full mode          (papermill ... -p MODE full)
#   2. step_overhead, BEVFusion-scale    (python -m benchmarks.step_overhead --preset bevfusion_scale)
#   3. distill_gain at GPU scale         (python -m benchmarks.distill_gain --preset gpu)
#   4. the fusion teacher on the GPU     (python -m benchmarks.fusion_speed --device cuda)
#   5. the camera renders (CPU, 1 core)  (python -m benchmarks.camera_speed)
# and write their JSON, the executed notebook and this check's own record (gpu_check.json: each
# step's command, start, duration and exit status, with the commit and tree state) under
# benchmarks/results/gpu/ (OUT_DIR).
#
# EXPECTED DURATION on one H100/H200-class GPU, about 2 to 4 hours in all. These are estimates,
# not measurements (no GPU has run this script yet); gpu_check.json records the real ones:
#   1. notebook 06, full mode: its full schedule (notebook 06 states its duration), ~30-60 min
#   2. step_overhead, 7 options x (3 warm-up + 20 rounds + 2 memory steps) of both modes: ~2-10
#      min (one such step took 24-27 s on one CPU core; a GPU is far faster)
#   3. distill_gain --preset gpu: 5 options x 3 seeds x 6000 iterations, one run at a time:
#      ~1.5-3 h
#   4. fusion_speed: teacher_fusion, its 3x3-fuser variant and teacher, 2 warm-up + 8 rounds, ~1-3 min
#   5. camera_speed: 40 scenes rendered and scanned on one CPU core, ~10 s
# It stops at the first step that fails, says which, and leaves the later steps unrun.
#
# Usage, from the repository root:
#   bash benchmarks/gpu_check.sh             # the check (needs CUDA, the project and papermill)
#   bash benchmarks/gpu_check.sh --dry-run   # print the commands it would run; runs nothing
#   PYTHON=/path/to/python OUT_DIR=... bash benchmarks/gpu_check.sh   # other python / folder
#
# A GPU machine that has PyTorch with CUDA but none of the project's other packages, and no
# package index: fill wheels/ (git-ignored) on a machine that reaches PyPI, bring the checkout
# with wheels/ to the GPU machine, install from it there (torch is kept as it is), then run:
#   here:  bash benchmarks/gpu_check.sh wheels 3.12   # the GPU machine's Python version
#          (optional: GPU_FREEZE=freeze.txt, the output of `python3 -m pip freeze` on the GPU
#          machine: its versions are kept and their wheels left out, which makes wheels/ small)
#   there: bash benchmarks/gpu_check.sh install       # pip install --no-index --find-links wheels
#                                                     #   -e .[dev,lab], torch pinned as found
#          bash benchmarks/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-benchmarks/results/gpu}
WHEELS=${WHEELS:-wheels}
EXTRAS=dev,lab

die() {
    echo "gpu_check: $*" >&2
    exit 2
}

# ---- wheels: on a machine that reaches PyPI, the GPU machine's needs except torch ---------------
fill_wheels() {
    local pyver=${1:-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
    local reqs constraints=()
    reqs=$(mktemp)
    # the project's requirements and those of its dev and lab extras, less torch (the GPU
    # machine's CUDA build stays), plus what builds the editable install (setuptools, wheel)
    "$PY" - "$EXTRAS" >"$reqs" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1].split(","):
    reqs += project["optional-dependencies"][extra]
reqs += tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]
for r in reqs:
    if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() != "torch":
        print(r)
EOF
    if [[ -n "${GPU_FREEZE:-}" ]]; then
        # the GPU machine's own versions, as constraints (plain name==version lines only)
        grep -E '^[A-Za-z0-9_.-]+==[^ ;@]+$' "$GPU_FREEZE" | grep -viE '^torch==' >"$reqs.constraints"
        constraints=(-c "$reqs.constraints")
    fi
    echo "gpu_check: wheels for Python $pyver (manylinux x86_64) into $WHEELS/, torch left out:"
    sed 's/^/    /' "$reqs"
    mkdir -p "$WHEELS"
    local cmd=("$PY" -m pip download --dest "$WHEELS" --only-binary=:all: --implementation cp
               --python-version "$pyver" --platform manylinux_2_28_x86_64
               --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64 --platform manylinux1_x86_64
               "${constraints[@]}" -r "$reqs")
    echo "+ ${cmd[*]}"
    "${cmd[@]}" || die "pip download failed (above); nothing is installed by this step"
    if [[ -n "${GPU_FREEZE:-}" ]]; then
        # what the GPU machine has at the constrained version needs no wheel
        local name
        while IFS='=' read -r name _; do
            name=$(echo "$name" | tr 'A-Z-.' 'a-z__')
            find "$WHEELS" -maxdepth 1 -iname "${name}-*.whl" -print -delete \
                | sed 's/^/    already on the GPU machine, removed: /'
        done <"$reqs.constraints"
    fi
    echo "gpu_check: $(find "$WHEELS" -maxdepth 1 -name '*.whl' | wc -l) wheels," \
        "$(du -sh "$WHEELS" | cut -f1) in $WHEELS/; on the GPU machine: bash benchmarks/gpu_check.sh install"
}

# ---- install: on the GPU machine, from wheels/ only, torch untouched -----------------------------
install_from_wheels() {
    [[ -d "$WHEELS" ]] || die "no $WHEELS/ folder: fill it first with 'bash benchmarks/gpu_check.sh wheels <python version>' on a machine that reaches PyPI"
    local torch_version pin
    torch_version=$("$PY" -c 'import torch; print(torch.__version__)') \
        || die "$PY cannot import torch: install a CUDA build of PyTorch first"
    pin=$(mktemp)
    echo "torch==$torch_version" >"$pin"  # pip may not replace the GPU build of torch
    local cmd=("$PY" -m pip install --no-index --find-links "$WHEELS" -c "$pin" -e ".[$EXTRAS]")
    echo "+ ${cmd[*]}"
    "${cmd[@]}" || die "pip install from $WHEELS/ failed (above): a wheel is missing or of another Python version"
    local after
    after=$("$PY" -c 'import torch; print(torch.__version__)')
    [[ "$after" == "$torch_version" ]] || die "torch changed from $torch_version to $after"
    echo "gpu_check: installed, torch $after kept; now: bash benchmarks/gpu_check.sh"
}

# ---- the check ------------------------------------------------------------------------------------
# papermill runs the notebook from notebooks/ (as the book does) and saves into OUT_DIR from there:
# absolute paths
[[ "$OUT_DIR" == /* ]] || OUT_DIR="$PWD/$OUT_DIR"
q() {  # one command line, quoted for eval
    local line
    line=$(printf '%q ' "$@")
    echo "${line% }"
}
STEP_NAMES=(notebook06_full step_overhead_bevfusion_scale distill_gain_gpu fusion_speed_gpu
            camera_speed)
STEP_CMDS=(
    "$(q "$PY" -m papermill "$PWD/notebooks/06_build_and_distill.ipynb" \
        "$OUT_DIR/06_build_and_distill_full.ipynb" -p MODE full --cwd "$PWD/notebooks" \
        --kernel python3 --log-output)"
    "$(q "$PY" -m benchmarks.step_overhead --preset bevfusion_scale --device cuda \
        --out "$OUT_DIR/step_overhead_bevfusion_scale.json")"
    "$(q "$PY" -m benchmarks.distill_gain --preset gpu --out "$OUT_DIR/distill_gain_gpu.json")"
    "$(q "$PY" -m benchmarks.fusion_speed --device cuda --batch-size 4 --fuser-kernels 3 \
        --out "$OUT_DIR/fusion_speed_gpu.json")"
    "$(q env OMP_NUM_THREADS=1 "$PY" -m benchmarks.camera_speed \
        --out "$OUT_DIR/camera_speed.json")"
)

check_cuda() {
    "$PY" - <<'EOF' || die "no CUDA device: this check runs on a machine with an NVIDIA GPU and a CUDA build of PyTorch (see the top of benchmarks/gpu_check.sh); nothing was run"
import os, sys
try:
    import torch
except ImportError as exc:
    sys.exit(f"gpu_check: cannot import torch ({exc})")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no "
             f"CUDA device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
print(f"gpu_check: CUDA device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
EOF
    "$PY" -c 'import papermill, bevdistill' \
        || die "papermill or bevdistill is not importable by $PY: install the project with its lab extra (bash benchmarks/gpu_check.sh install, or pip install -e .[dev,lab])"
    # the notebook's kernel must be this python (a 'python3' kernelspec of another environment
    # would run the notebook without the project)
    "$PY" - <<'EOF' || die "the 'python3' Jupyter kernel is not $PY; remove that kernelspec or run with PYTHON set to its python"
import sys
from jupyter_client.kernelspec import KernelSpecManager
argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
# jupyter_client starts a bare 'python' / 'python3' kernel with the python that asks for it
bare = ("python", "python3", "python%d.%d" % sys.version_info[:2])
sys.exit(0 if argv0 in (*bare, sys.executable) else f"gpu_check: kernel python3 runs {argv0}")
EOF
}

# gpu_check.json: this check's record, rewritten after every step (so a failure is recorded too)
write_record() {
    "$PY" - "$OUT_DIR/gpu_check.json" "$STEPS_TSV" "$STARTED" <<'EOF'
import json, sys
from benchmarks.provenance import provenance
out, tsv, started = sys.argv[1:4]
steps = []
for line in open(tsv):
    name, command, step_started, duration, status = line.rstrip("\n").split("\t")
    steps.append(dict(name=name, command=command, started=step_started,
                      duration_s=float(duration), exit_status=int(status)))
record = provenance("benchmarks.gpu_check", [])
record["command"] = "bash benchmarks/gpu_check.sh"
record.update(started=started, steps=steps,
              duration_s=sum(s["duration_s"] for s in steps),
              passed=bool(steps) and all(s["exit_status"] == 0 for s in steps))
with open(out, "w") as f:
    f.write(json.dumps(record, indent=2) + "\n")
EOF
}

run_check() {
    local dry=$1 i
    if [[ "$dry" == yes ]]; then
        echo "gpu_check --dry-run: would check CUDA, then run:"
        for i in "${!STEP_CMDS[@]}"; do
            echo "  $((i + 1))/${#STEP_CMDS[@]} ${STEP_NAMES[$i]}: ${STEP_CMDS[$i]}"
        done
        return 0
    fi
    check_cuda
    mkdir -p "$OUT_DIR"
    STEPS_TSV=$(mktemp)
    STARTED=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
    for i in "${!STEP_CMDS[@]}"; do
        local name=${STEP_NAMES[$i]} cmd=${STEP_CMDS[$i]} t0 status=0 step_started
        echo
        echo "==> gpu_check $((i + 1))/${#STEP_CMDS[@]} $name: $cmd"
        step_started=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
        t0=$(date +%s)
        eval "$cmd" || status=$?
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$cmd" "$step_started" "$(($(date +%s) - t0))" \
            "$status" >>"$STEPS_TSV"
        write_record
        if [[ $status -ne 0 ]]; then
            echo "gpu_check: step $((i + 1)) ($name) FAILED with exit status $status: $cmd" >&2
            echo "gpu_check: later steps not run; record in $OUT_DIR/gpu_check.json" >&2
            exit "$status"
        fi
        echo "==> $name done in $(($(date +%s) - t0)) s"
    done
    echo
    echo "gpu_check: all ${#STEP_CMDS[@]} steps passed; results in $OUT_DIR/"
}

case "${1:-}" in
    "") run_check no ;;
    --dry-run) run_check yes ;;
    wheels) fill_wheels "${2:-}" ;;
    install) install_from_wheels ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown argument '$1' (use --dry-run, wheels [python version], install or --help)" ;;
esac
