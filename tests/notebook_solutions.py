"""Learner answers for the notebooks' exercise cells, written here from the task texts.

``CORRECT_ANSWERS[exercise]`` is a correct answer written independently of the package's
reference (other layer choices, other formulas for the same quantity, an own distiller class),
so a notebook test that passes with it shows that the notebook and its checker accept a
learner's own code. ``WRONG_ANSWERS[exercise]`` is a typical mistake that the checker must
reject, one per notebook. Each answer defines the name the exercise cell's stub defines.

``CORRECT[notebook]`` and ``WRONG[notebook]`` arrange them by notebook, from the declaration of
the steps; the notebook's other parts are filled with their correct answers.
"""

from bevdistill.exercises.steps import EXERCISES, STEPS

STEP5A_CORRECT = '''
import torch.nn.functional as F


def heatmap_kd(student_logits, teacher_logits):
    t = teacher_logits.detach()
    p = t.sigmoid()
    s_pos, s_neg = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    kl = p * (F.logsigmoid(t) - s_pos) + (1 - p) * (F.logsigmoid(-t) - s_neg)
    return kl.sum(dim=1).mean()
'''

STEP6A_CORRECT = '''
import torch

from bevdistill import FeatureRecorder
from bevdistill.distiller import example_inputs_for

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")
PICK = {"pts_backbone": -1}


def measure_channels(model):
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with FeatureRecorder(model, LAYERS, select=PICK, detach=True) as recorder:
            with torch.no_grad(), recorder.recording() as captured:
                model(example_inputs_for(model), mode="tensor")
            maps = {k: v[-1] if isinstance(v, list) else v for k, v in captured.items()}
    finally:
        for module, flag in flags.items():
            module.training = flag
    return {k: int(v.size(1)) for k, v in maps.items()}
'''


STEP1_CORRECT = '''
import torch
from torch import nn


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    return value


class MyDistillationWrapper(nn.Module):
    HOOK_POINTS = ("pts_middle_encoder", "pts_backbone", "pts_neck")

    def __init__(self, model, is_student=False):
        super().__init__()
        self.model = model
        self.is_student = is_student
        self._current = {}
        self._handles = [
            model.get_submodule(name).register_forward_hook(self._hook(name))
            for name in self.HOOK_POINTS
        ]

    def _hook(self, name):
        def store(module, args, output):
            self._current[name] = output if self.is_student else _detached(output)
        return store

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        methods = {"loss": self.model.loss, "predict": self.model.predict}
        if mode not in methods:
            raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")
        self._current = {}
        result = methods[mode](batch_inputs_dict, batch_data_samples)
        return result, self._current

    def close(self):
        while self._handles:
            self._handles.pop().remove()
'''

# The tutorial's own hook: stores the output as it is, also for the teacher (never detached).
STEP1_WRONG = STEP1_CORRECT.replace(
    "self._current[name] = output if self.is_student else _detached(output)",
    "self._current[name] = output",
)

STEP2_CORRECT = '''
import torch
from torch import nn


class MyProjectionMLP(nn.Module):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.GroupNorm(1, hidden_dim)  # one group over the hidden units: per sample
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x):
        v = x.reshape(x.shape[0], x.shape[1], -1).mean(dim=-1) if x.dim() > 2 else x
        v = self.fc2(self.drop(torch.relu(self.norm(self.fc1(v)))))
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
'''

# The tutorial's head: BatchNorm1d, which raises in training mode at batch size 1.
STEP2_WRONG = STEP2_CORRECT.replace("nn.GroupNorm(1, hidden_dim)", "nn.BatchNorm1d(hidden_dim)")

STEP3_CORRECT = '''
import torch
from torch import nn


class MyContrastiveLoss(nn.Module):
    def __init__(self, temperature=0.07):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_feat, teacher_feat):
        s = student_feat / student_feat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        t = teacher_feat / teacher_feat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        logits = s @ t.t() / self.temperature
        idx = torch.arange(logits.shape[0])
        student_picks = -logits.log_softmax(dim=1)[idx, idx].mean()
        teacher_picks = -logits.log_softmax(dim=0)[idx, idx].mean()
        return 0.5 * (student_picks + teacher_picks)
'''

# One direction only (SimCLR's InfoNCELoss of the tutorial's sources, not CLIP's symmetric loss).
STEP3_WRONG = STEP3_CORRECT.replace(
    "return 0.5 * (student_picks + teacher_picks)", "return student_picks"
)

STEP4_CORRECT = '''
import torch
import torch.nn.functional as F
from torch import nn


class MyAttentionTransferLoss(nn.Module):
    def forward(self, student_feat, teacher_feat):
        maps = [student_feat.pow(2).mean(dim=1, keepdim=True),
                teacher_feat.detach().pow(2).mean(dim=1, keepdim=True)]
        size = (min(m.shape[2] for m in maps), min(m.shape[3] for m in maps))
        maps = [m if tuple(m.shape[2:]) == size else F.adaptive_avg_pool2d(m, size) for m in maps]
        a_s, a_t = (m.flatten(1) / m.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)
                    for m in maps)
        return (a_s - a_t).pow(2).sum(dim=1).mean()
'''

# The tutorial's solution: sum over channels, bilinear resize of the student, L1 maps, MSE.
STEP4_WRONG = '''
import torch.nn.functional as F
from torch import nn


class MyAttentionTransferLoss(nn.Module):
    def forward(self, student_feat, teacher_feat):
        s_att = student_feat.pow(2).sum(1, keepdim=True)
        t_att = teacher_feat.pow(2).sum(1, keepdim=True)
        if s_att.shape != t_att.shape:
            s_att = F.interpolate(s_att, size=t_att.shape[2:], mode="bilinear")
        s_att = F.normalize(s_att.view(s_att.size(0), -1), p=1, dim=1)
        t_att = F.normalize(t_att.view(t_att.size(0), -1), p=1, dim=1)
        return F.mse_loss(s_att, t_att)
'''

STEP5_CORRECT = '''
import torch
from torch import nn

from bevdistill import AttentionTransferLoss, ContrastiveLoss, HeatmapDistillationLoss, ProjectionMLP


class MyDistillationLoss(nn.Module):
    def __init__(self, student_channels, teacher_channels, feat_dim=128, temperature=0.07,
                 alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5):
        super().__init__()
        if set(student_channels) != set(teacher_channels):
            raise ValueError(f"layers differ: {sorted(student_channels)} vs {sorted(teacher_channels)}")
        self.channels = {k: (int(student_channels[k]), int(teacher_channels[k])) for k in student_channels}
        self.alpha = {"crd": float(alpha_crd), "at": float(alpha_at), "kd": float(alpha_kd)}
        self.heads = nn.ModuleDict()
        for layer, (cs, ct) in self.channels.items():
            key = layer.replace(".", "__")
            self.heads[f"{key}__student"] = ProjectionMLP(cs, out_dim=feat_dim)
            self.heads[f"{key}__teacher"] = ProjectionMLP(ct, out_dim=feat_dim)
        self.contrast = ContrastiveLoss(temperature)
        self.attention = AttentionTransferLoss()
        self.response = HeatmapDistillationLoss()

    @staticmethod
    def _get(features, layer, side, channels):
        if layer not in features:
            raise KeyError(f"{side} features have no {layer!r}; got {sorted(features)}")
        x = features[layer]
        if x.shape[1] != channels:
            raise ValueError(f"{side} {layer!r}: expected {channels} channels, got {x.shape[1]}")
        return x.float()

    def forward(self, student_features, teacher_features, student_outputs=None, teacher_outputs=None):
        pairs = {layer: (self._get(student_features, layer, "student", cs),
                         self._get(teacher_features, layer, "teacher", ct).detach())
                 for layer, (cs, ct) in self.channels.items()}
        device = next(iter(pairs.values()))[0].device.type
        losses = {}
        with torch.autocast(device_type=device, enabled=False):
            for layer, (s, t) in pairs.items():
                key = layer.replace(".", "__")
                z_s, z_t = self.heads[f"{key}__student"](s), self.heads[f"{key}__teacher"](t)
                losses[f"loss_crd.{layer}"] = self.alpha["crd"] * self.contrast(z_s, z_t)
                losses[f"loss_at.{layer}"] = self.alpha["at"] * self.attention(s, t)
            if student_outputs is not None and teacher_outputs is not None:
                losses["loss_kd.heatmap"] = self.alpha["kd"] * self.response(
                    student_outputs.float(), teacher_outputs.float().detach())
        return losses
'''

# The tutorial's habit: a layer that fails is printed and skipped, so a missing hook goes unseen.
STEP5_WRONG = STEP5_CORRECT.replace(
    '''        pairs = {layer: (self._get(student_features, layer, "student", cs),
                         self._get(teacher_features, layer, "teacher", ct).detach())
                 for layer, (cs, ct) in self.channels.items()}''',
    '''        pairs = {}
        for layer, (cs, ct) in self.channels.items():
            try:
                pairs[layer] = (self._get(student_features, layer, "student", cs),
                                self._get(teacher_features, layer, "teacher", ct).detach())
            except (KeyError, ValueError) as exc:
                print(f"Warning: skipping {layer}: {exc}")''',
)

STEP6_CORRECT = '''
import torch
from torch import nn

from bevdistill import BEVFusionDistillationLoss, FeatureRecorder
from bevdistill.distiller import example_inputs_for
from bevdistill.models import build_detector

LAYERS = ("pts_middle_encoder", "pts_backbone", "pts_neck")
PICK = {"pts_backbone": -1}


def _one_map(features):
    return {k: v[0] if isinstance(v, list) else v for k, v in features.items()}


def _channels(model, inputs):
    was_training = model.training
    model.eval()
    with FeatureRecorder(model, LAYERS, select=PICK, detach=True) as rec:
        with torch.no_grad(), rec.recording() as feats:
            model(inputs, mode="tensor")
        channels = {k: v.shape[1] for k, v in _one_map(feats).items()}
    model.train(was_training)
    return channels


class MyDistiller(nn.Module):
    def __init__(self, teacher, student):
        super().__init__()
        teacher.requires_grad_(False)
        teacher.eval()
        self._outside = [teacher]  # a list is not searched for modules: no teacher parameters
        self.student = student
        example = example_inputs_for(student)
        self.distill_loss = BEVFusionDistillationLoss(
            _channels(student, example), _channels(teacher, example), alpha_kd=0.0)
        self._teacher_rec = FeatureRecorder(teacher, LAYERS, select=PICK, detach=True)
        self._student_rec = FeatureRecorder(student, LAYERS, select=PICK, detach=False)

    @property
    def teacher(self):
        return self._outside[0]

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def loss(self, inputs, data_samples):
        with torch.no_grad(), self._teacher_rec.recording() as t_feats:
            self.teacher(inputs, data_samples, mode="tensor")
        t_feats = _one_map(dict(t_feats))
        with self._student_rec.recording() as s_feats:
            detection = self.student.loss(inputs, data_samples)
        distill = self.distill_loss(_one_map(dict(s_feats)), t_feats)
        return {**detection, **distill}


def my_build_bevfusion_distillation(teacher_config, student_config, teacher_checkpoint=None):
    teacher, student = build_detector(teacher_config), build_detector(student_config)
    if teacher_checkpoint is not None:
        state = torch.load(teacher_checkpoint, map_location="cpu", weights_only=True)
        teacher.load_state_dict(state.get("state_dict", state))
    return MyDistiller(teacher, student)
'''

# The obvious first version: the teacher assigned as an attribute, so nn.Module registers it
# and the optimiser, state_dict and train() all see it.
STEP6_WRONG = STEP6_CORRECT.replace(
    "self._outside = [teacher]  # a list is not searched for modules: no teacher parameters",
    "self._outside = [teacher]\n        self.registered_teacher = teacher",
)

# The answers by exercise, keyed as in bevdistill.exercises.steps (the one list of the steps).
CORRECT_ANSWERS = {
    "step1": STEP1_CORRECT,
    "step2": STEP2_CORRECT,
    "step3": STEP3_CORRECT,
    "step4": STEP4_CORRECT,
    "step5a": STEP5A_CORRECT,
    "step5b": STEP5_CORRECT,
    "step6a": STEP6A_CORRECT,
    "step6b": STEP6_CORRECT,
}
WRONG_ANSWERS = {  # one per notebook
    "step1": STEP1_WRONG,
    "step2": STEP2_WRONG,
    "step3": STEP3_WRONG,
    "step4": STEP4_WRONG,
    "step5b": STEP5_WRONG,
    "step6b": STEP6_WRONG,
}
_unanswered = sorted(set(EXERCISES) - set(CORRECT_ANSWERS))
if _unanswered:
    raise KeyError(f"tests/notebook_solutions.py: write a correct answer for {_unanswered}")

# What the notebook tests fill in: {notebook name: {the name the stub defines: answer}}.
CORRECT = {s.notebook_name: {ex.stub: CORRECT_ANSWERS[ex.key] for ex in s.exercises} for s in STEPS}
WRONG = {
    s.notebook_name: {ex.stub: WRONG_ANSWERS[ex.key] for ex in s.exercises if ex.key in WRONG_ANSWERS}
    for s in STEPS
}
