"""The LiDAR-branch parts one by one: grid, voxeliser, pillar feature net, scatter, SECOND, SECONDFPN."""

from __future__ import annotations

import warnings

import pytest
import torch
from warnings_support import reset_warnings

from bevdistill._warnings import DegenerateInputWarning
from bevdistill.models.geometry import BEVGrid
from bevdistill.models.pillar_encoder import PillarFeatureNet
from bevdistill.models.scatter import PointPillarsScatter
from bevdistill.models.second import SECOND, SECONDFPN
from bevdistill.models.voxelize import PillarVoxelizer, voxelize_single

# A 4 x 2 grid of 1 m pillars: x in [0, 4), y in [0, 2), z in [-1, 1).
GRID = BEVGrid.from_config([0, 0, -1, 4, 2, 1], [1.0, 1.0])


def pts(*rows):
    """Points (x, y, z, intensity, ring); intensity numbers each point so order can be checked."""
    return torch.tensor([[*r, 0.0] for r in rows], dtype=torch.float32)


# ----------------------------------------------------------------------------- grid
def test_grid_sizes_and_pillar_height():
    assert GRID.grid_size == (4, 2) and GRID.bev_shape == (2, 4)
    assert GRID.voxel_size == (1.0, 1.0, 2.0)  # a pillar spans the whole z range
    grid = BEVGrid.from_config([-32, -32, -5, 32, 32, 3], [0.25, 0.25, 8])
    assert grid.bev_shape == (256, 256) and grid.feature_shape(4) == (64, 64)
    assert grid.cell_size(4) == (1.0, 1.0)


@pytest.mark.parametrize(
    "pcr, vs, match",
    [
        ([0, 0, -1, 4, 2], [1, 1], "6 numbers"),
        ([0, 0, -1, 4, 2, 1], [0.3, 1], "whole number"),
        ([4, 0, -1, 0, 2, 1], [1, 1], "x1 > x0"),
        ([0, 0, -1, 4, 2, 1], [1, 1, 0.5], "whole z range"),
        ([0, 0, -1, 4, 2, 1], [1, -1], "positive"),
    ],
)
def test_grid_rejects_bad_geometry(pcr, vs, match):
    with pytest.raises(ValueError, match=match):
        BEVGrid.from_config(pcr, vs)


def test_feature_shape_must_divide():
    with pytest.raises(ValueError, match="not divisible"):
        GRID.feature_shape(3)


# ----------------------------------------------------------------------------- voxeliser
def test_points_go_to_the_pillar_under_them():
    points = pts(
        (0.5, 0.5, 0.0, 1),  # pillar (y=0, x=0)
        (3.9, 1.2, 0.5, 2),  # pillar (1, 3)
        (0.2, 0.7, -0.5, 3),  # pillar (0, 0) again
        (4.0, 0.5, 0.0, 4),  # x == x1: outside (the range is half-open)
        (1.5, 0.5, 1.0, 5),  # z == z1: outside
        (-0.1, 0.5, 0.0, 6),  # x < x0
        (float("nan"), 0.5, 0.0, 7),  # non-finite: dropped
        (2.5, 1.5, -1.0, 8),  # z == z0: inside, pillar (1, 2)
    )
    voxels, num, coors = voxelize_single(points, GRID, max_points=4, max_pillars=10)
    assert coors.tolist() == [[0, 0, 0], [0, 1, 2], [0, 1, 3]]  # (z, y, x), sorted by pillar id
    assert num.tolist() == [2, 1, 1]
    assert voxels.shape == (3, 4, 4)
    assert voxels[0, :2, 3].tolist() == [1, 3]  # input order kept inside a pillar
    assert voxels[1, 0, 3].item() == 8 and voxels[2, 0, 3].item() == 2
    assert voxels[0, 2:].abs().sum() == 0  # padding is zero


def test_max_points_keeps_the_first_points():
    points = pts(*[(1.5, 0.5, 0.0, i) for i in range(7)])
    voxels, num, _ = voxelize_single(points, GRID, max_points=3, max_pillars=10)
    assert num.tolist() == [3]
    assert voxels[0, :, 3].tolist() == [0, 1, 2]


def test_max_pillars_keeps_the_densest_and_warns():
    reset_warnings()
    points = pts(
        (0.5, 0.5, 0, 1),  # pillar id 0: 1 point
        (1.5, 0.5, 0, 2), (1.5, 0.5, 0, 3), (1.5, 0.5, 0, 4),  # id 1: 3 points
        (2.5, 1.5, 0, 5), (2.5, 1.5, 0, 6),  # id 6: 2 points
    )
    with pytest.warns(DegenerateInputWarning, match="max_pillars=2"):
        voxels, num, coors = voxelize_single(points, GRID, max_points=5, max_pillars=2)
    assert coors[:, 1:].tolist() == [[0, 1], [1, 2]]
    assert num.tolist() == [3, 2]
    assert voxels[1, :2, 3].tolist() == [5, 6]


def test_batch_with_an_empty_sample():
    vox = PillarVoxelizer(GRID, max_points_per_pillar=2, max_pillars=(5, 7))
    assert vox.training and vox.max_pillars == (5, 7)
    voxels, num, coors = vox([torch.zeros(0, 5), pts((0.5, 0.5, 0, 1)), pts((5.0, 0, 0, 0))])
    assert coors.tolist() == [[1, 0, 0, 0]]  # only sample 1 has a pillar
    assert voxels.shape == (1, 2, 4) and num.tolist() == [1]


@pytest.mark.parametrize(
    "bad, error", [(torch.zeros(5, 3), ValueError), (torch.zeros(5, 5, dtype=torch.long), TypeError),
                   ([[0.0] * 5], TypeError)]
)
def test_voxeliser_rejects_malformed_points(bad, error):
    with pytest.raises(error, match=r"\[N"):
        voxelize_single(bad, GRID, 2, 2)


def test_voxeliser_rejects_bad_caps():
    with pytest.raises(ValueError, match="max_pillars"):
        PillarVoxelizer(GRID, max_points_per_pillar=0)
    with pytest.raises(ValueError, match="max_pillars"):
        PillarVoxelizer(GRID, max_pillars=(1, 2, 3))


# ----------------------------------------------------------------------------- pillar feature net
def _reference_pfn(pfn: PillarFeatureNet, voxels, num, coors):
    """Loop over pillars, as the paper describes it (eval mode: BN uses running statistics)."""
    layer = pfn.pfn_layers[0]
    out = []
    for v, n, c in zip(voxels, num, coors, strict=True):
        p = v[: int(n)]
        centre = torch.tensor([(c[3] + 0.5) * 1.0, (c[2] + 0.5) * 1.0])  # GRID starts at 0, 1 m pillars
        f = torch.cat([p, p[:, :3] - p[:, :3].mean(0), p[:, :2] - centre], dim=1)
        y = torch.relu(layer.norm(layer.linear(f)))
        out.append(y.max(0).values)
    return torch.stack(out)


def test_pillar_feature_net_matches_a_per_pillar_loop():
    torch.manual_seed(0)
    pfn = PillarFeatureNet(voxel_size=[1, 1], point_cloud_range=[0, 0, -1, 4, 2, 1], feat_channels=[8])
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        pfn.pfn_layers[0].norm.running_mean.uniform_(-0.5, 0.5)
        pfn.pfn_layers[0].norm.running_var.uniform_(0.5, 2)
        pfn.pfn_layers[0].norm.weight.uniform_(0.5, 1.5)
        pfn.pfn_layers[0].norm.bias.uniform_(-0.2, 0.2)
    pfn.eval()
    points = torch.rand(40, 5) * torch.tensor([4.0, 2.0, 2.0, 1.0, 1.0]) - torch.tensor([0, 0, 1.0, 0, 0])
    voxels, num, coors = voxelize_single(points, GRID, max_points=6, max_pillars=10)
    coors = torch.cat([torch.zeros_like(coors[:, :1]), coors], dim=1)
    out = pfn(voxels, num, coors)
    assert out.shape == (len(num), 8)
    torch.testing.assert_close(out, _reference_pfn(pfn, voxels, num, coors), atol=1e-5, rtol=1e-5)


def test_pillar_feature_net_ignores_padding_and_trains_on_one_point():
    torch.manual_seed(0)
    pfn = PillarFeatureNet(voxel_size=[1, 1], point_cloud_range=[0, 0, -1, 4, 2, 1], feat_channels=[6, 8])
    assert pfn.out_channels == 8
    points = pts((0.5, 0.5, 0.1, 3), (0.7, 0.2, -0.3, 9), (2.5, 1.5, 0.0, 1))
    pfn.eval()
    outs = []
    for m in (3, 9):  # more padding must not change anything
        voxels, num, coors = voxelize_single(points, GRID, max_points=m, max_pillars=10)
        coors = torch.cat([torch.zeros_like(coors[:, :1]), coors], dim=1)
        outs.append(pfn(voxels, num, coors))
    torch.testing.assert_close(outs[0], outs[1])
    pfn.train()  # a single point cannot give batch statistics: running ones are used, no error
    voxels, num, coors = voxelize_single(points[:1], GRID, max_points=3, max_pillars=10)
    coors = torch.cat([torch.zeros_like(coors[:, :1]), coors], dim=1)
    out = pfn(voxels, num, coors)
    out.sum().backward()
    assert out.shape == (1, 8) and pfn.pfn_layers[0].linear.weight.grad is not None


def test_pillar_feature_net_rejects_other_point_layouts():
    with pytest.raises(ValueError, match="in_channels must be 4"):
        PillarFeatureNet([1, 1], [0, 0, -1, 4, 2, 1], in_channels=5)


# ----------------------------------------------------------------------------- scatter
def test_scatter_places_features_channels_first():
    sc = PointPillarsScatter(in_channels=3, output_shape=(2, 4))
    feats = torch.arange(9, dtype=torch.float32).view(3, 3).requires_grad_()
    coors = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 3], [1, 0, 1, 2]])
    bev = sc(feats, coors, batch_size=2)
    assert bev.shape == (2, 3, 2, 4)
    assert bev[0, :, 0, 0].tolist() == [0, 1, 2]
    assert bev[0, :, 1, 3].tolist() == [3, 4, 5]
    assert bev[1, :, 1, 2].tolist() == [6, 7, 8]
    assert bev.abs().sum().item() == feats.sum().item()  # every other cell is empty
    bev.sum().backward()
    assert torch.equal(feats.grad, torch.ones(3, 3))


def test_scatter_checks_its_inputs():
    sc = PointPillarsScatter(in_channels=3, output_shape=(2, 4))
    with pytest.raises(ValueError, match=r"\[P, 3\]"):
        sc(torch.zeros(1, 2), torch.zeros(1, 4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="exceed"):
        sc(torch.zeros(1, 3), torch.tensor([[0, 0, 2, 0]]), 1)
    with pytest.raises(ValueError, match="output_shape"):
        PointPillarsScatter(3, (2,))


# ----------------------------------------------------------------------------- SECOND / SECONDFPN
def test_second_returns_a_tuple_and_fpn_a_list_of_one():
    backbone = SECOND(in_channels=4, out_channels=[8, 16, 32], layer_nums=[1, 0, 1], layer_strides=[2, 2, 2])
    scales = backbone(torch.randn(2, 4, 32, 32))
    assert isinstance(scales, tuple)
    assert [tuple(s.shape) for s in scales] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert backbone.strides == [2, 4, 8]
    neck = SECONDFPN(in_channels=[8, 16, 32], out_channels=[4, 4, 4], upsample_strides=[0.5, 1, 2])
    out = neck(scales)
    assert isinstance(out, list) and len(out) == 1
    assert out[0].shape == (2, 12, 8, 8) and neck.out_channels == 12


def test_second_rejects_mismatched_lists_and_fpn_mismatched_sizes():
    with pytest.raises(ValueError, match="equally long"):
        SECOND(4, out_channels=[8, 16], layer_nums=[1], layer_strides=[2, 2])
    with pytest.raises(ValueError, match="1/n"):
        SECONDFPN([8], [8], [0.3])
    with pytest.raises(ValueError, match="whole number"):
        SECONDFPN([8], [8], [1.5])
    neck = SECONDFPN([8, 16], [4, 4], [1, 1])  # the second scale is never brought up to size
    with pytest.raises(ValueError, match="different sizes"):
        neck((torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)))


def test_no_warning_for_a_normal_cloud():
    reset_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        voxelize_single(pts((0.5, 0.5, 0, 1)), GRID, max_points=2, max_pillars=8)
