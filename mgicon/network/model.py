"""The registration network Φ and its construction from a :class:`~mgicon.network.presets.NetworkConfig`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mgicon.maps import DisplacementChain
from mgicon.network.presets import NetworkConfig, get_preset
from mgicon.network.registration import DownSample, TwoStep, VectorField
from mgicon.network.unet import UNet


class RegistrationNetwork(TwoStep):
    """``Φ = TS{TS{DS{TS{DS{Ψ1}, Ψ2}}, Ψ3}, Ψ4}`` (or without Ψ4), carrying the config that built it.

    ``forward(moving, fixed)`` returns ``phi_AB`` as a :class:`~mgicon.maps.DisplacementChain`; evaluate it with
    ``.on_grid()`` for the map on the fixed image's grid.  Its ``state_dict`` keys equal upstream's ``regis_net``.
    """

    def __init__(self, config: NetworkConfig):
        def vector_field() -> VectorField:
            channels = (2 * config.input_channels, *config.down_channels)
            return VectorField(UNet(channels, config.up_channels))

        inner: nn.Module = TwoStep(DownSample(vector_field()), vector_field())
        if config.include_last_step:
            inner = TwoStep(DownSample(inner), vector_field())
            super().__init__(inner, vector_field())
        else:
            super().__init__(DownSample(inner), vector_field())
        self.config = config

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> DisplacementChain:
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} differ in shape")
        return super().forward(moving, fixed)

    @property
    def unets(self) -> list[UNet]:
        """The U-Nets, coarsest (Ψ1) first."""
        return [m for m in self.modules() if isinstance(m, UNet)]


def build_network(
    preset: str = "paper", input_shape: tuple[int, int, int] | None = None, **overrides: Any
) -> RegistrationNetwork:
    """Build a network from a preset name (``paper``, ``paper-stage1``, ``small``, ``tiny``) and overrides."""
    if input_shape is not None:
        overrides["input_shape"] = tuple(input_shape)
    return RegistrationNetwork(get_preset(preset, **overrides))
