"""Register two image files: read, normalise per modality, resize to the network grid, predict (with optional
instance optimization), and express the result as ITK transforms in physical space.

Used by the ``mgicon register`` command and by the evaluation stage.  Conventions: see :mod:`mgicon.io.itk`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import SimpleITK as sitk
import torch

from mgicon.io import itk as itkio
from mgicon.io.normalize import normalize
from mgicon.network.inference import predict_map
from mgicon.network.model import RegistrationNetwork
from mgicon.optimize import IO_LEARNING_RATE, instance_optimize


@dataclass
class PreparedImage:
    """An image as read (for geometry and warping) and normalised on the network grid."""

    image: sitk.Image
    tensor: torch.Tensor
    mask: torch.Tensor | None = None


@dataclass
class Registration:
    """The result of registering ``moving`` to ``fixed``: transforms map fixed points to moving points
    (``inverse``: moving points to fixed points) in physical space."""

    fixed: sitk.Image
    moving: sitk.Image
    phi_AB: torch.Tensor
    transform: sitk.Transform
    phi_BA: torch.Tensor | None = None
    inverse: sitk.Transform | None = None
    io_history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def prepare(
    path: str | os.PathLike,
    modality: str,
    shape: Sequence[int],
    mask_path: str | os.PathLike | None = None,
    input_masking: bool = False,
    ct_window: Sequence[float] | None = None,
    quantiles: Sequence[float] | None = None,
) -> PreparedImage:
    """Read an image (and its mask), normalise it for ``modality`` and resize it to the network ``shape``."""
    image, array = itkio.read_scalar_image(path)
    try:
        normalised = normalize(array, modality, ct_window, quantiles)
    except ValueError as exc:
        raise itkio.ImageError(f"{path}: {exc}") from None
    mask = None
    if mask_path is not None:
        mask_array = itkio.read_mask(mask_path, image, path)
        if input_masking:
            normalised = normalised * mask_array
        mask = (itkio.resize_to_network(mask_array, shape, nearest=True) > 0).float()
    return PreparedImage(image, itkio.resize_to_network(normalised, shape), mask)


def register(
    net: RegistrationNetwork,
    moving: PreparedImage,
    fixed: PreparedImage,
    io_iterations: int = 0,
    io_similarity: str = "lncc2",
    io_lr: float = IO_LEARNING_RATE,
    seed: int = 0,
    inverse: bool = False,
    bf16: bool = False,
) -> Registration:
    """Register prepared images with ``net`` (on its current device)."""
    start = time.perf_counter()
    device = next(net.parameters()).device
    a, b = moving.tensor.to(device), fixed.tensor.to(device)
    history: list[dict[str, float]] = []
    if io_iterations > 0:
        result = instance_optimize(
            net,
            a,
            b,
            io_similarity,
            io_iterations,
            io_lr,
            seed=seed,
            mask_moving=moving.mask,
            mask_fixed=fixed.mask,
            return_inverse=inverse,
            bf16=bf16,
        )
        phi_AB, phi_BA, history = result.phi_AB, result.phi_BA, result.history
    else:
        phi_AB = predict_map(net, a, b, bf16=bf16)
        phi_BA = predict_map(net, b, a, bf16=bf16) if inverse else None
    phi_AB = phi_AB.cpu()
    transform = itkio.map_to_transform(phi_AB, moving.image, fixed.image)
    inverse_transform = None
    if phi_BA is not None:
        phi_BA = phi_BA.cpu()
        inverse_transform = itkio.map_to_transform(phi_BA, fixed.image, moving.image)
    return Registration(
        fixed.image, moving.image, phi_AB, transform, phi_BA, inverse_transform, history, time.perf_counter() - start
    )
