"""``view_transform``: lift-splat-shoot, BEVFusion's way from six images to one BEV map.

Lift: a 1x1 ``depth_net`` turns each image-feature pixel into a distribution over ``D`` depth
bins (softmax, the submodule ``depth``: hook ``view_transform.depth`` to plot it) and a context
vector; their outer product places the context along the pixel's ray, weighted by depth.
Each (pixel, bin) point goes to the LiDAR frame through the calibration (``cam2img``,
``lidar2cam``; the dataset folds the augmentation into ``lidar2cam``).
Splat: points inside ``point_cloud_range`` are summed into BEV cells with ``index_add_``
(BEVFusion's CUDA bev_pool does the same sum; this runs anywhere), on a grid ``splat_stride``
times coarser than the pillar grid, then a conv and a bilinear upsample bring the map to the
LiDAR BEV grid, so that the fuser can concatenate the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from bevdistill.models._layers import conv_bn_relu


@MODELS.register_module()
class LSSViewTransform(nn.Module):
    """Lift image features ``[B * N, C, h, w]`` to a camera BEV map ``[B, out_channels, H, W]``.

    ``depth_bins`` = (start, stop, step) in metres along the optical axis; ``feature_stride``
    (the neck's stride in pixels), ``point_cloud_range`` and ``bev_shape`` (the pillar grid's
    (H, W)) are derived by the detector.
    """

    def __init__(self, in_channels: int, out_channels: int, point_cloud_range: Sequence[float],
                 bev_shape: Sequence[int], feature_stride: int,
                 depth_bins: Sequence[float] = (1.0, 45.0, 1.0), splat_stride: int = 2):
        super().__init__()
        start, stop, step = (float(v) for v in depth_bins)
        if not 0 < start < stop or step <= 0:
            raise ValueError(f"depth_bins must be (start, stop, step) with 0 < start < stop and "
                             f"step > 0, got {list(depth_bins)}")
        h, w = (int(v) for v in bev_shape)
        if splat_stride < 1 or h % splat_stride or w % splat_stride:
            raise ValueError(f"splat_stride {splat_stride} must divide the BEV grid {h}x{w}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        self.bev_shape = (h, w)
        self.feature_stride = int(feature_stride)
        self.splat_stride = int(splat_stride)
        self.register_buffer("depth_values", torch.arange(start, stop, step) + step / 2,
                             persistent=False)  # bin centres, metres
        self.depth_net = nn.Conv2d(in_channels, self.num_bins + out_channels, 1)
        self.depth = nn.Softmax(dim=1)
        self.bev_conv = conv_bn_relu(out_channels, out_channels)

    @property
    def num_bins(self) -> int:
        return int(self.depth_values.numel())

    def depth_distribution(self, img_feats: torch.Tensor) -> torch.Tensor:
        """Per feature pixel, the probability of each depth bin: ``[B * N, D, h, w]``."""
        return self.depth(self.depth_net(img_feats)[:, : self.num_bins])

    def frustum_points(self, feat_hw: tuple[int, int], cam2img: torch.Tensor,
                       lidar2cam: torch.Tensor) -> torch.Tensor:
        """LiDAR-frame xyz of every (camera, bin, feature pixel): ``[B, N, D, h, w, 3]``."""
        h, w = feat_hw
        s = self.feature_stride
        dtype, device = cam2img.dtype, cam2img.device
        v, u = torch.meshgrid((torch.arange(h, dtype=dtype, device=device) + 0.5) * s,
                              (torch.arange(w, dtype=dtype, device=device) + 0.5) * s,
                              indexing="ij")
        d = self.depth_values.to(dtype)[:, None, None].expand(-1, h, w)
        pix = torch.stack([u.expand_as(d) * d, v.expand_as(d) * d, d], dim=-1)  # [D, h, w, 3]
        cam2lidar = torch.linalg.inv(lidar2cam)
        rot = cam2lidar[..., :3, :3] @ torch.linalg.inv(cam2img)  # [B, N, 3, 3]
        return (torch.einsum("bnij,dhwj->bndhwi", rot, pix)
                + cam2lidar[..., None, None, None, :3, 3])

    def splat(self, depth: torch.Tensor, context: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Sum depth x context into BEV cells: ``depth`` [B * N, D, h, w], ``context``
        [B * N, C, h, w], ``points`` [B, N, D, h, w, 3] -> ``[B, C, H / splat_stride,
        W / splat_stride]``. Only the (pixel, bin) points inside the range are formed and
        added; the full depth x context volume is never built."""
        b, c = points.shape[0], context.shape[1]
        bn, d, h, w = depth.shape
        x0, y0, z0, x1, y1, z1 = self.point_cloud_range
        hs, ws = self.bev_shape[0] // self.splat_stride, self.bev_shape[1] // self.splat_stride
        points = points.reshape(-1, 3)
        ix = ((points[:, 0] - x0) / (x1 - x0) * ws).floor().long()
        iy = ((points[:, 1] - y0) / (y1 - y0) * hs).floor().long()
        keep = torch.nonzero((ix >= 0) & (ix < ws) & (iy >= 0) & (iy < hs)
                             & (points[:, 2] >= z0) & (points[:, 2] < z1)).squeeze(1)
        image = keep // (d * h * w)  # which of the B * N images, then which pixel of it
        pixel = image * (h * w) + keep % (h * w)
        batch = image // (bn // b)
        cell = (batch * hs + iy[keep]) * ws + ix[keep]
        feats = depth.reshape(-1)[keep, None] * context.permute(0, 2, 3, 1).reshape(-1, c)[pixel]
        bev = context.new_zeros(b * hs * ws, c).index_add_(0, cell, feats)
        return bev.view(b, hs, ws, c).permute(0, 3, 1, 2).contiguous()

    def forward(self, img_feats: torch.Tensor, cam2img: torch.Tensor,
                lidar2cam: torch.Tensor) -> torch.Tensor:
        """``img_feats`` [B * N, C, h, w], ``cam2img`` [B, N, 3, 3], ``lidar2cam`` [B, N, 4, 4]
        -> the camera BEV map [B, out_channels, H, W] on the pillar grid."""
        b, n = cam2img.shape[:2]
        if img_feats.shape[0] != b * n:
            raise ValueError(f"view_transform got features of {img_feats.shape[0]} images for "
                             f"{b} samples x {n} cameras of calibration")
        out = self.depth_net(img_feats)
        depth = self.depth(out[:, : self.num_bins])  # [B*N, D, h, w]
        context = out[:, self.num_bins:]  # [B*N, C, h, w]
        points = self.frustum_points(img_feats.shape[-2:], cam2img.float(), lidar2cam.float())
        bev = self.bev_conv(self.splat(depth, context, points))  # points in fp32 under AMP too
        if self.splat_stride > 1:
            bev = F.interpolate(bev, size=self.bev_shape, mode="bilinear", align_corners=False)
        return bev
