"""Response distillation on class heatmaps: binary KL per class, weighting, inputs, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill import HeatmapDistillationLoss
from bevdistill.bev_grid import resize_bev
from bevdistill.losses.response import heatmap_logits


def logits(b=2, k=3, h=8, w=8, seed=0, shift=0.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, h, w, generator=g, dtype=dtype) * 2 + shift


def binary_kl(s: torch.Tensor, t: torch.Tensor, temp: float = 1.0) -> torch.Tensor:
    """KL(Bernoulli(p_t) || Bernoulli(p_s)) per element, written out in float64."""
    p_s, p_t = torch.sigmoid(s.double() / temp), torch.sigmoid(t.double() / temp)
    return p_t * (p_t / p_s).log() + (1 - p_t) * ((1 - p_t) / (1 - p_s)).log()


def test_zero_for_identical_heatmaps_positive_otherwise():
    t = logits(seed=1)
    for weighting in ("teacher", None):
        loss = HeatmapDistillationLoss(weighting=weighting)
        assert float(loss(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
        assert float(loss(logits(seed=2), t)) > 0.01


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_plain_mean_is_binary_kl_summed_over_classes_times_t_squared(temp):
    s, t = logits(seed=1), logits(seed=2, shift=-2)
    expected = binary_kl(s, t, temp).sum(1).mean() * temp**2
    got = HeatmapDistillationLoss(temperature=temp, weighting=None)(s, t)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_teacher_weighting_is_a_weighted_mean_by_teacher_confidence():
    s, t = logits(seed=1), logits(seed=2, shift=-2)
    per_cell = binary_kl(s, t).sum(1)
    weight = torch.sigmoid(t.double()).amax(1)
    expected = (weight * per_cell).sum() / weight.sum()
    assert float(HeatmapDistillationLoss()(s, t)) == pytest.approx(float(expected), rel=1e-5)


def test_uniform_teacher_confidence_reduces_to_the_plain_mean():
    s = logits(seed=1)
    t = torch.full_like(s, -1.0)
    t[:, 0] = 0.5  # every cell's max class probability is the same
    torch.testing.assert_close(
        HeatmapDistillationLoss()(s, t), HeatmapDistillationLoss(weighting=None)(s, t)
    )


def test_teacher_weighting_emphasises_object_cells():
    t = torch.full((1, 2, 4, 4), -6.0)
    t[0, 0, 1, 1] = 4.0  # one object cell
    wrong_on_object, wrong_on_road = t.clone(), t.clone()
    wrong_on_object[0, 0, 1, 1] = -4.0
    wrong_on_road[0, 0, 3, 3] = 4.0
    weighted = HeatmapDistillationLoss()
    plain = HeatmapDistillationLoss(weighting=None)
    assert float(plain(wrong_on_object, t)) == pytest.approx(
        float(plain(wrong_on_road, t)), rel=0.05
    )
    assert float(weighted(wrong_on_object, t)) > 5 * float(weighted(wrong_on_road, t))


def test_softmax_kl_of_the_tutorial_cannot_see_objects_everywhere():
    """Regression: KLDivLoss over a class softmax is 0 when the student fires every class
    everywhere and the teacher sees only background; the binary KL is large."""
    background = torch.full((2, 3, 8, 8), -6.0)
    everywhere = torch.full((2, 3, 8, 8), 6.0)
    softmax_kl = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(everywhere, 1), F.softmax(background, 1)
    )
    assert float(softmax_kl) == pytest.approx(0.0, abs=1e-6)
    assert float(HeatmapDistillationLoss()(everywhere, background)) > 10


def test_student_on_another_grid_is_resized_to_the_teachers():
    s, t = logits(h=16, w=12, seed=1), logits(h=8, w=6, seed=2)
    loss = HeatmapDistillationLoss()
    torch.testing.assert_close(loss(s, t), loss(resize_bev(s, (8, 6)), t))
    small = logits(h=4, w=3, seed=3)
    torch.testing.assert_close(loss(small, t), loss(resize_bev(small, (8, 6)), t))


def test_accepts_tensor_dict_and_per_task_lists():
    s, t = logits(k=3, seed=1), logits(k=3, seed=2)
    loss = HeatmapDistillationLoss()
    base = loss(s, t)
    torch.testing.assert_close(loss({"heatmap": s, "reg": s[:, :2]}, {"heatmap": t}), base)
    s_tasks = [{"heatmap": s[:, :1]}, {"heatmap": s[:, 1:]}]
    t_tasks = (
        [{"heatmap": t[:, :1]}, {"heatmap": t[:, 1:]}],
    )  # mmdet3d CenterHead: levels x tasks
    torch.testing.assert_close(loss(s_tasks, t_tasks), base)
    torch.testing.assert_close(heatmap_logits(t_tasks), t)
    torch.testing.assert_close(
        HeatmapDistillationLoss(key="dense_heatmap")({"dense_heatmap": s}, t), base
    )


def test_bad_inputs_raise_clear_errors():
    s, t = logits(k=3), logits(k=3)
    loss = HeatmapDistillationLoss()
    with pytest.raises(ValueError, match="class count"):
        loss(logits(k=2), t)
    with pytest.raises(ValueError, match="batch size"):
        loss(logits(b=3), t)
    with pytest.raises(KeyError, match="reg"):
        loss({"reg": s}, t)
    with pytest.raises(TypeError, match="heatmap logits"):
        loss("heatmap", t)
    with pytest.raises(ValueError, match=r"\[B, K, H, W\]"):
        loss(s[0], t)
    with pytest.raises(ValueError, match="temperature"):
        HeatmapDistillationLoss(temperature=0)
    with pytest.raises(ValueError, match="weighting"):
        HeatmapDistillationLoss(weighting="student")


def test_teacher_is_detached():
    s = logits(seed=1).requires_grad_(True)
    t = logits(seed=2).requires_grad_(True)
    HeatmapDistillationLoss()(s, t).backward()
    assert t.grad is None
    assert s.grad.abs().max() > 0


@pytest.mark.parametrize("weighting", ["teacher", None])
def test_gradcheck(weighting):
    s = logits(b=2, k=2, h=4, w=6, seed=1, dtype=torch.float64).requires_grad_(True)
    t = logits(b=2, k=2, h=2, w=3, seed=2, dtype=torch.float64)
    loss = HeatmapDistillationLoss(temperature=2.0, weighting=weighting)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))
