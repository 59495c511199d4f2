"""The GradICON registration network: U-Nets, the TwoStep/DownSample operators, presets and checkpoints."""

from mgicon.network.checkpoint import (
    CheckpointError,
    infer_config,
    load_checkpoint,
    load_network,
    save_checkpoint,
)
from mgicon.network.model import RegistrationNetwork, build_network
from mgicon.network.presets import PRESETS, NetworkConfig, get_preset
from mgicon.network.registration import DownSample, TwoStep, VectorField
from mgicon.network.unet import UNet

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DownSample",
    "NetworkConfig",
    "RegistrationNetwork",
    "TwoStep",
    "UNet",
    "VectorField",
    "build_network",
    "get_preset",
    "infer_config",
    "load_checkpoint",
    "load_network",
    "save_checkpoint",
]
