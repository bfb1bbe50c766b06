"""The fresh fault drill of issue 23: 42 faults of its classes, written after the handlers and not
designed against them, run as a new user would (CLI in subprocesses, library calls in a fresh
interpreter). Prints each outcome and the rates (clear errors / recoveries / silent / tracebacks /
hangs). Not a test: run it with ``python tests/fault_drill_fresh.py`` (about 5 minutes on 2 cores).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ROOT = Path(tempfile.mkdtemp(prefix="fault-drill-"))
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
Q = ["log_level=WARNING", "train_dataset.num_samples=4", "val_dataset.num_samples=2"]
results = []

def run(args, timeout=240, cwd=ROOT):
    try:
        p = subprocess.run([PY, "-m", "bevdistill", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return None, "TIMEOUT"

def py(code, timeout=240):
    try:
        p = subprocess.run([PY, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return None, "TIMEOUT"

def classify_cli(name, rc, out, expect="error", words=(), ok=None):
    if rc is None:
        o = "hang"
    elif "Traceback" in out:
        o = "traceback"
    elif expect == "error":
        o = "clear" if rc == 2 and all(w.lower() in out.lower() for w in words) else ("silent" if rc == 0 else f"unclear(rc={rc})")
    else:
        o = "recovered" if rc == 0 and (ok is None or ok(out)) else ("clear" if rc == 2 else ("silent" if rc == 0 else f"rc={rc}"))
    err = [line for line in out.splitlines() if "error" in line.lower() or "bevdistill:" in line
           or "--resume" in line or "warn" in line.lower()]
    results.append((name, o))
    print(f"[{o:10s}] {name}: {(err[-1] if err else out.strip().splitlines()[-1] if out.strip() else '')[:260]}", flush=True)

API = """
import sys
from bevdistill.errors import UserError
try:
{body}
except UserError as e:
    print('USERERROR', type(e).__name__, e); sys.exit(2)
print('NOERROR')
"""
def api(name, body, expect="error", words=(), ok=None):
    rc, out = py(API.format(body="\n".join("    " + line for line in body.strip().splitlines())))
    if expect == "error":
        o = "hang" if rc is None else "traceback" if "Traceback" in out else "clear" if "USERERROR" in out and all(w.lower() in out.lower() for w in words) else "silent" if "NOERROR" in out else "unclear"
    else:
        o = "hang" if rc is None else "traceback" if "Traceback" in out else "recovered" if ok(out) else "silent"
    results.append((name, o))
    print(f"[{o:10s}] {name}: {out.strip().splitlines()[-1][:260] if out.strip() else ''}", flush=True)

def train(w, *opts, cfg="train_student_ci", verb=("train", "student"), iters="2", extra=()):
    return [*verb, cfg, "--work-dir", str(ROOT / w), "--max-iters", iters, *extra, "--cfg-options", *Q, *opts]

# ---- config keys & values (not the ones designed against) ----
c = [
 ("cfg: schedule.learning_rate", train("c1", "schedule.learning_rate=0.01"), ["learning_rate"]),
 ("cfg: model.student.x on distill_ci (student is a path)", train("c2", "model.student.pts_neck.out_channels=[4,4]", cfg="distill_ci", verb=("distill",)), ["student"]),
 ("cfg: val_evaluator.dist_threshold", train("c3", "val_evaluator.dist_threshold=[1.0]"), ["dist_thresholds"]),
 ("cfg: train_dataset.augment.flip", train("c4", "train_dataset.augment.flip=0.5"), ["flip"]),
 ("cfg: data.val_batch_size=-2", train("c5", "data.val_batch_size=-2"), ["val_batch_size"]),
 ("cfg: schedule.max_iters=1e3", train("c6", "schedule.max_iters=1e3"), ["max_iters"]),
 ("cfg: deterministic=maybe", train("c7", "deterministic=maybe"), ["deterministic"]),
 ("cfg: --max-iters -5", train("c8", iters="-5"), ["max_iters"]),
 ("cfg: model.distill.alpha_kd=-1", train("c9", "model.distill.alpha_kd=-1", cfg="distill_ci", verb=("distill",)), ["alpha_kd"]),
 ("cfg: init_from missing file", train("c10", "init_from=/nonexistent/t.pth"), ["/nonexistent/t.pth"]),
 ("cfg: model.hook_points=[pts_nek]", train("c11", "model.hook_points=[pts_nek]", cfg="distill_ci", verb=("distill",)), ["pts_nek"]),
 ("cfg: --cfg-options =5", train("c12", "=5"), ["=5"]),
 ("cfg: schedule=5 (a section as a number)", train("c13", "schedule=5"), ["schedule"]),
 ("cfg: data.num_workers=two", train("c14", "data.num_workers=two"), ["num_workers"]),
 ("cfg: model.voxel_size=[0,1,8]", train("c15", "model.voxel_size=[0,1,8]"), ["voxel_size"]),
]
for name, argv, words in c:
    rc, out = run(argv)
    classify_cli(name, rc, out, words=words)

f = ROOT / "yaml_bad.yaml"
f.write_text("role: student\nmodel: [unclosed\n")
rc, out = run(["train", "student", str(f)])
classify_cli("parse: broken YAML config", rc, out, words=[str(f)])
f = ROOT / "raises.py"
f.write_text(f"_base_ = ['{REPO}/bevdistill/configs/experiments/train_student_ci.py']\nx = 1 / 0\n")
rc, out = run(["train", "student", str(f)])
classify_cli("parse: config raising ZeroDivisionError", rc, out, words=[str(f)])
f = ROOT / "typo_file.py"
f.write_text(f"_base_ = ['{REPO}/bevdistill/configs/experiments/train_student_ci.py']\nsed = 3\ndatta = dict(batch_size=1)\n")
rc, out = run(train("c16", cfg=str(f)))
classify_cli("cfg: file defines 'datta'", rc, out, words=["datta"])

# ---- non-finite weights, cards, wrong checkpoints ----
assets = REPO / "bevdistill/assets"
py(f"""
import torch
sd = torch.load('{assets}/student.pth', weights_only=True); sd = sd.get('state_dict', sd)
k = [k for k in sd if 'heatmap' in k and k.endswith('weight')][0]; sd[k].view(-1)[2] = -float('inf')
torch.save({{'state_dict': sd}}, '{ROOT}/neg_inf.pth')
t = torch.load('{assets}/teacher.pth', weights_only=True); t = t.get('state_dict', t)
k = [k for k in t if 'running_var' in k][0]; t[k].view(-1)[0] = float('nan'); torch.save(t, '{ROOT}/nan_teacher.pth')
""")
rc, out = run(["evaluate", "train_student", str(ROOT / "neg_inf.pth"), "--num-samples", "1", "--work-dir", str(ROOT / "e1")])
classify_cli("weights: -inf in a head conv, evaluate", rc, out, words=["non-finite"])
rc, out = run(train("d1", "model.teacher_ckpt=" + str(ROOT / "nan_teacher.pth"), cfg="distill", verb=("distill",), iters="1"))
classify_cli("weights: NaN running_var in teacher_ckpt (distill)", rc, out, words=["non-finite"])
shutil.copy(assets / "teacher.pth", ROOT / "teacher.pth")
card = json.loads((assets / "teacher_card.json").read_text())
card["weights_sha256"] = None
(ROOT / "teacher_card.json").write_text(json.dumps(card))
rc, out = run(["evaluate", "train_teacher", str(ROOT / "teacher.pth"), "--num-samples", "1", "--work-dir", str(ROOT / "e2")])
classify_cli("card: weights_sha256 null beside weights", rc, out, words=["weights_sha256"])
(ROOT / "teacher_card.json").write_text("[1, 2, 3]")
rc, out = run(["evaluate", "train_teacher", str(ROOT / "teacher.pth"), "--num-samples", "1", "--work-dir", str(ROOT / "e3")])
classify_cli("card: a JSON list", rc, out, words=["teacher_card.json"])
card["weights_sha256"] = card.get("weights_sha256") or json.loads((assets / "teacher_card.json").read_text())["weights_sha256"].upper()
(ROOT / "teacher_card.json").write_text(json.dumps(card))
rc, out = run(["evaluate", "train_teacher", str(ROOT / "teacher.pth"), "--num-samples", "1", "--work-dir", str(ROOT / "e4")])
classify_cli("card: upper-case checksum (valid) evaluates", rc, out, expect="recover", ok=lambda o: "bev/mAP" in o)
rc, out = run(["export", "distill", str(assets / "teacher.pth"), str(ROOT / "x.pth")])
classify_cli("wrong ckpt: export of the shipped teacher", rc, out, words=["distill"])
(ROOT / "notes.pth").write_text("just some notes\n")
rc, out = run(["evaluate", "train_student_ci", str(ROOT / "notes.pth"), "--work-dir", str(ROOT / "e5")])
classify_cli("wrong ckpt: a text file", rc, out, words=["notes.pth"])
api("weights: load_shipped after a NaN written into assets copy", f"""
import shutil, torch, bevdistill.pretrained as P
from pathlib import Path
d = Path('{ROOT}/assets'); d.mkdir(exist_ok=True)
for n in ('student.pth', 'student_card.json'): shutil.copy(P.ASSETS / n, d / n)
sd = torch.load(d / 'student.pth', weights_only=True); k = next(iter(sd)); sd[k].view(-1)[0] = float('nan'); torch.save(sd, d / 'student.pth')
P.ASSETS = d
P.load_shipped('student')""", words=["student"])

# ---- data ----
FRAME = """
import numpy as np, pickle, sys
sys.path.insert(0, '{tests}')
from pathlib import Path
from test_faults import _frame
d = Path('{d}'); d.mkdir(exist_ok=True)
info, _ = _frame(d)
data = pickle.loads(info.read_bytes()); s = data['data_list'][0]
{edit}
info.write_bytes(pickle.dumps(data))
from bevdistill.data import NuScenesReader
r = NuScenesReader(info)
out = r[0]
print('boxes', len(out['gt_boxes']))
"""
edits = [
 ("data: lidar_points is a string", "s['lidar_points'] = 'sweep.pcd.bin'", "error", ["lidar_points"]),
 ("data: yaw NaN", "s['instances'][0]['bbox_3d'][6] = float('nan')", "error", ["NaN"]),
 ("data: height 0 box", "s['instances'][2]['bbox_3d'][5] = 0.0", "recover", None),
 ("data: lidar2ego 3x3", "s['lidar_points']['lidar2ego'] = np.eye(3).tolist()", "error", ["lidar2ego"]),
 ("data: bbox_3d a string", "s['instances'][1]['bbox_3d'] = 'abc'", "error", ["bbox_3d"]),
 ("data: lidar2ego rotation by 90 deg (valid)", "s['lidar_points']['lidar2ego'] = [[0,-1,0,0],[1,0,0,0],[0,0,1,1.8],[0,0,0,1]]", "recover", None),
 ("data: instances is None", "s['instances'] = None", "error", ["instances"]),
]
for name, edit, expect, words in edits:
    d = ROOT / ("data_" + str(abs(hash(name)) % 10**6))
    code = FRAME.format(tests=REPO / "tests", d=d, edit=edit)
    if expect == "error":
        api(name, code.split("from bevdistill.data import")[0] + "from bevdistill.data import NuScenesReader\nr = NuScenesReader(info)\nr[0]", words=words)
    else:
        api(name, code, expect="recover", ok=lambda o: "boxes" in o)

# ---- resume ----
w = ROOT / "r1"
run(train("r1", iters="4"))
rc, out = run(train("r1", "schedule.warmup_iters=0", iters="6", extra=["--resume"]))
classify_cli("resume: changed warmup_iters + longer", rc, out, expect="recover", ok=lambda o: "rebuilt" in o)
rc, out = run(train("r1", "data.batch_size=1", iters="8", extra=["--resume"]))
rec = json.loads((w / "metrics.json").read_text()) if (w / "metrics.json").exists() else {}
classify_cli("resume: changed batch_size is said and recorded", rc, out, expect="recover",
             ok=lambda o: "batch_size" in o and "data" in rec.get("resume", {}).get("other", {}))
rc, out = run(train("r1", cfg="distill_ci", verb=("distill",), iters="10", extra=["--resume"]))
classify_cli("resume: distill_ci into a student run", rc, out, words=["train_student_ci"])
rc, out = run(train("r1", "seed=3", iters="10", extra=["--resume"]))
rec = json.loads((w / "metrics.json").read_text())
classify_cli("resume: changed seed recorded", rc, out, expect="recover", ok=lambda o: "seed" in rec.get("resume", {}).get("other", {}))

# ---- lock ----
w = ROOT / "L"
w.mkdir()
(w / ".bevdistill.lock").write_text("")
rc, out = run(train("L"))
classify_cli("lock: empty lock file left behind", rc, out, expect="recover", ok=lambda o: "taking over" in o)
holder = subprocess.Popen([PY, "-m", "bevdistill", *train("L2", iters="400")], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(120):
    if (ROOT / "L2" / ".bevdistill.lock").exists():
        break
    time.sleep(0.5)
rc, out = run(["evaluate", "train_student_ci", str(assets / "student.pth"), "--work-dir", str(ROOT / "L2") + "/"])
classify_cli("lock: evaluate into a live training's dir (trailing slash)", rc, out, words=["live run"])
rc, out = run(train("./L2/../L2", iters="2"))
classify_cli("lock: same dir by another relative path", rc, out, words=["live run"])
holder.kill()
holder.wait()
rc, out = run(train("L2", iters="2"))
classify_cli("lock: after the holder was SIGKILLed", rc, out, expect="recover", ok=lambda o: "stale" in o)

# ---- no_grad ----
api("no_grad: detector loss under no_grad then backward", """
import torch
from bevdistill.engine.runner import load_experiment
from bevdistill.models import build_detector
from bevdistill.data import SyntheticBEVDataset, bev_collate
exp = load_experiment('train_student_ci')
m = build_detector(exp.model).train()
ds = SyntheticBEVDataset(num_samples=2, point_cloud_range=exp.train_dataset.point_cloud_range)
b = m.data_preprocessor(bev_collate([ds[0], ds[1]]), True)
with torch.no_grad():
    loss = sum(m(**b, mode='loss').values())
loss.backward()""", words=["no_grad"])

cnt = Counter(o if o in ("clear", "recovered", "silent", "traceback", "hang") else "other" for _, o in results)
print(f"\nFRESH: {len(results)} cases: {cnt['clear']} clear errors, {cnt['recovered']} recoveries, {cnt['silent']} silent, {cnt['traceback']} tracebacks, {cnt['hang']} hangs, {cnt['other']} other")
