"""All ITK/SimpleITK conversion of mgicon: reading and writing images and transforms, resampling, and the
conversion between a network map and physical space.

Conventions:

* Images are SimpleITK images; ``to_array`` gives the numpy array in **[z, y, x]** order (array axis 0 = ITK z),
  the order of the network's tensors.  Physical points and vectors are ITK's (LPS, mm, x/y/z order).
* A network map ``phi`` (``(1, 3, *shape)``, [0,1] coordinates, channel k = array axis k; see :mod:`mgicon.maps`)
  is defined on the network grid.  An image is put on that grid by resizing its voxel array to ``shape``
  (trilinear, ``align_corners=False``, as upstream), i.e. the image's field of view, voxel edge to voxel edge, is
  stretched onto the network grid: image continuous index ``i`` ↔ network index ``(i + 0.5)·N/size − 0.5``.
* The ITK transform of a registration maps **fixed** physical points to **moving** physical points (what ITK
  resampling expects): ``T = to_physical(moving) ∘ displacement(phi) ∘ to_network(fixed)``, stored as a
  composite of two affine transforms and a displacement field in network-voxel units, like upstream's.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk
import torch


class ImageError(ValueError):
    """An input file that cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, what: str = "image") -> sitk.Image:
    """Read a 3-D scalar image (any ITK format, or a folder holding one DICOM series)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            names = reader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise ImageError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(names)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except ImageError:
        raise
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if "Unable" in ln or "rror" in ln), "unreadable")
        raise ImageError(f"{path}: cannot read {what} ({first[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{path}: {what} has {image.GetNumberOfComponentsPerPixel()} components per voxel, need 1")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    elif dim != 3:
        raise ImageError(f"{path}: {what} is {dim}-D with size {image.GetSize()}; mgicon registers 3-D images")
    if min(image.GetSize()) < 2:
        raise ImageError(f"{path}: {what} has size {image.GetSize()}; need at least 2 voxels per axis")
    return image


def read_scalar_image(path: str | os.PathLike, *, what: str = "image") -> tuple[sitk.Image, np.ndarray]:
    """Read an intensity image and its float32 array; refuse images without finite, varying intensities."""
    image = read_image(path, what=what)
    array = to_array(image).astype(np.float32)
    finite = np.isfinite(array)
    if not finite.any():
        raise ImageError(f"{path}: {what} has no finite voxel (all NaN/inf)")
    if not finite.all():
        array = np.where(finite, array, np.float32(np.nanmin(np.where(finite, array, np.nan))))
    if float(array.max()) == float(array.min()):
        raise ImageError(f"{path}: {what} is constant ({float(array.min())}); nothing to register")
    return image, array


def read_mask(path: str | os.PathLike, like: sitk.Image, like_path: str | os.PathLike) -> np.ndarray:
    """Read a mask (non-zero = inside) that must share ``like``'s grid; returns a float32 0/1 array."""
    mask = read_image(path, what="mask")
    if not same_grid(mask, like):
        raise ImageError(
            f"{path}: mask grid (size {mask.GetSize()}, spacing {_fmt(mask.GetSpacing())}, origin "
            f"{_fmt(mask.GetOrigin())}) does not match its image {like_path} (size {like.GetSize()}, spacing "
            f"{_fmt(like.GetSpacing())}, origin {_fmt(like.GetOrigin())})"
        )
    array = to_array(mask)
    inside = (array != 0) & np.isfinite(array.astype(np.float64))
    if not inside.any():
        raise ImageError(f"{path}: mask is empty")
    return inside.astype(np.float32)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """Whether two images share size, spacing, origin and direction (within ``tol``)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol, rtol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * max(1.0, max(map(abs, a.GetSpacing()))))
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def to_array(image: sitk.Image) -> np.ndarray:
    """The voxel array in [z, y, x] order."""
    return sitk.GetArrayFromImage(image)


def from_array(array: np.ndarray, like: sitk.Image | None = None, is_vector: bool = False) -> sitk.Image:
    """An image from a [z, y, x] array, with ``like``'s geometry when given."""
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    if like is not None:
        image.CopyInformation(like)
    return image


def index_to_physical(image: sitk.Image, indices: np.ndarray) -> np.ndarray:
    """Continuous voxel indices ``(K, 3)`` in ITK (x, y, z) order → physical points in mm ``(K, 3)``."""
    return np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in np.asarray(indices)])


def is_label_image(image: sitk.Image) -> bool:
    """Integer pixel types are label maps: they are warped with nearest neighbour and keep their type."""
    return image.GetPixelID() in {
        sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16,
        sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64,
    }


# --------------------------------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes, so writers pick the same format); on success
    rename it onto ``path``, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_image(image: sitk.Image, path: str | os.PathLike, atomic: bool = True) -> None:
    """Write an image (format from the suffix), through a temporary file unless the caller stages it."""
    if not atomic:
        sitk.WriteImage(image, str(path), useCompression=True)
        return
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def write_transform(transform: sitk.Transform, path: str | os.PathLike, atomic: bool = True) -> None:
    """Write an ITK transform file (.h5/.hdf5/.tfm), through a temporary file unless the caller stages it."""
    if not atomic:
        sitk.WriteTransform(transform, str(path))
        return
    with atomic_path(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))


def read_transform(path: str | os.PathLike) -> sitk.Transform:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such transform file")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError:
        raise ImageError(f"{path}: not a readable ITK transform file") from None
    if transform.GetDimension() != 3:
        raise ImageError(f"{path}: transform is {transform.GetDimension()}-D; need 3-D")
    return transform


# ------------------------------------------------------------------------------------- network <-> physical


def resize_to_network(array: np.ndarray, shape: Sequence[int], nearest: bool = False) -> torch.Tensor:
    """A [z, y, x] array resized to the network ``shape`` as a ``(1, 1, *shape)`` float32 tensor (trilinear,
    ``align_corners=False``, as upstream; ``nearest`` for masks)."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if nearest:
        return torch.nn.functional.interpolate(t, size=tuple(shape), mode="nearest")
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)


def _direction(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)


def network_to_physical(image: sitk.Image, shape: Sequence[int]) -> sitk.AffineTransform:
    """Affine map from network voxel index (x, y, z; network ``shape`` given in array order) to ``image``'s
    physical space."""
    n = np.asarray(shape[::-1], dtype=np.float64)
    size = np.asarray(image.GetSize(), dtype=np.float64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = _direction(image)
    scale = size / n
    matrix = direction @ np.diag(spacing * scale)
    translation = np.asarray(image.GetOrigin()) + direction @ (spacing * (0.5 * scale - 0.5))
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix.flatten().tolist())
    transform.SetTranslation(translation.tolist())
    return transform


def physical_to_network(image: sitk.Image, shape: Sequence[int]) -> sitk.AffineTransform:
    """The inverse of :func:`network_to_physical`."""
    forward = network_to_physical(image, shape)
    matrix = np.asarray(forward.GetMatrix()).reshape(3, 3)
    inverse = np.linalg.inv(matrix)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(inverse.flatten().tolist())
    transform.SetTranslation((-inverse @ np.asarray(forward.GetTranslation())).tolist())
    return transform


def on_network_grid(array: np.ndarray, image: sitk.Image) -> sitk.Image:
    """An array already resized to a network shape, as an image covering ``image``'s field of view (the network
    grid's voxel centres in ``image``'s physical space)."""
    shape = array.shape
    to_physical = network_to_physical(image, shape)
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(tuple(np.asarray(image.GetSpacing()) * np.asarray(image.GetSize()) / np.asarray(shape[::-1])))
    out.SetOrigin(tuple(to_physical.GetTranslation()))
    out.SetDirection(image.GetDirection())
    return out


def map_to_displacement_transform(phi: torch.Tensor) -> sitk.DisplacementFieldTransform:
    """The map ``phi`` (``(1, 3, *shape)`` in [0,1]) as an ITK displacement field in network-voxel units on the
    network grid (origin 0, spacing 1); outside the grid ITK extends the border displacement."""
    if phi.dim() != 5 or phi.shape[:2] != (1, 3):
        raise ValueError(f"expected one map of shape (1, 3, D, H, W), got {tuple(phi.shape)}")
    shape = phi.shape[2:]
    from mgicon.maps import identity_grid

    disp = (phi.detach().cpu().double() - identity_grid(shape, "cpu", torch.float64))[0]
    disp = disp * torch.tensor([s - 1 for s in shape], dtype=torch.float64).view(3, 1, 1, 1)
    # array [z, y, x, component] with components in ITK (x, y, z) order
    vectors = disp.flip(0).permute(1, 2, 3, 0).contiguous().numpy()
    field = sitk.GetImageFromArray(vectors, isVector=True)
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def map_to_transform(phi: torch.Tensor, moving: sitk.Image, fixed: sitk.Image) -> sitk.CompositeTransform:
    """The physical transform (fixed points → moving points) of a network map ``phi`` registering ``moving``
    to ``fixed``."""
    shape = tuple(phi.shape[2:])
    composite = sitk.CompositeTransform(3)
    # SimpleITK applies the last added transform first
    composite.AddTransform(network_to_physical(moving, shape))
    composite.AddTransform(map_to_displacement_transform(phi))
    composite.AddTransform(physical_to_network(fixed, shape))
    return composite


def transform_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """``transform`` applied to physical points ``(K, 3)`` (mm, ITK/LPS)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return np.array([transform.TransformPoint(tuple(map(float, p))) for p in points], dtype=np.float64).reshape(-1, 3)


def displacement_field(transform: sitk.Transform, reference: sitk.Image) -> sitk.Image:
    """The dense displacement ``T(p) − p`` in mm (ITK/LPS components) at every voxel centre of ``reference``."""
    f = sitk.TransformToDisplacementFieldFilter()
    f.SetReferenceImage(reference)
    f.SetOutputPixelType(sitk.sitkVectorFloat64)
    return f.Execute(transform)


def learn2reg_displacement(field: sitk.Image) -> sitk.Image:
    """A physical displacement field as Learn2Reg stores it: voxel units of the reference grid, a 4-D image
    whose last axis holds the 3 components (array ``(3, z, y, x)``, NIfTI dims ``(x, y, z, 3)``)."""
    vectors = sitk.GetArrayFromImage(field)  # [z, y, x, 3], physical (x, y, z) components
    direction = np.asarray(field.GetDirection()).reshape(3, 3)
    spacing = np.asarray(field.GetSpacing())
    voxels = (vectors @ direction) / spacing  # D^T v per voxel, then per-axis spacing
    volume = sitk.GetImageFromArray(np.moveaxis(voxels, -1, 0).astype(np.float32), isVector=False)
    volume.SetSpacing(tuple(field.GetSpacing()) + (1.0,))
    volume.SetOrigin(tuple(field.GetOrigin()) + (0.0,))
    d4 = np.eye(4)
    d4[:3, :3] = direction
    volume.SetDirection(d4.flatten().tolist())
    return volume


def as_float32_vectors(field: sitk.Image) -> sitk.Image:
    return sitk.Cast(field, sitk.sitkVectorFloat32)


def identity_transform() -> sitk.Transform:
    return sitk.Transform(3, sitk.sitkIdentity)


def log_image(image: sitk.Image) -> sitk.Image:
    """Natural logarithm per voxel (non-positive values give NaN/-inf, as ITK's LogImageFilter)."""
    return sitk.Log(sitk.Cast(image, sitk.sitkFloat32))


def jacobian_determinant(field: sitk.Image) -> sitk.Image:
    """det(I + ∇u) of a physical displacement field per voxel (float32), with the gradient taken in physical
    space.  (ITK's DisplacementFieldJacobianDeterminantFilter ignores the direction matrix.)"""
    from mgicon.metrics import jacobian_determinant_physical

    vectors = sitk.GetArrayFromImage(field)  # [z, y, x, 3], components in physical x, y, z
    direction = _direction(field)[:, ::-1]  # columns: physical directions of the array axes z, y, x
    det = jacobian_determinant_physical(vectors, field.GetSpacing()[::-1], direction)
    return from_array(det.astype(np.float32), like=field)


def warp_image(
    image: sitk.Image, transform: sitk.Transform, reference: sitk.Image, nearest: bool | None = None
) -> sitk.Image:
    """``image`` resampled on ``reference``'s grid through ``transform`` (fixed → moving points): linear for
    intensities, nearest neighbour for label maps (``nearest=None`` decides by pixel type); the pixel type is
    kept; outside the moving image the value is 0."""
    if nearest is None:
        nearest = is_label_image(image)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, transform, interpolator, 0.0, image.GetPixelID())
