"""bevdistill.viz.analysis and the picture options notebooks 01-04 use: the measurements say what
they claim (empty-input response, checkerboards, masks, temperature), and the plots accept the
new keywords without changing their old behaviour."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bevdistill import AttentionTransferLoss, ContrastiveLoss, viz  # noqa: E402
from bevdistill.models import build_detector  # noqa: E402

EXTENT = (-8.0, 8.0, -8.0, 8.0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _maps(seed: int = 0, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 6, 16, 16, generator=g), torch.rand(b, 10, 32, 32, generator=g)


def test_occupancy_marks_the_scattered_cells_and_pools_them():
    scatter = torch.zeros(1, 3, 8, 8)
    scatter[0, 1, 2, 3] = 0.5
    scatter[0, :, 6, 6] = -1.0  # negative features count too
    occ = viz.occupancy(scatter)
    assert occ.shape == (8, 8) and occ.sum() == 2 and occ[2, 3] == 1 and occ[6, 6] == 1
    coarse = viz.occupancy(scatter, (4, 4))
    assert coarse[1, 1] == pytest.approx(0.25) and coarse.sum() == pytest.approx(0.5)


def test_box_mask_covers_the_box_footprint():
    box = [[2.0, -3.0, 0.0, 4.0, 2.0, 1.5, 0.0]]  # x in [0, 4], y in [-4, -2]
    mask = viz.box_mask(box, EXTENT, (16, 16))  # 1 m cells
    assert mask.sum() == 8
    rows, cols = np.nonzero(mask)
    assert set(cols) == {8, 9, 10, 11} and set(rows) == {4, 5}
    turned = viz.box_mask([[2.0, -3.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2]], EXTENT, (16, 16))
    assert turned.sum() == 8 and set(np.nonzero(turned)[1]) == {9, 10}
    assert not viz.box_mask(np.zeros((0, 7)), EXTENT, (4, 4)).any()


def test_empty_input_response_is_what_an_empty_region_converges_to():
    torch.manual_seed(0)
    model = build_detector("student").eval()
    for m in model.modules():  # give BatchNorm a non-trivial shift, as training does
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1.0, 1.0)
            m.bias.data.uniform_(-0.5, 1.0)
    scatter = torch.zeros(1, model.pts_middle_encoder.out_channels, 128, 128)
    scatter[0, :, 100:110, 100:110] = 1.0  # points only in one corner
    with torch.no_grad():
        neck = model.pts_neck(model.pts_backbone(scatter))[0]
    empty = viz.empty_input_response(model, scatter)
    assert set(empty) == {"pts_backbone", "pts_neck"}
    assert empty["pts_neck"].shape == neck.shape
    far = (slice(None), slice(None), slice(10, 30), slice(10, 30))  # far from points and borders
    assert torch.allclose(neck[far], empty["pts_neck"][far], atol=1e-5)
    assert float(empty["pts_neck"].abs().max()) > 0  # BatchNorm turned zeros into a response


def test_parity_means_find_the_kernel_equals_stride_checkerboard():
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(4, 3, kernel_size=2, stride=2, bias=False)
    with torch.no_grad():
        out = up(torch.ones(1, 4, 8, 8)).relu()
    means = viz.parity_means(out)
    assert means.shape == (2, 2)
    assert np.ptp(means) > 0.05  # the four kernel taps differ
    smooth = nn.ConvTranspose2d(4, 3, kernel_size=1, stride=1, bias=False)
    with torch.no_grad():
        flat = smooth(torch.ones(1, 4, 16, 16))
    assert np.ptp(viz.parity_means(flat)) < 1e-6


def test_attention_maps_with_a_mask_are_the_masked_loss():
    s, t = _maps()
    mask = torch.zeros(2, 3, 64, 64)
    mask[:, 1, 10:30, 5:40] = 0.8
    mask[1, 0, 40:60, 40:60] = 0.3
    expected = float(AttentionTransferLoss()(s, t, mask=mask))
    assert viz.attention_maps(s, t, sample=None, mask=mask)["loss"] == pytest.approx(expected, rel=1e-5)
    assert viz.attention_maps(s, t, sample=None)["loss"] == pytest.approx(
        float(AttentionTransferLoss()(s, t)), rel=1e-5
    )
    masked = viz.attention_maps(s, t, sample=0, mask=mask)
    assert masked["teacher"][:2, :].sum() == 0  # rows 0-1 of the 16x16 grid lie outside the mask


def test_attention_shares_partition_and_follow_the_mask():
    s, t = _maps()
    region = np.zeros((16, 16), dtype=bool)
    region[4:8, 4:8] = True
    regions = {"in": region, "out": ~region}
    shares = viz.attention_shares(s, t, regions)
    for who in ("teacher", "student"):
        assert sum(shares[who].values()) == pytest.approx(1.0)
    mask = torch.from_numpy(region).float()[None].expand(2, -1, -1)
    masked = viz.attention_shares(s, t, regions, mask=mask)
    assert masked["teacher"]["in"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        viz.attention_shares(s, t, {"bad": np.ones((3, 3), dtype=bool)})


def test_attention_gradient_map_is_zero_outside_the_mask():
    s, t = _maps()
    full = viz.attention_gradient_map(s, t)
    assert full.shape == (16, 16) and (full > 0).all()
    mask = torch.zeros(2, 16, 16)
    mask[:, :8] = 1.0
    masked = viz.attention_gradient_map(s, t, mask=mask)
    assert masked[8:].max() == 0 and masked[:8].max() > 0


def test_temperature_sweep_limits_and_loss():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(16, 8, generator=g)
    s = t + 0.5 * torch.randn(16, 8, generator=g)
    rows = viz.temperature_sweep(s, t, (0.01, 0.07, 100.0))
    cold, mid, hot = rows
    assert mid["loss"] == pytest.approx(float(ContrastiveLoss(0.07)(s, t)), rel=1e-5)
    assert hot["entropy"] == pytest.approx(math.log(16), abs=1e-3)  # uniform
    assert hot["hardest_share"] == pytest.approx(1 / 15, rel=1e-2)  # every negative alike
    assert cold["entropy"] < mid["entropy"] < hot["entropy"]
    assert cold["hardest_share"] > mid["hardest_share"] > hot["hardest_share"]
    assert 0 < mid["p_positive"] < 1
    with pytest.raises(ValueError, match="N >= 2"):
        viz.temperature_sweep(s[:1], t[:1], (0.1,))


def test_channel_grid_draws_boxes_and_colour_bars_and_stays_compatible():
    fmap = torch.rand(1, 20, 16, 16)
    boxes, labels = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]), torch.tensor([0])
    old = viz.plot_channel_grid(fmap, extent=EXTENT)  # the old call: the same figure as before
    assert len(old.axes) == 16 and not any(ax.lines for ax in old.axes)
    new = viz.plot_channel_grid(
        fmap, extent=EXTENT, boxes=boxes, labels=labels, ncols=4, colorbar=True
    )
    panels = [ax for ax in new.axes if ax.get_title().startswith("ch ")]
    assert len(panels) == 16
    assert all(len(ax.lines) >= 2 for ax in panels)  # outline and heading line on every panel
    assert len(new.axes) == 16 + 16  # one colour bar per panel


def test_layer_summaries_and_bev_map_overlay_points():
    features = {"pts_neck": [torch.rand(1, 4, 16, 16)]}
    points = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0], [50.0, 50.0, 0.0, 0.0, 0.0]])
    fig = viz.plot_layer_summaries(features, extent=EXTENT, points=points)
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert all(len(ax.collections) == 1 for ax in maps)
    offsets = maps[0].collections[0].get_offsets()
    assert len(offsets) == 1  # the point outside the extent is left out
    _, ax = plt.subplots()
    viz.plot_bev_map(ax, np.zeros((4, 4)), EXTENT)  # without points: no scatter
    assert not ax.collections
