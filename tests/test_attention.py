"""Attention transfer (step 4): maps, normalisation, magnitude, size mismatch, masks, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from warnings_support import reset_warnings

from bevdistill import AttentionTransferLoss, attention_map
from bevdistill._warnings import DegenerateInputWarning
from bevdistill.bev_grid import resize_bev
from bevdistill.losses.attention import tutorial_attention_loss as tutorial_loss


def blobby(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Features whose energy concentrates around one random point per sample."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    centre = torch.rand(b, 2, 1, 1, generator=g) - 0.5
    blob = torch.exp(-((ys - centre[:, :1]) ** 2 + (xs - centre[:, 1:]) ** 2) / 0.05)
    return torch.randn(b, c, h, w, generator=g) * (0.3 + 2 * blob)


def manual_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The documented default, written out: area-pool raw maps to the smaller grid, L2, sum."""
    a_s, a_t = s.pow(2).mean(1, keepdim=True), t.pow(2).mean(1, keepdim=True)
    size = (min(a_s.shape[2], a_t.shape[2]), min(a_s.shape[3], a_t.shape[3]))
    a_s, a_t = F.adaptive_avg_pool2d(a_s, size), F.adaptive_avg_pool2d(a_t, size)
    a_s = a_s.flatten(1) / a_s.flatten(1).norm(dim=1, keepdim=True)
    a_t = a_t.flatten(1) / a_t.flatten(1).norm(dim=1, keepdim=True)
    return (a_s - a_t).pow(2).sum(1).mean()


# --- attention_map -------------------------------------------------------------------------


def test_attention_map_shapes_and_normalisations():
    x = torch.randn(2, 6, 5, 7)
    raw = attention_map(x, normalization="none")
    assert raw.shape == (2, 35)
    torch.testing.assert_close(raw, x.pow(2).mean(1).flatten(1))
    torch.testing.assert_close(attention_map(x).norm(dim=1), torch.ones(2))
    torch.testing.assert_close(attention_map(x, normalization="l1").sum(1), torch.ones(2))
    torch.testing.assert_close(
        attention_map(x, p=1, normalization="none"), x.abs().mean(1).flatten(1)
    )


def test_attention_map_voxels_fold_height_into_channels_and_points_keep_n():
    vox = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(attention_map(vox), attention_map(vox.reshape(2, 12, 5, 6)))
    assert attention_map(torch.randn(2, 3, 9)).shape == (2, 9)


@pytest.mark.parametrize("shape", [(2, 8), (2, 3, 4, 5, 6, 7)])
def test_attention_map_rejects_non_spatial_input(shape):
    with pytest.raises(ValueError, match="spatial map"):
        attention_map(torch.randn(*shape))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="normalization"):
        AttentionTransferLoss(normalization="softmax")
    with pytest.raises(ValueError, match="reduction"):
        AttentionTransferLoss(reduction="max")
    with pytest.raises(ValueError, match="p must be positive"):
        AttentionTransferLoss(p=0)


# --- values --------------------------------------------------------------------------------


def test_default_is_l2_maps_summed_over_cells():
    s, t = blobby(3, 4, 9, 11, seed=1), blobby(3, 7, 9, 11, seed=2)
    torch.testing.assert_close(AttentionTransferLoss()(s, t), manual_loss(s, t))


def test_hand_computed_two_cell_example():
    # raw maps [1, 0] and [0, 1]: unit vectors, squared distance 2
    s = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    t = torch.tensor([0.0, 3.0]).view(1, 1, 1, 2)
    assert float(AttentionTransferLoss()(s, t)) == pytest.approx(2.0)
    assert float(AttentionTransferLoss(reduction="mean")(s, t)) == pytest.approx(1.0)


def test_loss_is_zero_for_identical_and_bounded_by_four():
    t = blobby(2, 8, 16, 16)
    assert float(AttentionTransferLoss()(t.clone(), t)) == pytest.approx(0.0, abs=1e-7)
    for seed in range(3):
        value = float(
            AttentionTransferLoss()(blobby(2, 8, 16, 16, seed), blobby(2, 3, 16, 16, seed + 9))
        )
        assert 0.0 < value <= 4.0


def test_channel_free_and_scale_free():
    s, t = blobby(2, 4, 16, 16, 1), blobby(2, 6, 16, 16, 2)
    base = AttentionTransferLoss()(s, t)
    torch.testing.assert_close(AttentionTransferLoss()(torch.cat([s, s], 1) * 5, t), base)


def test_l1_mean_reproduces_the_tutorial_on_one_grid():
    s, t = blobby(2, 8, 20, 20, 1), blobby(2, 8, 20, 20, 2)
    loss = AttentionTransferLoss(normalization="l1", reduction="mean")(s, t)
    torch.testing.assert_close(loss, tutorial_loss(s, t))


def test_tutorial_magnitude_vanishes_on_a_bevfusion_grid_ours_does_not():
    """Regression: L1 maps + MSE give ~1e-8 at 180x180, orders below a usable loss."""
    s, t = torch.randn(2, 16, 180, 180), blobby(2, 16, 180, 180)
    tutorial = float(tutorial_loss(s, t))
    ours = float(AttentionTransferLoss()(s, t))
    assert tutorial < 1e-7
    assert ours > 0.1
    assert ours / tutorial > 1e6


def test_default_value_does_not_depend_on_grid_size():
    """The same pattern on a 32x32 and a 128x128 grid gives about the same loss (not 1/HW^2)."""
    values = []
    for n in (32, 128):
        s = resize_bev(blobby(2, 8, 32, 32, 1), (n, n))
        t = resize_bev(blobby(2, 8, 32, 32, 2), (n, n))
        values.append(float(AttentionTransferLoss()(s, t)))
    assert values[1] == pytest.approx(values[0], rel=0.2)


# --- size mismatch -------------------------------------------------------------------------


def test_student_larger_pools_the_students_map():
    s, t = blobby(2, 4, 64, 48, 1), blobby(2, 8, 16, 12, 2)
    pooled = F.adaptive_avg_pool2d(s.pow(2).mean(1, keepdim=True), (16, 12)).sqrt()
    torch.testing.assert_close(AttentionTransferLoss()(s, t), AttentionTransferLoss()(pooled, t))


def test_teacher_larger_pools_the_teachers_map_and_a_perfect_student_reaches_zero():
    s, t = blobby(2, 4, 16, 12, 1), blobby(2, 8, 48, 36, 2)
    pooled = F.adaptive_avg_pool2d(t.pow(2).mean(1, keepdim=True), (16, 12)).sqrt()
    torch.testing.assert_close(AttentionTransferLoss()(s, t), AttentionTransferLoss()(s, pooled))
    perfect = pooled.expand(-1, 4, -1, -1)
    assert float(AttentionTransferLoss()(perfect, t)) < 1e-6
    # Regression: the tutorial upsamples the student, leaving a floor a perfect student cannot beat.
    assert float(tutorial_loss(perfect, t)) > 0


def test_non_square_and_mixed_direction_grids():
    for (hs, ws), (ht, wt) in [((20, 30), (40, 60)), ((24, 12), (12, 24))]:
        s, t = blobby(2, 3, hs, ws, 1), blobby(2, 5, ht, wt, 2)
        torch.testing.assert_close(AttentionTransferLoss()(s, t), manual_loss(s, t))


def test_area_pooling_sees_cells_that_bilinear_downsampling_skips():
    """Regression: the tutorial shrinks with bilinear interpolation, blind to 3 of 4 cells at 4x."""
    t = blobby(1, 4, 8, 8, 2)
    quiet = torch.ones(1, 4, 32, 32)
    peaks = quiet.clone()
    peaks[..., ::4, :16:4] = 10.0  # one hot cell in each 4x4 block of the left half
    ours = AttentionTransferLoss()
    assert abs(float(ours(peaks, t)) - float(ours(quiet, t))) > 1e-3
    bilinear = [
        F.interpolate(x.pow(2).mean(1, keepdim=True), size=(8, 8), mode="bilinear")
        for x in (quiet, peaks)
    ]
    torch.testing.assert_close(bilinear[0], bilinear[1])


def test_point_features_need_the_same_number_of_points():
    s, t = torch.randn(2, 4, 50), torch.randn(2, 8, 50)
    torch.testing.assert_close(
        AttentionTransferLoss()(s, t), manual_loss(s.unsqueeze(2), t.unsqueeze(2))
    )
    with pytest.raises(ValueError, match="scatter them to a BEV grid"):
        AttentionTransferLoss()(s, torch.randn(2, 8, 40))


def test_voxel_features_compare_on_the_bev_grid():
    s, t = torch.randn(2, 3, 4, 8, 8), blobby(2, 6, 16, 16)
    torch.testing.assert_close(
        AttentionTransferLoss()(s, t), manual_loss(s.reshape(2, 12, 8, 8), t)
    )


def test_batch_mismatch_and_bad_input_raise():
    with pytest.raises(ValueError, match="batch sizes differ"):
        AttentionTransferLoss()(torch.randn(2, 4, 8, 8), torch.randn(3, 4, 8, 8))
    with pytest.raises(TypeError, match="tensor"):
        AttentionTransferLoss()([torch.randn(2, 4, 8, 8)], torch.randn(2, 4, 8, 8))


# --- masks ---------------------------------------------------------------------------------


def test_all_ones_mask_equals_no_mask_in_every_layout():
    s, t = blobby(2, 4, 16, 16, 1), blobby(2, 8, 32, 32, 2)
    base = AttentionTransferLoss()(s, t)
    for mask in (torch.ones(2, 16, 16), torch.ones(2, 1, 64, 64), torch.ones(2, 3, 8, 8)):
        torch.testing.assert_close(AttentionTransferLoss()(s, t, mask=mask), base)


def test_mask_ignores_cells_outside_it_and_is_resized():
    s, t = blobby(2, 4, 16, 16, 1), blobby(2, 8, 16, 16, 2)
    mask = torch.zeros(2, 32, 32)
    mask[:, :16, :16] = 1.0  # top-left quarter, given on a finer grid
    changed = s.clone()
    changed[..., 8:, 8:] *= 5  # outside the mask
    loss = AttentionTransferLoss()
    torch.testing.assert_close(loss(changed, t, mask=mask), loss(s, t, mask=mask))
    assert float(loss(changed, t)) != pytest.approx(float(loss(s, t)))
    inside = manual_loss(s[..., :8, :8], t[..., :8, :8])
    torch.testing.assert_close(loss(s, t, mask=mask), inside)


def test_bad_masks_raise():
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="batch size"):
        AttentionTransferLoss()(s, t, mask=torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match=">= 0"):
        AttentionTransferLoss()(s, t, mask=-torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="expected"):
        AttentionTransferLoss()(s, t, mask=torch.ones(2, 8))


# --- degenerate input and gradients -----------------------------------------------------------


def test_zero_features_and_empty_mask_give_finite_values_and_warn_once():
    reset_warnings()
    s = torch.zeros(2, 4, 8, 8, requires_grad=True)
    with pytest.warns(DegenerateInputWarning, match="all zero"):
        loss = AttentionTransferLoss()(s, torch.randn(2, 4, 8, 8))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    empty = AttentionTransferLoss()(
        torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), mask=torch.zeros(2, 8, 8)
    )
    assert float(empty) == 0.0
    zeros = AttentionTransferLoss()(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8))
    assert float(zeros) == 0.0
    reset_warnings()


def test_teacher_gets_no_gradient():
    s = blobby(2, 4, 8, 8, 1).requires_grad_(True)
    t = blobby(2, 4, 8, 8, 2).requires_grad_(True)
    AttentionTransferLoss()(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().max() > 0


@pytest.mark.parametrize("normalization", ["l2", "l1"])
def test_gradcheck_with_size_mismatch_and_mask(normalization):
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(2, 3, 6, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    t = torch.rand(2, 5, 3, 8, generator=g, dtype=torch.float64) + 0.1
    mask = torch.rand(2, 12, 8, generator=g, dtype=torch.float64)
    loss = AttentionTransferLoss(normalization=normalization)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, mask=mask), (s,))
