"""Step 3: ContrastiveLoss (tutorial InfoNCE), SpatialContrastiveLoss, MemoryBankContrastiveLoss."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from warnings_support import reset_warnings

from bevdistill import (
    ContrastiveLoss,
    MemoryBankContrastiveLoss,
    SpatialContrastiveLoss,
    SpatialProjector,
    resize_bev,
)
from bevdistill._warnings import DegenerateInputWarning
from bevdistill.bev_grid import cell_centres, sample_cells
from bevdistill.losses.contrastive import draw_cells, foreground_weights


@pytest.fixture(autouse=True)
def _fresh():
    torch.manual_seed(0)
    reset_warnings()
    yield
    reset_warnings()


def tutorial_infonce(student, teacher, temperature):
    """Step 3's solution, verbatim in substance: the oracle for ContrastiveLoss, and (on the
    [K, D] cells of one sample) for the spatial loss."""
    student = F.normalize(student, dim=1)
    teacher = F.normalize(teacher, dim=1)
    logits = torch.matmul(student, teacher.T) / temperature
    labels = torch.arange(student.size(0))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- ContrastiveLoss --------------------------------------------------------------------


@pytest.mark.parametrize("batch,temperature", [(2, 0.07), (4, 0.07), (8, 0.5)])
def test_contrastive_matches_tutorial(batch, temperature):
    s, t = torch.randn(batch, 16) * 3, torch.randn(batch, 16) - 1
    expected = tutorial_infonce(s, t, temperature)
    torch.testing.assert_close(ContrastiveLoss(temperature)(s, t), expected)


def test_contrastive_batch1_is_zero_and_warned_once():
    """Regression: at B=1 InfoNCE has no negative; the loss is 0, so we say so (once)."""
    loss = ContrastiveLoss()
    s = torch.randn(1, 8, requires_grad=True)
    with pytest.warns(DegenerateInputWarning, match="SpatialContrastiveLoss"):
        value = loss(s, torch.randn(1, 8))
    value.backward()
    assert value.item() == 0.0 and torch.all(s.grad == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(s, torch.randn(1, 8))  # second time: silent


def test_contrastive_zero_vectors_give_no_nan():
    s = torch.randn(3, 8)
    s[0] = 0
    s.requires_grad_(True)
    t = torch.zeros(3, 8)
    value = ContrastiveLoss()(s, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    torch.testing.assert_close(value, torch.tensor(math.log(3)))  # all logits 0: chance level


def test_contrastive_validation():
    loss = ContrastiveLoss()
    with pytest.raises(ValueError, match=r"same shape \[B, D\].*ProjectionMLP"):
        loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="ProjectionMLP"):
        loss(torch.randn(4, 8, 3), torch.randn(4, 8, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.full((2, 4), float("nan")), torch.randn(2, 4))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.randn(0, 4), torch.randn(0, 4))
    for bad in (0.0, -0.1, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            ContrastiveLoss(bad)


def test_contrastive_gradcheck():
    s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ContrastiveLoss(0.2), (s, t))


# --- SpatialContrastiveLoss ---------------------------------------------------------------


def test_spatial_gives_useful_gradient_at_batch1_where_global_gives_none():
    """Regression: at B=1 the global loss is 0; the spatial one is not, and training lowers it."""
    teacher = torch.randn(1, 16, 8, 8)
    student = torch.randn(1, 16, 8, 8, requires_grad=True)
    with pytest.warns(DegenerateInputWarning):
        global_loss = ContrastiveLoss()(student.mean(dim=(2, 3)), teacher.mean(dim=(2, 3)))
    assert global_loss.item() == 0.0

    spatial = SpatialContrastiveLoss(temperature=0.1, num_samples=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no degenerate-input warning at B=1
        first = spatial(student, teacher)
    first.backward()
    assert first.item() > 1.0 and student.grad.norm() > 1e-3

    opt = torch.optim.Adam([student], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        spatial(student, teacher).backward()
        opt.step()
    with torch.no_grad():
        after = spatial(student, teacher, generator=gen(1))
    assert after.item() < 0.5 * first.item()


def test_spatial_equals_infonce_over_all_cells_when_k_covers_grid():
    """K >= H*W samples every cell once; InfoNCE is order-invariant, so it equals the full loss."""
    s, t = torch.randn(1, 6, 3, 4), torch.randn(1, 6, 3, 4)
    value = SpatialContrastiveLoss(0.2, num_samples=1000)(s, t)
    expected = tutorial_infonce(s[0].flatten(1).T, t[0].flatten(1).T, 0.2)
    torch.testing.assert_close(value, expected)


def test_spatial_averages_over_batch():
    s, t = torch.randn(3, 6, 3, 4), torch.randn(3, 6, 3, 4)
    value = SpatialContrastiveLoss(0.2, num_samples=12)(s, t)
    per_sample = [tutorial_infonce(s[i].flatten(1).T, t[i].flatten(1).T, 0.2) for i in range(3)]
    torch.testing.assert_close(value, torch.stack(per_sample).mean())


@pytest.mark.parametrize(
    "student_hw,teacher_hw", [((4, 6), (8, 12)), ((16, 10), (8, 5)), ((5, 7), (9, 13))]
)
def test_spatial_aligns_different_grids(student_hw, teacher_hw):
    """A coarse student is read at the teacher's cell centres: same as upsampling it first."""
    s, t = torch.randn(2, 6, *student_hw), torch.randn(2, 6, *teacher_hw)
    loss = SpatialContrastiveLoss(0.1, num_samples=20)
    on_grid = loss(s, t, generator=gen(3))
    if student_hw[0] < teacher_hw[0]:
        upsampled = resize_bev(s, teacher_hw)  # bilinear, align_corners=False
        torch.testing.assert_close(on_grid, loss(upsampled, t, generator=gen(3)))
    assert torch.isfinite(on_grid)


def world_field(height, width, dim=32, seed=0):
    """A smooth feature field of world position, sampled at the centres of an H x W grid."""
    g = torch.Generator().manual_seed(seed)
    freq, phase = torch.randn(dim, 2, generator=g) * 2.0, torch.rand(dim, generator=g) * 6.28
    xy = cell_centres(height, width)  # [H*W, 2] in [-1, 1], world-aligned across grids
    return torch.cos(xy @ freq.T + phase).T.reshape(1, dim, height, width)


def test_spatial_matches_same_world_place_on_non_square_grids():
    """Same world field on a 12x18 teacher and a 6x9 student: aligned is far better than flipped."""
    teacher, student = world_field(12, 18), world_field(6, 9)
    loss = SpatialContrastiveLoss(0.1, num_samples=48)
    aligned = loss(student, teacher, generator=gen())
    flipped = loss(student.flip(-1), teacher, generator=gen())
    shifted = loss(student.roll(2, dims=-2), teacher, generator=gen())
    assert aligned < 0.5 * flipped and aligned < 0.5 * shifted


def test_spatial_foreground_bias_draws_more_foreground_cells():
    n, k = 400, 40
    weights = torch.zeros(1, n)
    weights[0, :40] = 1.0  # 10% of the cells are foreground
    biased = torch.cat([draw_cells(1, n, k, weights, 0.5, gen(i)) for i in range(50)])
    uniform = torch.cat([draw_cells(1, n, k, None, 0.5, gen(i)) for i in range(50)])
    share_biased = (biased < 40).float().mean().item()
    share_uniform = (uniform < 40).float().mean().item()
    assert share_biased >= 0.5 and 0.05 < share_uniform < 0.15
    for row in biased:  # without replacement
        assert row.unique().numel() == k


def test_spatial_foreground_draws_proportional_to_heatmap():
    weights = torch.zeros(1, 100)
    weights[0, 0], weights[0, 1] = 0.9, 0.1
    firsts = torch.stack([draw_cells(1, 100, 2, weights, 0.5, gen(i))[0, 0] for i in range(200)])
    assert 0.8 < (firsts == 0).float().mean() < 0.97


def test_spatial_foreground_only_samples_foreground_cells():
    """fraction=1 and exactly K foreground cells: the loss is InfoNCE over those cells."""
    s, t = torch.randn(1, 6, 6, 8), torch.randn(1, 6, 6, 8)
    heatmap = torch.zeros(1, 3, 6, 8)  # per-class probabilities; max over classes is used
    cells = [(0, 1), (2, 5), (4, 4), (5, 7), (3, 0)]
    for c, (i, j) in enumerate(cells):
        heatmap[0, c % 3, i, j] = 0.3 + 0.1 * c
    loss = SpatialContrastiveLoss(0.2, num_samples=5, foreground_fraction=1.0)
    value = loss(s, t, mask=heatmap)
    rows, cols = zip(*cells, strict=True)
    expected = tutorial_infonce(s[0][:, rows, cols].T, t[0][:, rows, cols].T, 0.2)
    torch.testing.assert_close(value, expected)


def test_foreground_mask_is_resized_to_teacher_grid():
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)  # [B, H, W] at half the teacher resolution
    mask[:, 1, 2] = True
    weights = foreground_weights(mask, 2, (8, 12))
    assert weights.shape == (2, 96) and (weights >= 0).all()
    support = weights[0].reshape(8, 12) > 0
    assert support[2:4, 4:6].all() and not support[6:, :].any() and not support[:, 9:].any()
    with pytest.raises(ValueError, match="sigmoid"):
        foreground_weights(torch.randn(2, 1, 8, 12), 2, (8, 12))
    with pytest.raises(ValueError, match="B=2"):
        foreground_weights(torch.ones(3, 8, 12), 2, (8, 12))


def test_spatial_empty_foreground_warns_and_falls_back_to_uniform():
    s, t = torch.randn(1, 6, 5, 5), torch.randn(1, 6, 5, 5)
    loss = SpatialContrastiveLoss(0.2, num_samples=8)
    with pytest.warns(DegenerateInputWarning, match="foreground is empty"):
        value = loss(s, t, mask=torch.zeros(1, 5, 5), generator=gen())
    torch.testing.assert_close(value, loss(s, t, generator=gen()))


def test_spatial_single_cell_warns_and_returns_connected_zero():
    s = torch.randn(2, 6, 3, 3, requires_grad=True)
    with pytest.warns(DegenerateInputWarning, match="no negative"):
        value = SpatialContrastiveLoss()(s, torch.randn(2, 6, 1, 1))
    value.backward()
    assert value.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_spatial_zero_maps_give_no_nan():
    s = torch.zeros(1, 4, 5, 5, requires_grad=True)
    value = SpatialContrastiveLoss(num_samples=10)(s, torch.zeros(1, 4, 5, 5))
    value.backward()
    torch.testing.assert_close(value, torch.tensor(math.log(10)))
    assert torch.isfinite(s.grad).all()


def test_spatial_sampling_is_seeded():
    s, t = torch.randn(2, 6, 7, 7), torch.randn(2, 6, 7, 7)
    loss = SpatialContrastiveLoss(num_samples=10)
    torch.testing.assert_close(loss(s, t, generator=gen(5)), loss(s, t, generator=gen(5)))
    torch.manual_seed(9)
    first = loss(s, t)
    torch.manual_seed(9)
    torch.testing.assert_close(loss(s, t), first)


def test_draw_cell_indices_are_the_cells_forward_reads():
    """draw_cell_indices is how a caller reads only the K sampled cells (losses.cells does)."""
    s, t = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 4, 6)
    fg = torch.zeros(2, 4, 6)
    fg[:, :2, :5] = 1.0  # 10 foreground cells per sample
    loss = SpatialContrastiveLoss(num_samples=10, foreground_fraction=1.0)
    idx = loss.draw_cell_indices(2, (4, 6), fg, gen(3))
    assert idx.shape == (2, 10) and idx.dtype == torch.int64
    for row in idx.tolist():
        assert len(set(row)) == 10 and all(r // 6 < 2 and r % 6 < 5 for r in row)
    coords = cell_centres(4, 6)[idx]
    expected = loss.cell_loss(sample_cells(s, coords), sample_cells(t, coords))
    torch.testing.assert_close(loss(s, t, mask=fg, generator=gen(3)), expected)


def test_draw_cell_indices_caps_k_at_the_grid_and_gives_none_without_negatives():
    every = SpatialContrastiveLoss(num_samples=100).draw_cell_indices(1, (3, 4), generator=gen())
    assert sorted(every[0].tolist()) == list(range(12))
    with pytest.warns(DegenerateInputWarning, match="no negative"):
        assert SpatialContrastiveLoss().draw_cell_indices(1, (1, 1)) is None


def test_spatial_validation():
    loss = SpatialContrastiveLoss()
    with pytest.raises(ValueError, match="SpatialProjector"):
        loss(torch.randn(1, 8, 4, 4), torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match="ContrastiveLoss"):
        loss(torch.randn(2, 8), torch.randn(2, 8))
    with pytest.raises(ValueError, match="batch sizes differ"):
        loss(torch.randn(1, 8, 4, 4), torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.randn(1, 8, 4, 4), torch.full((1, 8, 4, 4), float("inf")))
    with pytest.raises(ValueError, match="num_samples"):
        SpatialContrastiveLoss(num_samples=1)
    with pytest.raises(ValueError, match="foreground_fraction"):
        SpatialContrastiveLoss(foreground_fraction=1.5)


def test_spatial_with_projectors_of_different_channels():
    s_proj, t_proj = SpatialProjector(8, 16, 12), SpatialProjector(24, 16, 12)
    s = torch.randn(1, 8, 6, 10)
    with torch.no_grad():
        t = t_proj(torch.randn(1, 24, 12, 20))
    value = SpatialContrastiveLoss(num_samples=16)(s_proj(s), t)
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s_proj.parameters())


def test_spatial_gradcheck_across_grids():
    s = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    fg = torch.rand(2, 5, 6, dtype=torch.float64)
    loss = SpatialContrastiveLoss(0.3, num_samples=7)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, mask=fg, generator=gen(2)), (s, t))


# --- MemoryBankContrastiveLoss ------------------------------------------------------------


def test_memory_bank_teaches_at_batch1():
    bank = MemoryBankContrastiveLoss(8, bank_size=50, num_negatives=64)
    s = torch.randn(1, 8, requires_grad=True)
    value = bank(s, torch.randn(1, 8), torch.tensor([7]))
    value.backward()
    assert value.item() > 0.1 and s.grad.norm() > 1e-3


def test_memory_bank_value_and_own_row_excluded():
    """Bank of 2: every negative of sample 0 must be row 1, giving a closed-form loss."""
    bank = MemoryBankContrastiveLoss(2, bank_size=2, num_negatives=5, temperature=0.5)
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    s, t = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])  # unnormalised student
    value = bank(s, t, torch.tensor([0]))
    pos, neg = 0.6 / 0.5, 0.8 / 0.5  # cos(s, t), cos(s, row 1), over the temperature
    torch.testing.assert_close(value, torch.tensor(math.log(1 + 5 * math.exp(neg - pos))))


def test_memory_bank_momentum_update_only_in_training():
    bank = MemoryBankContrastiveLoss(4, bank_size=6, num_negatives=3, momentum=0.5)
    before = bank.memory.clone()
    t = torch.randn(2, 4)
    bank(torch.randn(2, 4), t, torch.tensor([1, 4]))
    expected = F.normalize(0.5 * before[[1, 4]] + 0.5 * F.normalize(t, dim=1), dim=1)
    torch.testing.assert_close(bank.memory[[1, 4]], expected)
    torch.testing.assert_close(bank.memory[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    assert not bank.memory.requires_grad and "memory" in bank.state_dict()
    frozen = bank.memory.clone()
    bank.eval()(torch.randn(2, 4), t, torch.tensor([0, 2]))
    torch.testing.assert_close(bank.memory, frozen)


def test_memory_bank_validation():
    bank = MemoryBankContrastiveLoss(4, bank_size=10)
    with pytest.raises(ValueError, match=r"\[0, 10\).*bank_size"):
        bank(torch.randn(1, 4), torch.randn(1, 4), torch.tensor([10]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        bank(torch.randn(1, 4), torch.randn(1, 4), torch.tensor([-1]))
    with pytest.raises(TypeError, match="integer"):
        bank(torch.randn(1, 4), torch.randn(1, 4), torch.tensor([1.0]))
    with pytest.raises(TypeError, match=r"\[B\]"):
        bank(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([1]))
    with pytest.raises(ValueError, match="feat_dim=4"):
        bank(torch.randn(1, 5), torch.randn(1, 5), torch.tensor([1]))
    with pytest.raises(ValueError, match="bank_size"):
        MemoryBankContrastiveLoss(4, bank_size=1)


def test_memory_bank_gradcheck():
    bank = MemoryBankContrastiveLoss(5, bank_size=20, num_negatives=6, temperature=0.3).eval()
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 7, 19])
    assert torch.autograd.gradcheck(lambda a, b: bank(a, b, index, generator=gen(4)), (s, t))
