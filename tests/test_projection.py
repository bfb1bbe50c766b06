"""Step 2: ProjectionMLP and SpatialProjector."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevdistill import ProjectionMLP, SpatialProjector
from bevdistill.models.tiny import TinyBEVDetector, random_batch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "shape",
    [(3, 8), (3, 8, 11), (3, 8, 5, 7), (3, 8, 2, 5, 7), (1, 8, 4, 4)],
    ids=["BC", "BCN", "BCHW", "BCDHW", "B1"],
)
def test_projection_shapes_and_unit_rows(shape):
    model = ProjectionMLP(8, hidden_dim=16, out_dim=6)
    out = model(torch.randn(*shape))
    assert out.shape == (shape[0], 6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(shape[0]))


def test_projection_mean_pools_every_spatial_dim():
    model = ProjectionMLP(8, 16, 6).eval()
    bev = torch.randn(2, 8, 5, 7)
    voxels = torch.randn(2, 8, 3, 4, 5)
    # adaptive_avg_pool2d to 1x1 (the tutorial's pooling) is the mean over H, W.
    pooled = F.adaptive_avg_pool2d(bev, 1).flatten(1)
    torch.testing.assert_close(model(bev), model(pooled))
    torch.testing.assert_close(model(voxels), model(voxels.mean(dim=(2, 3, 4))))
    perm = torch.randperm(35)
    shuffled = bev.flatten(2)[:, :, perm].reshape(bev.shape)
    torch.testing.assert_close(model(shuffled), model(bev))


def test_tutorial_batchnorm_fails_at_batch_1_and_ours_trains():
    """Regression: the tutorial's BatchNorm1d raises in training mode at B=1."""
    tutorial_bn = nn.BatchNorm1d(16).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        tutorial_bn(torch.randn(1, 16))

    model = ProjectionMLP(8, 16, 6).train()
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    out = model(x)
    out.sum().backward()
    assert out.shape == (1, 6) and torch.isfinite(out).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_projection_train_and_eval_agree_without_dropout():
    """LayerNorm has no running statistics: train and eval compute the same function."""
    model = ProjectionMLP(8, 16, 6, dropout=0.0)
    x = torch.randn(3, 8, 4, 4)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    torch.testing.assert_close(train_out, eval_out)
    # and each sample's embedding is independent of the rest of the batch
    torch.testing.assert_close(model(x[1:2]), eval_out[1:2])


def test_projection_eval_disables_dropout():
    model = ProjectionMLP(8, 16, 6, dropout=0.5).eval()
    x = torch.randn(4, 8)
    torch.testing.assert_close(model(x), model(x))


def test_projection_zero_embedding_gives_zeros_not_nan():
    model = ProjectionMLP(8, 16, 6)
    nn.init.zeros_(model.layer2.weight)
    nn.init.zeros_(model.layer2.bias)
    out = model(torch.randn(2, 8))
    assert torch.equal(out, torch.zeros(2, 6))


def test_projection_on_tiny_detector_features():
    detector = TinyBEVDetector().eval()
    inputs, _ = random_batch(batch_size=2)
    with torch.no_grad():
        bev = detector.extract_feat(inputs)
    model = ProjectionMLP(bev.shape[1], 32, 16)
    assert model(bev).shape == (2, 16)


def test_projection_channel_mismatch_says_expected_got_and_fix():
    model = ProjectionMLP(8, 16, 6)
    with pytest.raises(ValueError, match=r"in_dim=8.*got 5 channels.*in_dim=5"):
        model(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.randn(8))
    with pytest.raises(TypeError):
        model([1.0] * 8)


@pytest.mark.parametrize(
    "kwargs", [{"in_dim": 0}, {"in_dim": 8, "out_dim": -1}, {"in_dim": 8, "dropout": 1.0}]
)
def test_projection_rejects_bad_construction(kwargs):
    with pytest.raises(ValueError):
        ProjectionMLP(**kwargs)


def test_spatial_projector_keeps_grid_and_normalises_cells():
    model = SpatialProjector(8, 16, 6).train()
    out = model(torch.randn(1, 8, 5, 9))  # batch size 1 in training mode, non-square
    assert out.shape == (1, 6, 5, 9)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, 5, 9))
    raw = SpatialProjector(8, 16, 6, normalize=False)(torch.randn(2, 8, 3, 3))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2, 3, 3))


def test_spatial_projector_is_per_cell():
    """A cell's embedding depends only on that cell: projecting a crop = cropping the projection."""
    model = SpatialProjector(8, 16, 6)
    x = torch.randn(2, 8, 6, 7)
    x[:, :, :3] *= 10  # very different statistics in one half of the map
    torch.testing.assert_close(model(x)[:, :, 3:, 2:5], model(x[:, :, 3:, 2:5]))
    torch.testing.assert_close(model(x)[1:], model(x[1:]))


def test_spatial_projector_gradients_and_errors():
    model = SpatialProjector(8, 16, 6)
    x = torch.randn(1, 8, 4, 4, requires_grad=True)
    (model(x) * torch.randn(1, 6, 4, 4)).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="ProjectionMLP"):
        model(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"in_dim=8.*got 3 channels"):
        model(torch.randn(2, 3, 4, 4))


# --- projecting sampled cells only (what spatial InfoNCE does, for speed) -------------------


def test_project_cells_equals_forward_at_those_cells():
    torch.manual_seed(0)
    proj = SpatialProjector(6, hidden_dim=16, out_dim=8)
    x = torch.randn(2, 6, 5, 7)
    full = proj(x)  # [B, D, H, W]
    cells = x.permute(0, 2, 3, 1)  # [B, H, W, C]
    torch.testing.assert_close(proj.project_cells(cells), full.permute(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-6)
    raw = SpatialProjector(6, hidden_dim=16, out_dim=8, normalize=False)
    raw.load_state_dict(proj.state_dict())
    torch.testing.assert_close(raw.project_cells(cells[:, 1, 2]), raw(x)[:, :, 1, 2],
                               rtol=1e-5, atol=1e-6)


def test_project_cells_rejects_channels_first_or_wrong_width():
    proj = SpatialProjector(6, out_dim=8)
    with pytest.raises(ValueError, match=r"\[\.\.\., 6\] \(channels last\)"):
        proj.project_cells(torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        proj.project_cells([1.0] * 6)


def test_a_column_of_cells_projects_as_the_convolutions_would():
    """[B, C, K, 1] (the cells a reads='cells' term samples) takes the channels-last path; it is
    the same per-cell computation as the 1x1 convolutions of a map."""
    torch.manual_seed(0)
    proj = SpatialProjector(6, hidden_dim=10, out_dim=4)
    column = torch.randn(2, 6, 7, 1)
    by_conv = torch.nn.functional.normalize(
        proj.conv2(proj.relu(proj.norm(proj.conv1(column)))), dim=1)
    torch.testing.assert_close(proj(column), by_conv, rtol=1e-5, atol=1e-6)
