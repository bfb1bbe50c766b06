"""Every defect a notebook demonstrates is rejected by its step's checker, naming its cause
(issue 20, item 4). The table says which notebook shows it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mistakes import later_set, step1, step2, step3, step4, step5, step6

from bevdistill.exercises.steps import EXERCISES, resolve

pytestmark = pytest.mark.filterwarnings("ignore")


def _named(module, name):
    return next(m.impl for m in module.MISTAKES if m.name == name)


class DetachesTuples(step1._Base):
    """Notebook 01: the tutorial calls .detach() on every capture, a tuple included."""

    def prepare(self, output):
        return output if self.is_student else output.detach()


class HooksALayerThatNeverRuns(step1._Base):
    """Notebook 01: a hook on pts_voxel_encoder, which the detector never calls."""

    def __init__(self, model, is_student=False):
        super().__init__(model, is_student)
        self.close()
        names = ("pts_voxel_encoder", "pts_backbone", "pts_neck")
        self.handles = [model.get_submodule(n).register_forward_hook(self.hook(n)) for n in names]


class MeanOverNegatives(step3._Base):
    """Notebook 03: a loss that averages over the B - 1 negatives is NaN at B = 1."""

    def combine(self, logits, labels):
        b = logits.shape[0]
        return super().combine(logits, labels) * b / (b - 1)


TAUGHT = [
    ("01", "tuple outputs detached with .detach()", "step1", DetachesTuples, None),
    ("01", "a hook point that never fires", "step1", HooksALayerThatNeverRuns, "captured"),
    ("01", "hooks that stack up", "step1", later_set.HooksInForward, "stacked"),
    ("01", "hooks never removed (no close)", "step1", _named(step1, "the tutorial's wrapper"), "close"),
    ("02", "BatchNorm at batch size 1", "step2", _named(step2, "BatchNorm head"), "batchnorm"),
    ("02", "an embedding that depends on the batch", "step2", later_set.BatchNormSkippedAtOne, "batchnorm"),
    ("03", "a loss that is not 0 at B = 1", "step3", MeanOverNegatives, "batch1"),
    ("04", "raw (un-normalised) attention maps", "step4", later_set.RawMeanMaps, "scale"),
    ("04", "the tutorial's vanishing L1 / mean formula", "step4", _named(step4, "the tutorial's formula"), "l1"),
    ("04", "bilinear shrinking", "step4", _named(step4, "bilinear shrinking"), "shrink"),
    ("05", "errors printed and swallowed", "step5b", _named(step5, "errors printed and swallowed"), "channels"),
    ("05", "a missing pts_neck skipped", "step5b", _named(step5, "missing layer skipped"), "missing-layer"),
    ("05", "softmax over heatmap classes", "step5b", _named(step5, "softmax over classes"), "kd-sigmoid"),
    ("06", "teacher in parameters() and state_dict()", "step6b",
     _named(step6, "teacher registered as a submodule"), "outside"),
    ("06", "teacher back in train mode after train()", "step6b", _named(step6, "train() not overridden"), "eval"),
    ("06", "gradients into the teacher", "step6b", _named(step6, "teacher not frozen"), "frozen"),
]


@pytest.mark.parametrize(("notebook", "defect", "key", "impl", "cause"), TAUGHT,
                         ids=[f"{n}:{d}" for n, d, *_ in TAUGHT])
def test_a_defect_the_notebook_shows_is_rejected(notebook, defect, key, impl, cause):
    result = resolve(EXERCISES[key].checker)(impl, verbose=False)
    assert not result.passed and not result.not_implemented, result.report()
    if cause is not None:
        assert cause in result.causes, result.report()
    assert torch is not None and F is not None
