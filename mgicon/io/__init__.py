"""Images in, transforms out: the only package that touches ITK/SimpleITK (in :mod:`mgicon.io.itk`)."""

from mgicon.io.itk import (
    ImageError,
    displacement_field,
    jacobian_determinant,
    learn2reg_displacement,
    map_to_transform,
    read_image,
    read_mask,
    read_scalar_image,
    read_transform,
    resize_to_network,
    warp_image,
    write_image,
    write_transform,
)
from mgicon.io.normalize import MODALITIES, normalize

__all__ = [
    "MODALITIES",
    "ImageError",
    "displacement_field",
    "jacobian_determinant",
    "learn2reg_displacement",
    "map_to_transform",
    "normalize",
    "read_image",
    "read_mask",
    "read_scalar_image",
    "read_transform",
    "resize_to_network",
    "warp_image",
    "write_image",
    "write_transform",
]
