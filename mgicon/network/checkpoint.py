"""Checkpoints that rebuild their own network, and loading of upstream's released ``.trch`` state dicts.

An mgicon checkpoint is a ``torch.save`` of ``{"format": "mgicon-checkpoint", "version": 1, "config": {...},
"state_dict": {...}, **extra}``.  A bare state dict (upstream's released ``Step_2_final.trch``, 188 keys, or a
stage-1 network, 141 keys) is recognised too: its layout (widths, levels, last step) is read off the tensor shapes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mgicon.fsutil import atomic_open
from mgicon.network.model import RegistrationNetwork
from mgicon.network.presets import PRESETS, NetworkConfig

FORMAT = "mgicon-checkpoint"
VERSION = 1

_COARSEST_PREFIX = {True: "netPhi.netPhi.net.netPhi.net.net.", False: "netPhi.net.netPhi.net.net."}


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names the file and the problem."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file beside ``path`` (:func:`mgicon.fsutil.atomic_open`): a reader never
    sees half a file."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def write_checkpoint(
    path: str | os.PathLike,
    config: NetworkConfig | Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    **extra: Any,
) -> None:
    """Write an mgicon checkpoint (the one layout of this module's docstring) atomically: the network ``config``,
    its ``state_dict`` and any ``extra`` entries (e.g. optimizer state, the step).

    Raises:
        ValueError: an ``extra`` entry has a reserved name.
    """
    config = config.to_dict() if isinstance(config, NetworkConfig) else dict(config)
    payload = {"format": FORMAT, "version": VERSION, "config": config, "state_dict": state_dict}
    clash = set(extra) & set(payload)
    if clash:
        raise ValueError(f"extra checkpoint entries clash with reserved keys: {sorted(clash)}")
    payload.update(extra)
    atomic_torch_save(payload, path)


def save_checkpoint(net: RegistrationNetwork, path: str | os.PathLike, **extra: Any) -> None:
    """Write ``net``'s weights with its config (and any ``extra`` entries, e.g. optimizer state) atomically."""
    write_checkpoint(path, net.config, net.state_dict(), **extra)


def infer_config(state_dict: Mapping[str, torch.Tensor], input_shape=(175, 175, 175)) -> NetworkConfig:
    """The network layout of a bare state dict, read off its key names and tensor shapes."""
    for last_step, prefix in _COARSEST_PREFIX.items():
        if f"{prefix}lastConv.weight" in state_dict:
            break
    else:
        raise CheckpointError("not a GradICON network state dict (no coarsest U-Net found)")
    levels = sorted(
        int(m.group(1)) for k in state_dict if (m := re.fullmatch(re.escape(prefix) + r"downConvs\.(\d+)\.weight", k))
    )
    down = tuple(int(state_dict[f"{prefix}downConvs.{d}.weight"].shape[0]) for d in levels)
    up = tuple(int(state_dict[f"{prefix}upConvs.{d}.weight"].shape[1]) for d in levels)
    in_channels = int(state_dict[f"{prefix}downConvs.0.weight"].shape[1]) // 2
    config = NetworkConfig(
        input_shape=tuple(input_shape),
        down_channels=down,
        up_channels=up,
        include_last_step=last_step,
        input_channels=in_channels,
        preset="custom",
    )
    for name, preset in PRESETS.items():
        if preset.replace(input_shape=config.input_shape, preset="custom") == config:
            return config.replace(preset=name)
    return config


def _stored_config(path: Path, payload: Mapping[str, Any]) -> NetworkConfig:
    """The network config of an mgicon checkpoint's payload.

    Raises:
        CheckpointError: naming ``path``, when the ``config`` entry is missing, not a mapping, or not a valid
            :class:`NetworkConfig` (unknown keys, bad values).
    """
    if "config" not in payload:
        raise CheckpointError(f"{path}: mgicon checkpoint has no 'config' entry (the network it holds is unknown)")
    config = payload["config"]
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: the checkpoint's 'config' entry is a {type(config).__name__}, not a mapping")
    try:
        return NetworkConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's network config is not valid ({exc})") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file: returns ``{"config": NetworkConfig, "state_dict": ..., **extra}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(payload).__name__}, expected a mapping)")
    if payload.get("format") == FORMAT:
        if payload.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported")
        out = dict(payload)
        out["config"] = _stored_config(path, payload)
        if not isinstance(payload.get("state_dict"), Mapping):
            raise CheckpointError(f"{path}: mgicon checkpoint has no 'state_dict' entry (a mapping of weights)")
        return out
    try:
        config = infer_config(payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return {"config": config, "state_dict": dict(payload)}


def checkpoint_input_shape(
    checkpoint: Mapping[str, Any], requested: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """The grid a checkpoint runs at, the one rule of every route (``mgicon register``/``finetune``, evaluation).

    ``requested`` (``--input-shape``, ``evaluation.released.NAME.input_shape``) when given; else the checkpoint's
    own: an mgicon checkpoint carries its config's ``input_shape``, a bare released state dict carries no grid and
    runs at upstream's 175³ (:func:`infer_config`'s default).  ``checkpoint`` is :func:`load_checkpoint`'s result.
    """
    if requested is not None:
        return tuple(int(n) for n in requested)
    return tuple(checkpoint["config"].input_shape)


def load_network(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    input_shape: tuple[int, int, int] | None = None,
) -> RegistrationNetwork:
    """Rebuild the network of a checkpoint (ours or a released ``.trch``) with its weights, in eval mode.

    ``input_shape`` overrides the stored one (:func:`checkpoint_input_shape`: a bare state dict runs at 175³).
    """
    ckpt = load_checkpoint(path, map_location)
    config: NetworkConfig = ckpt["config"].replace(input_shape=checkpoint_input_shape(ckpt, input_shape))
    try:
        net = RegistrationNetwork(config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot build the network its config describes ({exc})") from None
    try:
        net.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the network they describe ({first})") from None
    return net.to(map_location).eval()
