"""Registration modules: each maps a (moving, fixed) pair to a map, as a :class:`~mgicon.maps.DisplacementChain`.

The three operators of the paper (Sec. 3.1), with upstream's attribute names (``net``, ``netPhi``, ``netPsi``) so that
the module tree, and with it every ``state_dict`` key, equals upstream's:

* :class:`VectorField` ``Ψ``: a U-Net predicts a displacement field; the map is ``x ↦ x + u(x)``.
* :class:`TwoStep` ``TS{Ψ1, Ψ2}[A, B] = Ψ1[A, B] ∘ Ψ2[A ∘ Ψ1[A, B], B]`` (Eq. 1).
* :class:`DownSample` ``DS{Ψ}[A, B] = Ψ[avgpool(A, 2), avgpool(B, 2)]`` (Eq. 2).

Conventions: see :mod:`mgicon.maps` (maps in [0,1] coordinates, channel k = spatial axis k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgicon.maps import DisplacementChain, warp


class VectorField(nn.Module):
    """``Ψ``: wraps a network that returns a displacement field ``(B, 3, *spatial)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> DisplacementChain:
        return DisplacementChain([self.net(moving, fixed)])


class TwoStep(nn.Module):
    """``TS{Ψ1, Ψ2}``: ``netPhi`` registers the pair, ``netPsi`` registers the warped moving image to the fixed one."""

    def __init__(self, netPhi: nn.Module, netPsi: nn.Module):
        super().__init__()
        self.netPhi = netPhi
        self.netPsi = netPsi

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> DisplacementChain:
        phi = self.netPhi(moving, fixed)
        warped = warp(moving, phi.on_grid(moving.shape[2:]))
        psi = self.netPsi(warped, fixed)
        return psi.then(phi)


class DownSample(nn.Module):
    """``DS{Ψ}``: runs ``net`` on both images average-pooled by 2 (ceil mode, as upstream)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> DisplacementChain:
        return self.net(F.avg_pool3d(moving, 2, ceil_mode=True), F.avg_pool3d(fixed, 2, ceil_mode=True))
