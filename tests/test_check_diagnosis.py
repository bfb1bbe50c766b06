"""Checkers name the one root cause of a known mistake (issue 10, section 1).

Each gallery entry is diagnosed as itself; the independently written mutants of the
test_check_* files are diagnosed as the entry for their mistake; correct answers pass with no
diagnosis; an answer that matches no entry still gets the per-case report with its hints; and
a crash is reported at the learner's own line, not inside torch.
"""

from __future__ import annotations

import pytest
import test_check_attention as at
import test_check_build as bu
import test_check_contrastive as co
import test_check_distillation_loss as dl
import test_check_projection as pr
import test_check_wrapper as wr
import torch.nn.functional as F

from bevdistill.exercises import (
    check_attention,
    check_build,
    check_contrastive,
    check_distillation_loss,
    check_projection,
    check_wrapper,
)
from bevdistill.exercises.gallery import step1, step2, step3, step4, step5, step6
from bevdistill.exercises.steps import EXERCISES, resolve

pytestmark = pytest.mark.filterwarnings("ignore")  # mutants trip the package's own warnings

# Each checker with the gallery of mistakes it diagnoses, as bevdistill.exercises.steps declares.
GALLERIES = [(resolve(ex.checker), resolve(ex.gallery)) for ex in EXERCISES.values()]
ENTRIES = [(check, entry) for check, gallery in GALLERIES for entry in gallery.entries]


@pytest.mark.parametrize(("check", "entry"), ENTRIES, ids=[f"{c.__name__}:{e.name}" for c, e in ENTRIES])
def test_each_gallery_entry_is_diagnosed_as_itself(check, entry):
    result = check(entry.build(), verbose=False)
    assert not result.passed
    assert result.diagnosis == entry.diagnosis, result.report()
    report = result.report()
    assert report.count("Diagnosis:") == 1 and f"Diagnosis: {entry.diagnosis}" in report
    assert "hint:" not in report  # the static per-case hints give way to the one diagnosis


def test_diagnoses_are_single_sentences_with_a_fix():
    for _, gallery in GALLERIES:
        for entry in gallery.entries:
            text = entry.diagnosis
            assert ": " in text, f"{entry.name}: say the fix after a colon"
            assert text.endswith(".") and ". " not in text[:-1], f"{entry.name}: one sentence"


# The test files' own mutants, written independently of the galleries: gallery entry each must get.
INDEPENDENT = [
    (check_wrapper, wr.TutorialSolution, step1, "the tutorial's wrapper"),
    (check_wrapper, wr.StaleFeatures, step1, "features never cleared"),
    (check_wrapper, wr.ReusedDict, step1, "features cleared in place"),
    (check_wrapper, wr.TeacherNotDetached, step1, "teacher not detached"),
    (check_wrapper, wr.DetachesStudentToo, step1, "student detached"),
    (check_wrapper, wr.FirstElementOnly, step1, "first element only"),
    (check_wrapper, wr.ClearsEveryHook, step1, "clears every hook"),
    (check_wrapper, wr.AlwaysLoss, step1, "mode ignored"),
    (check_wrapper, wr.ForgetsUnknownMode, step1, "unknown mode runs predict"),
    (check_projection, pr.TutorialBatchNorm, step2, "BatchNorm head"),
    (check_projection, pr.NoL2Norm, step2, "no L2 normalisation"),
    (check_projection, pr.NormaliseWrongDim, step2, "normalised over the batch"),
    (check_projection, pr.FlattenSpatial, step2, "positions flattened into channels"),
    (check_projection, pr.No5D, step2, "not every rank pooled"),
    (check_projection, pr.MeanOverChannels, step2, "not every rank pooled"),
    (check_projection, pr.HardcodedOutDim, step2, "out_dim ignored"),
    (check_projection, pr.MaxPool, step2, "max pooling"),
    (check_projection, pr.DropoutAlwaysOn, step2, "dropout always on"),
    (check_projection, pr.DetachedInput, step2, "input detached"),
    (check_contrastive, co.NoTemperature, step3, "no temperature"),
    (check_contrastive, co.TemperatureMultiplied, step3, "temperature multiplied"),
    (check_contrastive, co.OneDirection, step3, "student-to-teacher direction only"),
    (check_contrastive, co.TransposedTwice, step3, "teacher-to-student direction only"),
    (check_contrastive, co.NormaliseDim0, step3, "normalised over the batch"),
    (check_contrastive, co.NoNormalisation, step3, "no normalisation"),
    (check_contrastive, co.ReversedLabels, step3, "wrong labels"),
    (check_contrastive, co.SumReduction, step3, "sum reduction"),
    (check_contrastive, co.DirectionsSummed, step3, "directions summed"),
    (check_contrastive, co.NormWithoutEps, step3, "norm without eps"),
    (check_contrastive, co.DetachedNorm, step3, "detached norm"),
    (check_attention, at.Tutorial, step4, "the tutorial's formula"),
    (check_attention, at.L1Normalised, step4, "L1 normalisation"),
    (check_attention, at.MeanOverCells, step4, "mean over cells"),
    (check_attention, at.NoInterpolation, step4, "grids never resized"),
    (check_attention, at.StudentOnlyArea, step4, "student resized to the teacher's grid"),
    (check_attention, at.BilinearShrink, step4, "bilinear shrinking"),
    (check_attention, at.SquareGridAssumed, step4, "square grid assumed"),
    (check_attention, at.NormaliseDim0, step4, "normalised over the batch"),
    (check_attention, at.SumNoNormalisation, step4, "no normalisation, channels summed"),
    (check_attention, at.PowerOne, step4, "absolute value instead of square"),
    (check_attention, at.TeacherNotDetached, step4, "teacher not detached"),
    (check_attention, at.NoEps, step4, "norm without eps"),
    (check_attention, at.BatchSummed, step4, "sum over the batch"),
    (check_distillation_loss, dl.Tutorial, step5, "the tutorial's loss"),
    (check_distillation_loss, dl.KeysWithoutLoss, step5, "keys without 'loss'"),
    (check_distillation_loss, dl.OneKeyPerLayer, step5, "one key per layer"),
    (check_distillation_loss, dl.AlphaIgnored, step5, "alpha ignored"),
    (check_distillation_loss, dl.TeacherNotDetached, step5, "teacher not detached"),
    (check_distillation_loss, dl.KdUnused, step5, "outputs ignored"),
    (check_distillation_loss, dl.SoftmaxKd, step5, "softmax over classes"),
    (check_distillation_loss, dl.BatchNormProjector, step5, "BatchNorm projectors"),
    (check_distillation_loss, dl.SkipsMissingLayer, step5, "missing layer skipped"),
    (check_distillation_loss, dl.SwallowsErrors, step5, "errors printed and swallowed"),
    (check_distillation_loss, dl.NoFp32Guard, step5, "no float32 guard"),
    (check_build, bu.teacher_not_frozen, step6, "teacher not frozen"),
    (check_build, bu.teacher_follows_mode, step6, "train() not overridden"),
    (check_build, bu.teacher_never_eval, step6, "teacher never in eval mode"),
    (check_build, bu.checkpoint_ignored, step6, "checkpoint ignored"),
    (check_build, bu.channels_typed, step6, "channels typed by hand"),
    (check_build, bu.teacher_registered, step6, "teacher registered as a submodule"),
    (check_build, bu.student_detached, step6, "student features detached"),
    (check_build, bu.no_distillation_terms, step6, "no distillation terms"),
    (check_build, bu.swapped, step6, "teacher and student swapped"),
]


@pytest.mark.parametrize(
    ("check", "mutant", "gallery", "expected"),
    INDEPENDENT,
    ids=[f"{m.__name__}->{e}" for _, m, _, e in INDEPENDENT],
)
def test_independent_mutants_get_the_root_cause_of_their_mistake(check, mutant, gallery, expected):
    (entry,) = [e for e in gallery.ENTRIES if e.name == expected]
    result = check(mutant, verbose=False)
    assert result.diagnosis == entry.diagnosis, result.report()


CORRECT = [
    (check_wrapper, wr.AltWrapper),
    (check_projection, pr.AlternativeProjection),
    (check_contrastive, co.AlternativeContrastive),
    (check_contrastive, co._Base),
    (check_attention, at.AlternativeAttention),
    (check_distillation_loss, dl.AlternativeDistillationLoss),
    (check_build, bu.alt_build),
]


@pytest.mark.parametrize(("check", "impl"), CORRECT, ids=[i.__name__ for _, i in CORRECT])
def test_correct_variants_pass_without_a_diagnosis(check, impl):
    result = check(impl, verbose=False)
    assert result.passed and result.diagnosis is None, result.report()


class TwoMistakes(co._Base):
    """One direction and no normalisation: no single entry explains it."""

    def normalise(self, x):
        return x

    def forward(self, student_feat, teacher_feat):
        logits = self.logits(student_feat, teacher_feat)
        return F.cross_entropy(logits, self.labels(logits.shape[0]))


def test_an_answer_matching_no_entry_still_gets_the_per_case_report():
    result = check_contrastive(TwoMistakes, verbose=False)
    assert not result.passed and result.diagnosis is None
    report = result.report()
    assert "Diagnosis:" not in report
    assert "✗ symmetric: both directions are averaged" in report and "hint:" in report


class CrashesInTorch(co._Base):
    def logits(self, s, t):
        return self.normalise(s) @ self.normalise(t)  # forgot .T: a shape error inside torch


def test_a_crash_is_reported_at_the_learners_own_line():
    result = check_contrastive(CrashesInTorch, verbose=False)
    details = [o.detail for o in result.outcomes if o.status == "fail"]
    assert details and all("your code raised RuntimeError" in d for d in details)
    assert all(f"{__file__}, line " in d for d in details), details[0]
    assert all("return self.normalise(s) @ self.normalise(t)  # forgot .T" in d for d in details)
    assert all("functional.py" not in d and "/torch/" not in d for d in details)
