"""Network configurations: the paper's layout and smaller ones of the same structure for CPU work.

A :class:`NetworkConfig` fully describes a network; checkpoints store it so that a checkpoint alone rebuilds its
model.  Every preset has the paper's structure ``TS{TS{DS{TS{DS{Ψ1}, Ψ2}}, Ψ3}, Ψ4}`` (Ψ1 at a quarter of the input
resolution, Ψ2 at half, Ψ3 and Ψ4 at full); ``include_last_step=False`` drops Ψ4 (stage 1 of training).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from mgicon.network.unet import min_unet_size


@dataclass(frozen=True)
class NetworkConfig:
    """What builds a network.  ``down_channels``/``up_channels`` are the U-Net widths, finest level first."""

    input_shape: tuple[int, int, int] = (175, 175, 175)
    down_channels: tuple[int, ...] = (16, 32, 64, 256, 512)
    up_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    include_last_step: bool = True
    input_channels: int = 1
    preset: str = "paper"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "down_channels", tuple(int(c) for c in self.down_channels))
        object.__setattr__(self, "up_channels", tuple(int(c) for c in self.up_channels))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must have 3 entries, got {self.input_shape}")
        if len(self.down_channels) != len(self.up_channels):
            raise ValueError("down_channels and up_channels need one entry per U-Net level")
        smallest = min_unet_size(self.levels)
        coarsest = [-(-(-(-s // 2)) // 2) for s in self.input_shape]  # the innermost U-Net runs at ceil(ceil(N/2)/2)
        if min(coarsest) < smallest:
            raise ValueError(
                f"input_shape {self.input_shape} is too small for {self.levels} U-Net levels: the innermost U-Net "
                f"runs at {tuple(coarsest)} and needs at least {smallest} voxels per axis "
                f"(input at least {4 * smallest - 3} per axis)"
            )

    @property
    def levels(self) -> int:
        return len(self.up_channels)

    @property
    def num_unets(self) -> int:
        return 4 if self.include_last_step else 3

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["down_channels"] = list(self.down_channels)
        d["up_channels"] = list(self.up_channels)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NetworkConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown network config keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "NetworkConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, NetworkConfig] = {
    # upstream's layout: 4 U-Nets x 17,670,229 parameters at 175^3; loads the released checkpoints
    "paper": NetworkConfig(),
    # stage 1 of the paper's schedule: the same without the last full-resolution step (141 state-dict keys)
    "paper-stage1": NetworkConfig(include_last_step=False, preset="paper-stage1"),
    # same structure, narrower and shallower: CPU training of several variants in minutes
    "small": NetworkConfig(
        input_shape=(64, 64, 64), down_channels=(8, 16, 32, 64), up_channels=(8, 16, 32, 32), preset="small"
    ),
    "tiny": NetworkConfig(input_shape=(32, 32, 32), down_channels=(4, 8, 16), up_channels=(4, 8, 16), preset="tiny"),
}


def get_preset(name: str, **overrides: Any) -> NetworkConfig:
    """The preset ``name`` with ``overrides`` (e.g. ``input_shape``, ``include_last_step``) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; choose from {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def network_config(spec: Mapping[str, Any]) -> NetworkConfig:
    """A config from a mapping such as a pipeline's ``network:`` section: ``preset`` plus overrides."""
    spec = dict(spec)
    preset = spec.pop("preset", "paper")
    if "input_shape" in spec:
        spec["input_shape"] = tuple(spec["input_shape"])
    if preset == "custom":  # a checkpoint's own layout (NetworkConfig.to_dict), no preset behind it
        return NetworkConfig.from_dict({**spec, "preset": preset})
    config = get_preset(preset, **spec)
    return config if config.preset == preset else config.replace(preset=preset)
