"""``BEVFusionDetector``: BEVFusion's camera + LiDAR detector, at a size a CPU trains.

Modules carry mmdet3d BEVFusion's names, so hook points carry over to its configs::

    imgs [B, 6, 3, H, W] -> img_backbone -> img_neck -> view_transform (LSS) -> camera BEV ┐
    points -> pts_voxel_layer -> pts_voxel_encoder -> pts_middle_encoder -> LiDAR BEV ─────┤
                                                                      fusion_layer (ConvFuser)
                                               fused BEV -> pts_backbone -> pts_neck -> bbox_head

The camera branch is optional: with ``img_backbone``, ``img_neck``, ``view_transform`` and
``fusion_layer`` left out the model IS the pillar detector (same modules, same state dict,
same outputs), so one preset family gives both the fusion and the LiDAR-only model. As in
BEVFusion the fuser returns as many channels as the LiDAR map has, so ``pts_backbone`` and
everything after it have the LiDAR-only model's shapes (and can start from its weights).

Inputs add to the pillar detector's ``{'points': [...]}`` the stacked ``imgs`` (uint8 or float,
0-255, RGB) ``[B, 6, 3, H, W]``, ``cam2img`` ``[B, 6, 3, 3]`` and ``lidar2cam`` ``[B, 6, 4, 4]``
(what :func:`bevdistill.data.bev_collate` makes of a dataset built with ``cameras=True``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmengine.registry import MODELS
from torch import nn

from bevdistill.data.camera import CameraRig
from bevdistill.errors import UserError
from bevdistill.example_inputs import random_points
from bevdistill.models import image, lss  # noqa: F401 (registers the camera modules)
from bevdistill.models._layers import conv_bn_relu
from bevdistill.models.detector import PillarBEVDetector, _fill

CAMERA_MODULES = ("img_backbone", "img_neck", "view_transform", "fusion_layer")
CAMERA_INPUTS = ("imgs", "cam2img", "lidar2cam")


class MissingCameraInputs(UserError, KeyError):
    """A batch without the images a fusion model reads: the dataset was built without cameras
    (a user's config, so the command line reports it in a line, not a traceback)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@MODELS.register_module()
class ConvFuser(nn.Module):
    """BEVFusion's fuser: concatenate the camera and LiDAR BEV maps, one conv-BN-ReLU."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.out_channels = int(out_channels)
        self.fuse = conv_bn_relu(sum(self.in_channels), self.out_channels, kernel_size)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``inputs`` = [camera BEV, LiDAR BEV], as mmdet3d's ConvFuser takes them."""
        channels = [x.shape[1] for x in inputs]
        if channels != self.in_channels:
            raise ValueError(f"fusion_layer expects maps of {self.in_channels} channels "
                             f"(camera, LiDAR), got {channels}")
        return self.fuse(torch.cat(list(inputs), dim=1))


@MODELS.register_module()
class BEVFusionDetector(PillarBEVDetector):
    """The pillar detector plus an optional camera branch fused before ``pts_backbone``.

    Every channel count, the image feature stride and the BEV grid of ``view_transform`` are
    derived; ``img_backbone`` / ``img_neck`` / ``view_transform`` / ``fusion_layer`` give the
    widths (all four, or none for the LiDAR-only model).
    """

    def __init__(self, *args, img_backbone: Mapping | None = None, img_neck: Mapping | None = None,
                 view_transform: Mapping | None = None, fusion_layer: Mapping | None = None,
                 img_mean: Sequence[float] = IMAGENET_MEAN, img_std: Sequence[float] = IMAGENET_STD,
                 **kwargs):
        super().__init__(*args, **kwargs)
        given = dict(img_backbone=img_backbone, img_neck=img_neck, view_transform=view_transform,
                     fusion_layer=fusion_layer)
        missing = [k for k, v in given.items() if v is None]
        if missing and len(missing) < len(given):
            raise ValueError(f"the camera branch needs all of {list(CAMERA_MODULES)}; {missing} "
                             "missing. Give all four, or none for the LiDAR-only model")
        self.with_camera = not missing
        if not self.with_camera:
            self.img_backbone = self.img_neck = self.view_transform = self.fusion_layer = None
            return
        self.register_buffer("img_mean", torch.tensor(img_mean).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer("img_std", torch.tensor(img_std).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.img_backbone = MODELS.build(_fill(img_backbone, "img_backbone"))
        self.img_neck = MODELS.build(_fill(img_neck, "img_neck",
                                           in_channels=self.img_backbone.out_channels))
        self.view_transform = MODELS.build(_fill(
            view_transform, "view_transform", in_channels=self.img_neck.out_channels,
            point_cloud_range=list(self.grid.point_cloud_range),
            bev_shape=list(self.grid.bev_shape), feature_stride=self.img_backbone.strides[0]))
        lidar = self.pts_middle_encoder.out_channels
        self.fusion_layer = MODELS.build(_fill(
            fusion_layer, "fusion_layer", in_channels=[self.view_transform.out_channels, lidar],
            out_channels=lidar))

    def example_inputs(self, batch_size: int = 2, num_points: int = 2048, seed: int = 0) -> dict:
        """A random batch this model accepts (the dry forward's): points in its range and,
        with the camera branch, random images with the synthetic rig's calibration."""
        device = next(self.parameters()).device
        points = [p.to(device) for p in random_points(self.grid.point_cloud_range, batch_size,
                                                        num_points, seed)]
        if not self.with_camera:
            return {"points": points}
        rig = CameraRig()
        n, (w, h) = len(rig.names), (rig.config.width, rig.config.height)
        gen = torch.Generator().manual_seed(seed)
        imgs = torch.randint(0, 256, (batch_size, n, 3, h, w), generator=gen, dtype=torch.uint8)
        cal = {k: torch.from_numpy(rig.calibration()[k]).expand(batch_size, -1, -1, -1)
               for k in ("cam2img", "lidar2cam")}
        return {"points": points, "imgs": imgs.to(device),
                **{k: v.contiguous().to(device) for k, v in cal.items()}}

    @staticmethod
    def _camera_inputs(inputs: Mapping) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [k for k in CAMERA_INPUTS if k not in inputs]
        if missing:
            raise MissingCameraInputs(
                f"a fusion detector needs inputs {list(CAMERA_INPUTS)}; {missing} missing. Build "
                "the dataset with cameras=True (bev_collate stacks them)")
        imgs, cam2img, lidar2cam = (inputs[k] for k in CAMERA_INPUTS)
        if imgs.dim() != 5 or imgs.shape[2] != 3:
            raise ValueError(f"inputs['imgs'] must be [B, N cameras, 3, H, W], got {tuple(imgs.shape)}")
        if cam2img.shape != (*imgs.shape[:2], 3, 3) or lidar2cam.shape != (*imgs.shape[:2], 4, 4):
            raise ValueError(f"for imgs {tuple(imgs.shape)} the calibration must be cam2img "
                             f"[B, N, 3, 3] and lidar2cam [B, N, 4, 4], got "
                             f"{tuple(cam2img.shape)} and {tuple(lidar2cam.shape)}")
        return imgs, cam2img, lidar2cam

    def camera_bev(self, inputs: Mapping) -> torch.Tensor:
        """The camera BEV map ``[B, C, H, W]`` on the pillar grid (``view_transform``'s output)."""
        imgs, cam2img, lidar2cam = self._camera_inputs(inputs)
        b, n = imgs.shape[:2]
        x = imgs.flatten(0, 1).to(self.img_mean.dtype)
        x = (x - self.img_mean) / self.img_std
        feats = self.img_neck(self.img_backbone(x))[0]
        return self.view_transform(feats, cam2img, lidar2cam)

    def bev_features(self, inputs: Mapping) -> torch.Tensor:
        """The fused BEV map (``fusion_layer``'s output), or the LiDAR map without cameras."""
        lidar = super().bev_features(inputs)
        if not self.with_camera:
            return lidar
        return self.fusion_layer([self.camera_bev(inputs).to(lidar.dtype), lidar])
