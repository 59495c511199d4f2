"""Helpers for tests and benchmarks: non-trivial random weights and smooth random images.

A freshly built GradICON network predicts exactly the identity (its last convolution starts at zero), which would
make every comparison with upstream vacuous.  :func:`randomize_weights` gives every U-Net random last-layer weights
and BatchNorm statistics, so that maps are smooth, non-trivial deformations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def randomize_weights(net: nn.Module, seed: int = 0, last_std: float = 5e-3) -> nn.Module:
    """Re-initialise ``lastConv`` of every U-Net (normal, ``last_std``) and randomise BatchNorm affine parameters
    and running statistics, deterministically from ``seed``.  Works on mgicon and upstream networks alike."""
    g = torch.Generator().manual_seed(seed)
    for name, module in sorted(net.named_modules(), key=lambda kv: kv[0]):
        if name.endswith("lastConv") and isinstance(module, nn.Conv3d):
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * last_std)
            module.bias.copy_(torch.randn(module.bias.shape, generator=g) * last_std)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
            module.bias.copy_(0.1 * torch.randn(n, generator=g))
            module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            module.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return net


def smooth_volume(shape, seed: int = 0, scale: int = 4, batch: int = 1) -> torch.Tensor:
    """A smooth random image ``(batch, 1, *shape)`` in [0, 1]: upsampled noise, so that LNCC and MIND see
    structure at several scales."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, 1, *[max(2, s // scale) for s in shape]), generator=g)
    vol = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=False)
    vol = vol + 0.05 * torch.rand((batch, 1, *shape), generator=g)
    vol = vol - vol.amin(dim=(2, 3, 4), keepdim=True)
    return vol / vol.amax(dim=(2, 3, 4), keepdim=True)


def rotation(angle_z: float, angle_x: float = 0.0) -> list[float]:
    """A direction matrix (row-major 9-tuple): rotation about z, then about x."""
    import numpy as np

    cz, sz, cx, sx = np.cos(angle_z), np.sin(angle_z), np.cos(angle_x), np.sin(angle_x)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return (rz @ rx).flatten().tolist()


def make_image(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    """A SimpleITK image from a [z, y, x] numpy array with the given geometry (x/y/z order)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(direction))
    return image


@torch.no_grad()
def known_output_network(preset: str = "tiny", translation=None, antisymmetric=None, **overrides):
    """A network whose map is known: only the last U-Net is non-zero.

    ``translation`` (3 values, [0,1] units per array axis): that U-Net's displacement is this constant, so the map
    is ``x + translation``.  ``antisymmetric`` (3 values): its displacement is ``k · (moving − fixed)`` per voxel, so
    swapping the images negates it and ``phi_BA ≈ phi_AB⁻¹`` for smooth, small displacements.
    """
    from mgicon.network import build_network

    net = build_network(preset, **overrides)
    last = net.unets[-1].lastConv
    if translation is not None:
        last.bias.copy_(torch.tensor(translation, dtype=torch.float32) * 10)
    if antisymmetric is not None:
        k = torch.tensor(antisymmetric, dtype=torch.float32) * 10
        centre = last.weight.shape[2] // 2
        # the last two input channels of lastConv are the network inputs (moving, fixed) themselves
        last.weight[:, -2, centre, centre, centre] = k
        last.weight[:, -1, centre, centre, centre] = -k
    return net.eval()
