"""Normalisation settings and the conv-BN-ReLU block every BEV part is built from.

mmdet3d uses BatchNorm momentum 0.01; here 0.1 (PyTorch's default), because the CPU presets
train for only a few hundred steps and running statistics must settle within them, or a
model evaluated in eval mode would see stale statistics.
"""

from __future__ import annotations

from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.1


def bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """A bias-free conv (the BN supplies the bias), BN and ReLU; 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        bn2d(cout),
        nn.ReLU(inplace=True),
    )
