"""The later set: wrong answers written after the probes were final, none taken from the galleries.

Variants of known mistakes and two mistakes at once, with the causes a checker must name, plus
correct answers written differently that must pass with no diagnosis. The correct scaffolding
(``_Base`` classes) is the step modules'; every mistake here is new.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bevdistill.capture import FeatureRecorder
from bevdistill.distiller import example_inputs_for
from mistakes import Mistake, step1, step3, step5, step6, step6a

# --- step 1 -------------------------------------------------------------------------------------


class HooksInForward(step1._Base):
    """Registers its hooks at every forward (and removes them all in close): they stack."""

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        self.handles += [self.model.get_submodule(n).register_forward_hook(self.hook(n)) for n in step1.LAYERS]
        return super().forward(batch_inputs_dict, batch_data_samples, mode)


class TuplesKeepGraph(step1._Base):
    """Detaches single tensors but keeps a tuple's or list's tensors with their graph."""

    def prepare(self, output):
        if isinstance(output, (tuple, list)):
            return output
        return output if self.is_student else output.detach()


class StaleAndUndetached(step1._Base):
    def prepare(self, output):
        return output

    def forward(self, batch_inputs_dict, batch_data_samples=None, mode="loss"):
        return self.run(mode)(batch_inputs_dict, batch_data_samples), self.features


# --- step 2 -------------------------------------------------------------------------------------


class _Head(nn.Module):
    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, out_dim))

    def pool(self, x):
        return x.flatten(2).mean(2) if x.dim() > 2 else x

    def forward(self, x):
        return F.normalize(self.net(self.pool(x)), dim=1)


class SumPooling(_Head):
    def pool(self, x):
        return x.flatten(2).sum(2) if x.dim() > 2 else x


class ReluAtTheEnd(_Head):
    def forward(self, x):
        return F.normalize(F.relu(self.net(self.pool(x))), dim=1)


class BatchNormSkippedAtOne(_Head):
    """BatchNorm, bypassed when the batch has one sample: it still mixes the samples of a batch."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__(in_dim, hidden_dim, out_dim)
        self.net[1] = nn.BatchNorm1d(hidden_dim)

    def forward(self, x):
        x = self.pool(x)
        h = self.net[0](x)
        h = self.net[1](h) if h.shape[0] > 1 else h
        return F.normalize(self.net[3](self.net[2](h)), dim=1)


class MaxPoolNoNorm(_Head):
    def pool(self, x):
        return x.flatten(2).amax(2) if x.dim() > 2 else x

    def forward(self, x):
        return self.net(self.pool(x))


class GeluHead(nn.Module):
    """Correct, written differently: GELU, LayerNorm first, a mean over a tuple of dimensions."""

    def __init__(self, in_dim, hidden_dim=256, out_dim=128):
        super().__init__()
        self.norm, self.fc1 = nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim)
        self.fc2, self.drop = nn.Linear(hidden_dim, out_dim), nn.Dropout(0.1)

    def forward(self, x):
        if x.dim() > 2:
            x = x.mean(dim=tuple(range(2, x.dim())))
        return F.normalize(self.fc2(self.drop(F.gelu(self.fc1(self.norm(x))))), p=2, dim=-1)


# --- step 3 -------------------------------------------------------------------------------------


class TemperatureTwice(step3._Base):
    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t).T / self.temperature / self.temperature


class SoftmaxFirst(step3._Base):
    def combine(self, logits, labels):
        p = logits.softmax(dim=1)
        return (F.cross_entropy(p, labels) + F.cross_entropy(p.T, labels)) / 2


class GlobalNorm(step3._Base):
    def normalise(self, x):
        return x / x.norm()


class OneWayUnnormalised(step3._Base):
    def normalise(self, x):
        return x

    def combine(self, logits, labels):
        return F.cross_entropy(logits.T, labels)


class NormalisesInPlace(step3._Base):
    def normalise(self, x):
        return x.div_(x.norm(dim=1, keepdim=True).clamp_min(1e-12))


class LogSumExpInfoNCE(nn.Module):
    """Correct, written differently: logsumexp along each axis minus the diagonal."""

    def __init__(self, temperature=0.07):
        super().__init__()
        self.t = temperature

    def forward(self, student_feat, teacher_feat):
        sim = F.cosine_similarity(student_feat[:, None], teacher_feat[None], dim=-1, eps=1e-12) / self.t
        pos = sim.diagonal()
        return ((sim.logsumexp(1) - pos).mean() + (sim.logsumexp(0) - pos).mean()) / 2


# --- step 4 -------------------------------------------------------------------------------------


class _Attention(nn.Module):
    def energy(self, f):
        return f.pow(2).mean(1, keepdim=True)

    def shrink(self, a, size):
        return F.adaptive_avg_pool2d(a, size)

    def unit(self, a):
        return F.normalize(a.flatten(1), dim=1)

    def forward(self, student_feat, teacher_feat):
        a_s, a_t = self.energy(student_feat), self.energy(self.teacher(teacher_feat))
        size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
        a_s, a_t = self.unit(self.shrink(a_s, size)), self.unit(self.shrink(a_t, size))
        return (a_s - a_t).pow(2).sum(1).mean()

    def teacher(self, f):
        return f.detach()


class RawMeanMaps(_Attention):
    def unit(self, a):
        return a.flatten(1)


class FourthPower(_Attention):
    def energy(self, f):
        return f.pow(4).mean(1, keepdim=True)


class NearestShrink(_Attention):
    def shrink(self, a, size):
        return F.interpolate(a, size=size, mode="nearest")


class L1AndTeacherGrad(_Attention):
    def unit(self, a):
        return F.normalize(a.flatten(1), p=1, dim=1)

    def teacher(self, f):
        return f


class KernelPooledAttention(nn.Module):
    """Correct, written differently: avg_pool2d by the integer ratio, norms by hand with a clamp."""

    def forward(self, student_feat, teacher_feat):
        maps = [(f * f).sum(1, keepdim=True) / f.shape[1] for f in (student_feat, teacher_feat.detach())]
        h, w = min(m.shape[2] for m in maps), min(m.shape[3] for m in maps)
        maps = [F.avg_pool2d(m, (m.shape[2] // h, m.shape[3] // w)) for m in maps]
        vecs = [m.reshape(m.shape[0], -1) for m in maps]
        vecs = [v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-12) for v in vecs]
        return ((vecs[0] - vecs[1]) ** 2).sum(dim=1).mean()


# --- step 5a ------------------------------------------------------------------------------------


def _bkl(s, t):
    p = t.sigmoid()
    return F.binary_cross_entropy_with_logits(s, p, reduction="none") - F.binary_cross_entropy_with_logits(
        t, p, reduction="none")


def reversed_mean_kd(student_logits, teacher_logits):
    return _bkl(teacher_logits.detach(), student_logits).mean()


def mse_undetached_kd(student_logits, teacher_logits):
    return F.mse_loss(student_logits.sigmoid(), teacher_logits.sigmoid())


def logsigmoid_kd(student_logits, teacher_logits):
    """Correct, written differently: the binary KL from log-sigmoids."""
    t = teacher_logits.detach()
    p, q = t.sigmoid(), 1 - t.sigmoid()
    ls, lt = F.logsigmoid(student_logits), F.logsigmoid(t)
    ls_neg, lt_neg = F.logsigmoid(-student_logits), F.logsigmoid(-t)
    return (p * (lt - ls) + q * (lt_neg - ls_neg)).sum(1).mean()


# --- step 5 -------------------------------------------------------------------------------------


class AlphaAtIgnored(step5._Base):
    def weight(self, term):
        return 1.0 if term == "at" else self.alpha[term]


class SoftmaxKdUndetached(step5._Base):
    def kd_term(self, s_out, t_out):
        return F.kl_div(F.log_softmax(s_out, 1), F.softmax(t_out, 1), reduction="batchmean")

    def teacher(self, x):
        return x


# --- step 6a / 6 --------------------------------------------------------------------------------


def measure_and_leave_it(model):
    """Eval mode never undone, and hooks whose handles are dropped."""
    model.eval()
    features = {}
    for name in step6a.LAYERS:
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: features.__setitem__(name, o[-1] if isinstance(o, (tuple, list)) else o))
    with torch.no_grad():
        model(example_inputs_for(model), mode="tensor")
    return {k: v.shape[1] for k, v in features.items()}


def measure_with_recorder(model):
    """Correct, written differently: a recorder without a with block, closed in finally."""
    was = model.training
    rec = FeatureRecorder(model, step6a.LAYERS, select={"pts_backbone": -1}, detach=True)
    try:
        model.eval()
        with torch.no_grad(), rec.recording() as captured:
            model(example_inputs_for(model), mode="tensor")
        return {k: int((v[0] if isinstance(v, (tuple, list)) else v).shape[1]) for k, v in dict(captured).items()}
    finally:
        rec.close()
        model.train(was)


WRONG = [
    Mistake("step1: hooks registered at every forward", HooksInForward, ("stacked",)),
    Mistake("step1: tuple outputs keep the teacher's graph", TuplesKeepGraph, ("teacher-detach",)),
    Mistake("step1: stale features and an undetached teacher", StaleAndUndetached, ("stale", "teacher-detach")),
    Mistake("step2: sum pooling", SumPooling, ("pooling-sum",)),
    Mistake("step2: ReLU after the last Linear", ReluAtTheEnd, ("negative",)),
    Mistake("step2: BatchNorm skipped at batch size 1", BatchNormSkippedAtOne, ("batchnorm",)),
    Mistake("step2: max pooling and no L2 norm", MaxPoolNoNorm, ("l2", "pooling-max")),
    Mistake("step3: temperature applied twice", TemperatureTwice, ("tau-squared",)),
    Mistake("step3: softmax before cross_entropy", SoftmaxFirst, ("probabilities",)),
    Mistake("step3: one norm for the whole batch", GlobalNorm, ("rows",)),
    Mistake("step3: one direction, no normalisation", OneWayUnnormalised, ("scale", "one-direction")),
    Mistake("step3: inputs normalised in place", NormalisesInPlace, ("in-place",)),
    Mistake("step4: raw maps", RawMeanMaps, ("scale",)),
    Mistake("step4: fourth power", FourthPower, ("square",)),
    Mistake("step4: nearest-neighbour shrinking", NearestShrink, ("shrink",)),
    Mistake("step4: L1 maps and a teacher gradient", L1AndTeacherGrad, ("teacher-grad", "l1")),
    Mistake("step5a: reversed KL, mean over classes", reversed_mean_kd, ("reversed", "mean-classes")),
    Mistake("step5a: MSE, teacher undetached", mse_undetached_kd, ("teacher-grad", "mse")),
    Mistake("step5b: alpha_at ignored", AlphaAtIgnored, ("alpha",)),
    Mistake("step5b: softmax kd and an undetached teacher", SoftmaxKdUndetached, ("teacher-grad", "kd-sigmoid")),
    Mistake("step6a: mode not restored, hooks left", measure_and_leave_it, ("mode", "hooks")),
    Mistake("step6b: teacher neither frozen nor in eval mode",
            step6._builder(freeze=False, eval_teacher=False), ("frozen", "eval")),
]

CORRECT = [
    Mistake("step2: GELU head", GeluHead, ()),
    Mistake("step3: logsumexp InfoNCE", LogSumExpInfoNCE, ()),
    Mistake("step4: kernel-pooled attention", KernelPooledAttention, ()),
    Mistake("step5a: log-sigmoid KL", logsigmoid_kd, ()),
    Mistake("step6a: recorder closed in finally", measure_with_recorder, ()),
]
