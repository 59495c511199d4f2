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

import contextlib
import math
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from mgicon.fsutil import atomic_path  # noqa: F401  (re-exported: mgicon.io.itk.atomic_path is used by callers)


class ImageError(ValueError):
    """An input file that cannot be used; the message names the file and the problem."""


# ------------------------------------------------------------------------------------- complete image data
# ITK reads a NIfTI file whose voxel data stop early (a cut download, a full disk) without complaint, filling the
# rest with zeros.  Before reading, the data a file's header promises are compared with the data it holds: the
# whole of a gzip stream is inflated (a truncated or corrupt stream is an error), and NIfTI-1/-2, MetaImage and
# NRRD headers give the byte count.  Anything this check does not understand is left to ITK.

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_HEAD = 64 * 1024  # text headers (MetaImage, NRRD) are looked for in the first 64 KiB
_MET_SIZES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
_NRRD_SIZES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(
        (
            "short",
            "short int",
            "signed short",
            "signed short int",
            "int16",
            "int16_t",
            "ushort",
            "unsigned short",
            "unsigned short int",
            "uint16",
            "uint16_t",
        ),
        2,
    ),
    **dict.fromkeys(
        ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"), 4
    ),
    **dict.fromkeys(
        (
            "longlong",
            "long long",
            "long long int",
            "signed long long",
            "signed long long int",
            "int64",
            "int64_t",
            "ulonglong",
            "unsigned long long",
            "unsigned long long int",
            "uint64",
            "uint64_t",
            "double",
        ),
        8,
    ),
}


class _Inflated(NamedTuple):
    """What a compressed stream holds: its size, its first bytes, and why it is not whole (None: it is)."""

    size: int
    head: bytes
    problem: str | None


def _inflate(fh: BinaryIO, gzip_file: bool = True, keep: int = 540) -> _Inflated:
    """Inflate the rest of ``fh`` to its end without keeping it (only its first ``keep`` bytes): a gzip file (all
    its members, trailers checked) or, with ``gzip_file=False``, one zlib or gzip stream.  ``problem`` is
    ``"truncated"`` when the data end before the stream's end marker, else a description of corrupt data."""
    wbits = 31 if gzip_file else 47
    size, head, d = 0, b"", zlib.decompressobj(wbits)
    try:
        while True:
            data = d.unconsumed_tail or fh.read(_CHUNK)
            if not data:
                return _Inflated(size, head, "truncated")
            chunk = d.decompress(data, _CHUNK)
            size, head = size + len(chunk), head if len(head) >= keep else (head + chunk)[:keep]
            if not d.eof:
                continue
            if not gzip_file:
                return _Inflated(size, head, None)
            rest = d.unused_data
            while len(rest) < 2 and (more := fh.read(_CHUNK)):
                rest += more
            if rest.startswith(_GZIP_MAGIC):  # another gzip member
                fh.seek(-len(rest), os.SEEK_CUR)
                d = zlib.decompressobj(wbits)
                continue
            while rest:  # zero padding is allowed after the last member, nothing else
                if rest.strip(b"\0"):
                    return _Inflated(size, head, "corrupt compressed data: bytes after the end of the gzip stream")
                rest = fh.read(_CHUNK)
            return _Inflated(size, head, None)
    except zlib.error as exc:
        return _Inflated(size, head, f"corrupt compressed data: {exc}")


def _nifti_layout(head: bytes) -> tuple[bool, int, int] | None:
    """``(single_file, vox_offset, data_bytes)`` from a NIfTI-1/-2 (or Analyze) header in either byte order, or
    None when ``head`` is not one that can be understood."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:  # NIfTI-1 / Analyze 7.5
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            offset = struct.unpack(order + "f", head[108:112])[0]
            single, minimum = head[344:348] == b"n+1\0", 352
        elif len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:  # NIfTI-2
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
            single, minimum = head[4:8] == b"n+2\0", 544
        else:
            continue
        if not 1 <= dims[0] <= 7 or min(dims[1 : dims[0] + 1]) < 1 or bitpix <= 0 or not math.isfinite(offset):
            return None
        offset = int(offset)
        if single and offset < minimum:
            return None
        return single, offset, -(-math.prod(dims[1 : dims[0] + 1]) * bitpix // 8)
    return None


def _truncated(path: Path, what: str, have: int, need: int, kind: str = "image data") -> ImageError:
    return ImageError(f"{path}: {what} is truncated ({max(have, 0)} of {need} bytes of {kind})")


def _check_data_file(what: str, data: Path, offset: int, need: int) -> None:
    """The NIfTI/Analyze voxel file ``data`` (plain or gzip) holds ``need`` bytes after ``offset``."""
    with open(data, "rb") as fh:
        if fh.read(2) == _GZIP_MAGIC:
            fh.seek(0)
            inflated = _inflate(fh, keep=0)
            if inflated.problem not in (None, "truncated"):
                raise ImageError(f"{data}: cannot read {what} ({inflated.problem})")
            if inflated.problem or inflated.size - offset < need:
                raise _truncated(data, what, inflated.size - offset, need)
        elif os.fstat(fh.fileno()).st_size - offset < need:
            raise _truncated(data, what, os.fstat(fh.fileno()).st_size - offset, need)


def _check_metaimage(path: Path, what: str, head: bytes, size: int) -> None:
    """A MetaImage (.mha/.mhd) holds the bytes its header promises (local or in its data file)."""
    fields: dict[str, str] = {}
    end = None
    position = 0
    for line in head.splitlines(keepends=True):
        position += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            return
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            end = position
            break
    if end is None:
        return
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        count = math.prod(dims) * int(fields.get("ElementNumberOfChannels", "1"))
        need = count * _MET_SIZES[fields["ElementType"]]
        compressed = fields.get("CompressedData", "False").lower() == "true"
        packed = int(fields["CompressedDataSize"]) if "CompressedDataSize" in fields else None
        skip = int(fields.get("HeaderSize", "0"))
    except (KeyError, ValueError):
        return
    name = fields["ElementDataFile"]
    if name == "LOCAL":
        data, offset = path, end
    elif name.upper() == "LIST" or "%" in name or " " in name:
        return
    else:
        data, offset = path.parent / name, max(skip, 0)
        if not data.is_file():
            raise ImageError(f"{path}: the data file of this {what}, {data}, does not exist")
        size = data.stat().st_size
    if not compressed:
        if size - offset < need:
            raise _truncated(path, what, size - offset, need)
        return
    if packed is not None and size - offset < packed:
        raise _truncated(path, what, size - offset, packed, "compressed image data")
    with open(data, "rb") as fh:
        fh.seek(offset)
        inflated = _inflate(fh, gzip_file=False, keep=0)
    if inflated.problem not in (None, "truncated"):
        raise ImageError(f"{path}: cannot read {what} ({inflated.problem})")
    if inflated.problem or inflated.size < need:
        raise _truncated(path, what, inflated.size, need)


def _check_nrrd(path: Path, what: str, head: bytes, size: int) -> None:
    """A NRRD (.nrrd/.nhdr) with raw or gzip encoding holds the bytes its header promises."""
    lines = head.splitlines(keepends=True)
    fields: dict[str, str] = {}
    end = None
    position = len(lines[0])
    for line in lines[1:]:
        position += len(line)
        text = line.decode("latin-1").strip()
        if not text:
            end = position
            break
        if not text.startswith("#") and ":=" not in text:
            key, _, value = text.partition(":")
            fields[key.strip().lower().replace(" ", "")] = value.strip()
    try:
        need = math.prod(int(v) for v in fields["sizes"].split()) * _NRRD_SIZES[fields["type"].lower()]
        skip = max(int(fields.get("byteskip", "0")), 0)
        line_skip = int(fields.get("lineskip", "0"))
    except (KeyError, ValueError):
        return
    encoding = fields.get("encoding", "").lower()
    if line_skip != 0 or encoding not in {"raw", "gzip", "gz"}:
        return
    name = fields.get("datafile")
    if name is None:
        if end is None:
            return
        data, offset = path, end
    elif name.upper().startswith("LIST") or " " in name or "%" in name:
        return
    else:
        data, offset = path.parent / name, 0
        if not data.is_file():
            raise ImageError(f"{path}: the data file of this {what}, {data}, does not exist")
        size = data.stat().st_size
    if encoding == "raw":
        if size - offset - skip < need:
            raise _truncated(path, what, size - offset - skip, need)
        return
    with open(data, "rb") as fh:
        fh.seek(offset)
        inflated = _inflate(fh, keep=0)
    if inflated.problem not in (None, "truncated"):
        raise ImageError(f"{path}: cannot read {what} ({inflated.problem})")
    if inflated.problem or inflated.size - skip < need:
        raise _truncated(path, what, inflated.size - skip, need)


def check_image_data(path: str | os.PathLike, what: str = "image") -> None:
    """Check that the image file ``path`` holds the voxel data its header promises, whole.

    Understood: NIfTI-1/-2 (``.nii``, ``.nii.gz``, ``.hdr`` + ``.img``), MetaImage (``.mha``, ``.mhd`` + data file),
    NRRD (raw or gzip encoding, attached or detached), and any gzip file, which is inflated to its end.  Other
    formats and headers this check does not understand pass, and are left to ITK.

    Raises:
        ImageError: "PATH: WHAT is truncated (N of M bytes of image data)", a missing data file, or corrupt
            compressed data.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
        size = os.fstat(fh.fileno()).st_size
        inflated = None
        if head.startswith(_GZIP_MAGIC):
            fh.seek(0)
            inflated = _inflate(fh)
    if inflated is not None:
        layout = _nifti_layout(inflated.head)
        short = layout is not None and layout[0] and inflated.size - layout[1] < layout[2]
        if inflated.problem not in (None, "truncated"):
            raise ImageError(f"{path}: cannot read {what} ({inflated.problem})")
        if short:
            raise _truncated(path, what, inflated.size - layout[1], layout[2])
        if inflated.problem:
            raise ImageError(
                f"{path}: {what} is truncated (its gzip stream ends after {inflated.size} bytes, before its end marker)"
            )
        return
    layout = _nifti_layout(head)
    if layout is not None:
        single, offset, need = layout
        if single:
            if size - offset < need:
                raise _truncated(path, what, size - offset, need)
            return
        name = path.name.lower()
        stem = path.name[:-7] if name.endswith(".hdr.gz") else path.name[:-4] if name.endswith(".hdr") else None
        for data in () if stem is None else (path.with_name(stem + ".img"), path.with_name(stem + ".img.gz")):
            if data.is_file():
                _check_data_file(what, data, offset, need)
                return
        return
    if head.startswith(b"NRRD"):
        _check_nrrd(path, what, head, size)
    elif path.name.lower().endswith((".mha", ".mhd")):
        _check_metaimage(path, what, head, size)


# --------------------------------------------------------------------------------------------------- reading


def _itk_reason(exc: RuntimeError) -> str:
    """The reason in a SimpleITK exception's message, without source locations and object addresses."""
    for line in str(exc).splitlines():
        match = re.search(r"(?:ITK ERROR|itk::ERROR|sitk::ERROR):\s*(?:(\w+)\(0x[0-9a-fA-F]+\):\s*)?(.*)", line)
        if match and match.group(2).strip():
            reason = match.group(2).strip()
            return (f"{match.group(1)}: {reason}" if match.group(1) else reason)[:160]
    return "unreadable"


#: while :func:`cached_reads` is active: the images read so far, by file and its state on disk
_read_cache: dict[tuple[str, int, int], sitk.Image] | None = None


@contextlib.contextmanager
def cached_reads() -> Iterator[None]:
    """While active, :func:`read_image` decodes each unchanged file once: a job that reads the same scans for many
    pairs (the evaluation: every scan is in several pairs, its label map scored each time) pays for one read.
    A file that changes on disk (size or modification time) is read again; callers get copy-on-write copies
    (SimpleITK images), so changing one never changes the cache.  Nested uses share the outermost cache."""
    global _read_cache
    if _read_cache is not None:
        yield
        return
    _read_cache = {}
    try:
        yield
    finally:
        _read_cache = None


def read_image(path: str | os.PathLike, *, what: str = "image") -> sitk.Image:
    """Read a 3-D scalar image (any ITK format, or a folder holding one DICOM series); memoised within
    :func:`cached_reads`."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if _read_cache is None or path.is_dir():
        return _read_image(path, what)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)  # `what` only words the errors
    if key not in _read_cache:
        _read_cache[key] = _read_image(path, what)
    return sitk.Image(_read_cache[key])


def _read_image(path: Path, what: str) -> sitk.Image:
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            names = reader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise ImageError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(names)
            image = reader.Execute()
        else:
            check_image_data(path, what)
            image = sitk.ReadImage(str(path))
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except RuntimeError as exc:
        raise ImageError(f"{path}: cannot read {what} ({_itk_reason(exc)})") from None
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
        sitk.sitkUInt8,
        sitk.sitkInt8,
        sitk.sitkUInt16,
        sitk.sitkInt16,
        sitk.sitkUInt32,
        sitk.sitkInt32,
        sitk.sitkUInt64,
        sitk.sitkInt64,
    }


# --------------------------------------------------------------------------------------------------- writing


def write_image(image: sitk.Image, path: str | os.PathLike, atomic: bool = True) -> None:
    """Write an image (format from the suffix), through a temporary file unless the caller stages it."""
    if not atomic:
        sitk.WriteImage(image, str(path), useCompression=True)
        return
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def write_transform(transform: sitk.Transform, path: str | os.PathLike, atomic: bool = True) -> None:
    """Write an ITK transform file (:data:`TRANSFORM_SUFFIXES`), through a temporary file unless the caller
    stages it."""
    if not atomic:
        sitk.WriteTransform(transform, str(path))
        return
    with atomic_path(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))


# The transforms mgicon writes are composites holding a displacement field: only HDF5 and ITK's text format store
# them (ITK's .mat writes a file it cannot read back; MINC .xfm drops the field and adds a _grid_0.mnc file).
TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")
# formats offered when an image suffix cannot be written (each is test-written before it is offered)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".gipl", ".h5", ".vtk", ".tif", ".mrc")
OUTPUT_KINDS = {
    "transform": "an ITK transform",
    "image": "a 3-D image",
    "vector image": "a 3-D vector image",
    "4-D image": "a 4-D image",
}


def _output_sample(kind: str) -> sitk.Image | sitk.Transform:
    """A tiny object of the given output kind, of the types mgicon writes."""
    if kind == "transform":
        field = sitk.Image([2, 2, 2], sitk.sitkVectorFloat64, 3)
        composite = sitk.CompositeTransform(3)
        composite.AddTransform(sitk.AffineTransform(3))
        composite.AddTransform(sitk.DisplacementFieldTransform(field))
        composite.AddTransform(sitk.AffineTransform(3))
        return composite
    if kind == "vector image":
        return sitk.Image([2, 2, 2], sitk.sitkVectorFloat32, 3)
    if kind == "4-D image":
        return sitk.Image([2, 2, 2, 3], sitk.sitkFloat32)
    if kind == "image":
        return sitk.Image([2, 2, 2], sitk.sitkFloat32)
    raise ValueError(f"unknown output kind {kind!r}; choose from {sorted(OUTPUT_KINDS)}")


def _suffix_label(name: str) -> str:
    suffixes = Path(name).suffixes
    if not suffixes:
        return "a file without a suffix"
    last = "".join(suffixes[-2:]) if suffixes[-1].lower() == ".gz" and len(suffixes) > 1 else suffixes[-1]
    return f"a {last} file"


def _can_write(name: str, kind: str, sample: sitk.Image | sitk.Transform) -> bool:
    if kind == "transform" and not name.lower().endswith(TRANSFORM_SUFFIXES):
        return False
    with tempfile.TemporaryDirectory(prefix="mgicon-format-") as folder:
        try:
            if kind == "transform":
                sitk.WriteTransform(sample, os.path.join(folder, name))
            else:
                sitk.WriteImage(sample, os.path.join(folder, name), useCompression=True)
        except RuntimeError:
            return False
    return True


def output_format_problem(path: str | os.PathLike, kind: str) -> str | None:
    """Why an output of ``kind`` (a key of :data:`OUTPUT_KINDS`) cannot be written under ``path``'s name, or None
    when it can: a tiny one is written under the same name in a temporary folder, by the writer mgicon uses
    (transforms must also have one of :data:`TRANSFORM_SUFFIXES`).  Nothing is written beside ``path``."""
    name = Path(path).name
    sample = _output_sample(kind)
    if _can_write(name, kind, sample):
        return None
    candidates = TRANSFORM_SUFFIXES if kind == "transform" else IMAGE_SUFFIXES
    usable = [s for s in candidates if _can_write("probe" + s, kind, sample)]
    return f"cannot write {OUTPUT_KINDS[kind]} to {_suffix_label(name)} (use {', '.join(usable) or 'another name'})"


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


def learn2reg_displacement(field: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """A physical displacement field in the convention of Learn2Reg's evaluation, the one Learn2Reg field of mgicon.

    For each voxel ``p`` of the field's (the fixed) grid: the moving image's continuous voxel index of ``T(p)``
    minus the fixed voxel index of ``p`` (the evaluation samples the moving image at fixed voxel index + field, and
    scales keypoint errors by the moving spacing).  A 4-D image whose last axis holds the 3 components, in the
    images' index order (array ``(3, z, y, x)``, NIfTI dims ``(x, y, z, 3)``), with the fixed grid's geometry.
    """
    vectors = sitk.GetArrayFromImage(field)  # [z, y, x, 3], physical (x, y, z) components
    direction = np.asarray(field.GetDirection()).reshape(3, 3)
    spacing = np.asarray(field.GetSpacing())
    size = field.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")[::-1], axis=-1)
    points = (index * spacing) @ direction.T + np.asarray(field.GetOrigin()) + vectors  # T(p), [z, y, x, 3]
    to_moving = np.linalg.inv(_direction(moving) @ np.diag(moving.GetSpacing()))
    voxels = (points - np.asarray(moving.GetOrigin())) @ to_moving.T - index
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


def mutual_information(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, bins: int = 32) -> float:
    """Mattes mutual information (nats) of ``fixed`` and ``moving`` seen through ``transform`` (fixed → moving
    points), over every fixed voxel that maps inside ``moving`` (linear interpolation, one thread: repeatable)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    method.SetNumberOfThreads(1)
    # ITK's metric value is the negative mutual information (a cost)
    return -method.MetricEvaluate(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32))


def read_header(path: str | os.PathLike) -> sitk.ImageFileReader:
    """The geometry of an image file (size, spacing, origin, direction) without reading its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ImageError(f"{path}: not a readable image") from None
    return reader


def same_geometry(a: str | os.PathLike, b: str | os.PathLike, tol: float = 1e-4) -> bool:
    """Whether two image files share their grid (:func:`same_grid`), from their headers alone."""
    return same_grid(read_header(a), read_header(b), tol)


# ----------------------------------------------------------------------------------------------- orientation
# An image's axis orientation is the DICOM code of its direction matrix's nearest axes ("LPS": index x grows
# towards patient left, y towards posterior, z towards superior; ITK's identity direction).  Reorienting permutes
# and flips the voxel array, with the matching direction and origin, without resampling: the same physical image.

#: the orientation figures are drawn in: ITK's identity direction, whose array axis 0 gives axial slices
DISPLAY_ORIENTATION = "LPS"


def orientation_code(image: sitk.Image | sitk.ImageFileReader) -> str:
    """The three-letter DICOM orientation code nearest to ``image``'s direction matrix (e.g. ``"LPS"``); a header
    (:func:`read_header`) will do."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def common_orientation(paths: Sequence[str | os.PathLike]) -> str:
    """The axis orientation most of the image files ``paths`` are stored in (ties: the first seen), from headers."""
    codes = [orientation_code(read_header(p)) for p in paths]
    if not codes:
        raise ValueError("common_orientation: no image files")
    return max(dict.fromkeys(codes), key=codes.count)


def reorient(image: sitk.Image, orientation: str) -> sitk.Image:
    """``image`` with its voxel array permuted and flipped (no resampling) so that its axes are those of the DICOM
    code ``orientation``: the same physical image, with a direction matrix nearest to that code's."""
    if orientation_code(image) == orientation:
        return image
    return sitk.DICOMOrient(image, orientation)


def reorient_array(array: np.ndarray, like: sitk.Image, orientation: str) -> np.ndarray:
    """A [z, y, x] array whose axes are ``like``'s voxel axes (any shape, e.g. resized to the network grid),
    permuted and flipped as :func:`reorient` does ``like``'s voxel array."""
    if orientation_code(like) == orientation:
        return array
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetDirection(like.GetDirection())
    return to_array(sitk.DICOMOrient(image, orientation))


def compose(*transforms: sitk.Transform) -> sitk.CompositeTransform:
    """``compose(A, B, …)(p) = A(B(…(p)))`` as one flat ITK composite (nested composites are unpacked, so that
    every ITK reader takes the written file)."""
    composite = sitk.CompositeTransform(3)
    for transform in transforms:  # SimpleITK applies the last added transform first
        if isinstance(transform, sitk.CompositeTransform):
            for i in range(transform.GetNumberOfTransforms()):
                composite.AddTransform(transform.GetNthTransform(i))
        else:
            composite.AddTransform(transform)
    return composite
