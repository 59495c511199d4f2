"""The GradICON U-Net: two images in, a displacement field (in [0,1] units) out.

The layout and parameter names equal upstream's ``UNet2`` so that released checkpoints load without renaming:
``downConvs.{d}``, ``upConvs.{d}``, ``batchNorms.{d}`` (d = 0 is the finest level) and ``lastConv``.

Encoder level d: ``x <- conv_s2(leaky_relu(x)) + channel_fit(avg_pool2(x))``; decoder level d:
``x <- batchnorm(convT_s2(leaky_relu(x)) + upsample2(channel_fit(x)))`` cropped to the skip's size and concatenated
with it.  ``channel_fit`` keeps the first channels or zero-pads in front.  The last convolution starts at zero, so an
untrained network predicts the identity map, and its output is divided by 10.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def fit_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the first ``channels`` channels of ``x``, or zero-pad in front up to ``channels``."""
    have = x.shape[1]
    if have >= channels:
        return x[:, :channels]
    pad = [0, 0] * (x.dim() - 2) + [channels - have, 0]
    return F.pad(x, pad)


class UNet(nn.Module):
    """U-Net predicting a 3-channel displacement from a (moving, fixed) pair.

    ``down_channels`` lists the encoder widths starting with the input channels (2 for a pair of single-channel
    images); ``up_channels`` the decoder widths, finest level first.  ``len(up_channels)`` levels.
    """

    def __init__(self, down_channels: Sequence[int], up_channels: Sequence[int], dimension: int = 3):
        super().__init__()
        if len(down_channels) != len(up_channels) + 1:
            raise ValueError("down_channels needs one entry more than up_channels (the input channels)")
        if dimension != 3:
            raise ValueError("mgicon networks are 3-D")
        self.levels = len(up_channels)
        down = list(down_channels)
        up = list(up_channels)
        up_in = [down[d + 1] + (up[d + 1] if d + 1 < self.levels else 0) for d in range(self.levels)]
        self.downConvs = nn.ModuleList(
            nn.Conv3d(down[d], down[d + 1], kernel_size=3, stride=2, padding=1) for d in range(self.levels)
        )
        self.upConvs = nn.ModuleList(
            nn.ConvTranspose3d(up_in[d], up[d], kernel_size=4, stride=2, padding=1) for d in range(self.levels)
        )
        self.batchNorms = nn.ModuleList(nn.BatchNorm3d(up[d]) for d in range(self.levels))
        self.lastConv = nn.Conv3d(down[0] + up[0], dimension, kernel_size=3, padding=1)
        nn.init.zeros_(self.lastConv.weight)
        nn.init.zeros_(self.lastConv.bias)
        # Run on NDHWC tensors: oneDNN's and cuDNN's fast 3-D kernels want them (not part of the state dict).
        self.channels_last = False

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        x = torch.cat([moving, fixed], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        skips = []
        for conv in self.downConvs:
            skips.append(x)
            y = conv(F.leaky_relu(x))
            x = y + fit_channels(F.avg_pool3d(x, 2, ceil_mode=True), y.shape[1])
        for d in reversed(range(self.levels)):
            y = self.upConvs[d](F.leaky_relu(x))
            x = y + F.interpolate(fit_channels(x, y.shape[1]), scale_factor=2, mode="trilinear", align_corners=False)
            x = self.batchNorms[d](x)
            skip = skips[d]
            x = x[:, :, : skip.shape[2], : skip.shape[3], : skip.shape[4]]
            x = torch.cat([x, skip], dim=1)
        return (self.lastConv(x) / 10).contiguous()  # the field in the layout every sampling of it wants


def min_unet_size(levels: int) -> int:
    """The smallest edge length a U-Net of ``levels`` levels accepts (every pooling needs at least 2 voxels)."""
    return 2 ** (levels - 1) + 1
