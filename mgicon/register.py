"""Register two image files: read, normalise per modality, resize to the network grid, predict (with optional
instance optimization), and express the result as ITK transforms in physical space.

:func:`register_images` registers two image files under :class:`RegisterOptions`, the run options ``mgicon
register`` (:mod:`mgicon.jobs`) and ``mgicon learn2reg`` (:mod:`mgicon.learn2reg`) share; the evaluation stage's
network methods use :func:`prepare` and :func:`register`.  Conventions: see :mod:`mgicon.io.itk`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from mgicon.config import schema_default
from mgicon.io import itk as itkio
from mgicon.io.normalize import normalize
from mgicon.losses import get_similarity
from mgicon.network.inference import predict_map
from mgicon.network.model import RegistrationNetwork
from mgicon.optimize import IO_DICE_WEIGHT, IO_LEARNING_RATE, instance_optimize
from mgicon.vocabulary import AFFINE_GC, AFFINE_METRICS, AFFINE_MI, LNCC, LNCC2, MULTIGRADICON


@dataclass
class PreparedImage:
    """An image as read (for geometry and warping) and normalised on the network grid.

    ``grid`` is the image whose voxel array ``tensor`` holds (resized): ``image`` itself, or ``image`` resampled by
    ``prealign`` (fixed → moving points) onto the fixed grid, and/or reoriented (:func:`mgicon.io.itk.reorient`).
    """

    image: sitk.Image
    tensor: torch.Tensor
    mask: torch.Tensor | None = None
    grid: sitk.Image | None = None
    prealign: sitk.Transform | None = None
    segmentation: torch.Tensor | None = None  # a label map on the network grid (nearest neighbour), for IO's Dice

    @property
    def frame(self) -> sitk.Image:
        """The geometry of ``tensor``'s voxels (what the network map is expressed in)."""
        return self.image if self.grid is None else self.grid


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
    *,
    orientation: str | None = None,
    prealign: tuple[sitk.Transform, sitk.Image] | None = None,
    segmentation_path: str | os.PathLike | None = None,
) -> PreparedImage:
    """Read an image (and its mask), normalise it for ``modality`` and resize it to the network ``shape``.

    ``prealign``: ``(transform, fixed image)``: the normalised image (and mask) is first resampled through the
    transform (fixed → moving points) onto the fixed grid (0 outside).  ``orientation``: a DICOM code the voxel
    array is then permuted/flipped to (:func:`mgicon.io.itk.reorient`, no resampling); None keeps the array."""
    image, array = itkio.read_scalar_image(path)
    try:
        normalised = normalize(array, modality, ct_window, quantiles)
    except ValueError as exc:
        raise itkio.ImageError(f"{path}: {exc}") from None
    mask_array = None
    if mask_path is not None:
        mask_array = itkio.read_mask(mask_path, image, path)
        if input_masking:
            normalised = normalised * mask_array
    seg_array = None if segmentation_path is None else read_segmentation(segmentation_path, image, path)
    grid = image
    if prealign is not None:
        transform, reference = prealign
        normalised = itkio.to_array(
            itkio.warp_image(itkio.from_array(normalised.astype("float32"), like=image), transform, reference, False)
        )
        if mask_array is not None:
            mask_image = itkio.from_array(mask_array.astype("float32"), like=image)
            mask_array = itkio.to_array(itkio.warp_image(mask_image, transform, reference, True))
        if seg_array is not None:
            seg_image = itkio.from_array(seg_array, like=image)
            seg_array = itkio.to_array(itkio.warp_image(seg_image, transform, reference, True))
        grid = reference
    if orientation is not None:
        normalised = itkio.reorient_array(normalised, grid, orientation)
        mask_array = None if mask_array is None else itkio.reorient_array(mask_array, grid, orientation)
        seg_array = None if seg_array is None else itkio.reorient_array(seg_array, grid, orientation)
        grid = itkio.reorient(grid, orientation)
    mask = None if mask_array is None else (itkio.resize_to_network(mask_array, shape, nearest=True) > 0).float()
    tensor = itkio.resize_to_network(normalised, shape)
    seg = None if seg_array is None else itkio.resize_to_network(seg_array, shape, nearest=True)
    return PreparedImage(image, tensor, mask, grid, None if prealign is None else prealign[0], seg)


def read_segmentation(path: str | os.PathLike, like: sitk.Image, like_path: str | os.PathLike) -> np.ndarray:
    """A label map (integer labels, 0 = background) on ``like``'s grid, as a float32 array of its labels."""
    seg = itkio.read_image(path, what="segmentation")
    if not itkio.same_grid(seg, like):
        raise itkio.ImageError(
            f"{path}: segmentation grid (size {seg.GetSize()}) does not match its image {like_path} "
            f"(size {like.GetSize()})"
        )
    array = itkio.to_array(seg).astype(np.float64)
    if not np.isfinite(array).all() or (array != np.round(array)).any() or array.min() < 0:
        raise itkio.ImageError(f"{path}: a segmentation holds non-negative integer labels")
    if not array.any():
        raise itkio.ImageError(f"{path}: segmentation is empty (no non-zero label)")
    return array.astype(np.float32)


#: the correlation refinement of ``auto``: ANTs' last two affine levels (half and full resolution), from the
#: mutual-information result (it converges well within these iterations on 40-48 voxels a side)
AFFINE_REFINEMENT: dict[str, object] = {
    "aff_metric": "GC",
    "aff_iterations": (100, 50),
    "aff_shrink_factors": (2, 1),
    "aff_smoothing_sigmas": (1, 0),
}
#: ``auto`` keeps the refinement unless the pair's mutual information falls by more than this fraction.  Measured
#: (tests/test_affine.py's phantoms and others, 40-48 voxels a side, seeds 0-2): on monomodal and contrast-inverted
#: pairs the refinement changes it by -0.8 % to +5 % (interpolation artefacts beside a more precise alignment); on
#: a non-monotonic pair, where it drifts 2 mm, the mutual information falls by 21-30 % (2 %: about 0.4 mm of drift)
AFFINE_MI_TOLERANCE = 0.02


def affine_prealign(
    moving: sitk.Image, fixed: sitk.Image, seed: int | None = None, metric: str | None = None
) -> sitk.AffineTransform:
    """An ANTs affine registration of ``moving`` to ``fixed`` (fixed → moving points; :mod:`mgicon.io.ants`).

    ``metric`` (:data:`~mgicon.vocabulary.AFFINE_METRICS`; None: the schema's ``evaluation.affine_metric``):
    ``mi`` or ``gc``: ANTs' ``Affine`` with Mattes mutual information or global correlation.  ``auto``: mutual
    information first (it holds for any intensity relation), then a global-correlation refinement from its result
    (more precise where intensities relate linearly: monomodal or contrast-inverted pairs), kept unless it lowers
    the pair's mutual information by more than :data:`AFFINE_MI_TOLERANCE` (a pair whose intensities relate
    non-monotonically, e.g. MR and CT, where correlation pulls the alignment away).  No modality flag is needed.

    Raises:
        ValueError: an unknown ``metric``.
    """
    from mgicon.config import schema_default
    from mgicon.io.ants import register_affine

    metric = schema_default("evaluation.affine_metric") if metric is None else metric
    if metric not in AFFINE_METRICS:
        raise ValueError(f"affine metric {metric!r}: choose from {', '.join(AFFINE_METRICS)}")
    if metric == AFFINE_GC:
        return register_affine(moving, fixed, seed=seed, aff_metric="GC")
    first = register_affine(moving, fixed, seed=seed, aff_metric="mattes")
    if metric == AFFINE_MI:
        return first
    refined = register_affine(moving, fixed, seed=seed, initial=first, **AFFINE_REFINEMENT)
    before = itkio.mutual_information(fixed, moving, first)
    after = itkio.mutual_information(fixed, moving, refined)
    return refined if after >= before - AFFINE_MI_TOLERANCE * abs(before) else first


def read_for_prealign(path: str | os.PathLike) -> sitk.Image:
    """An image for :func:`affine_prealign` (non-finite voxels replaced like :func:`prepare` does)."""
    image, array = itkio.read_scalar_image(path)
    return itkio.from_array(array, like=image)


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
    dice_weight: float = IO_DICE_WEIGHT,
    io_lncc_sigma: float | None = None,
) -> Registration:
    """Register prepared images with ``net`` (on its current device).

    With ``dice_weight > 0`` IO adds the soft Dice term of the images' segmentations (both must have one);
    ``io_lncc_sigma`` (voxels of the network grid) is the LNCC window of IO's 1 − LNCC² (None: upstream's)."""
    start = time.perf_counter()
    device = next(net.parameters()).device
    a, b = moving.tensor.to(device), fixed.tensor.to(device)
    history: list[dict[str, float]] = []
    if io_iterations > 0:
        result = instance_optimize(
            net,
            a,
            b,
            get_similarity(io_similarity, io_lncc_sigma),
            io_iterations,
            io_lr,
            seed=seed,
            mask_moving=moving.mask,
            mask_fixed=fixed.mask,
            return_inverse=inverse,
            bf16=bf16,
            segmentation_moving=moving.segmentation,
            segmentation_fixed=fixed.segmentation,
            dice_weight=dice_weight,
        )
        phi_AB, phi_BA, history = result.phi_AB, result.phi_BA, result.history
    else:
        phi_AB = predict_map(net, a, b, bf16=bf16)
        phi_BA = predict_map(net, b, a, bf16=bf16) if inverse else None
    phi_AB = phi_AB.cpu()
    # the map is expressed in the tensors' frames; composed back, the transforms map physical points as read
    transform = itkio.map_to_transform(phi_AB, moving.frame, fixed.frame)
    if moving.prealign is not None:
        transform = itkio.compose(moving.prealign, transform)
    inverse_transform = None
    if phi_BA is not None:
        phi_BA = phi_BA.cpu()
        inverse_transform = itkio.map_to_transform(phi_BA, fixed.frame, moving.frame)
        if moving.prealign is not None:
            inverse_transform = itkio.compose(inverse_transform, moving.prealign.GetInverse())
    return Registration(
        fixed.image, moving.image, phi_AB, transform, phi_BA, inverse_transform, history, time.perf_counter() - start
    )


# ------------------------------------------------------------------------------------- registering image files


class OptionError(ValueError):
    """A request that cannot be run as given; the message names the option (as the command line spells it)."""


def _default(key: str):
    return field(default_factory=lambda: schema_default(key))


@dataclass(frozen=True)
class RegisterOptions:
    """How a pair of image files is registered, the run options of ``mgicon register`` and ``mgicon learn2reg``.

    Defaults are the config schema's (``evaluation.*``, ``seed``) or, where the pipeline has no such setting,
    upstream's.  ``io_similarity`` None: :func:`default_io_similarity` of the model; ``device`` None:
    :func:`choose_device`; ``input_shape`` None: the checkpoint's own grid.
    """

    io_iterations: int = _default("evaluation.io_iterations")
    io_similarity: str | None = None
    io_lr: float = _default("evaluation.io_lr")
    io_lncc_sigma: float = _default("evaluation.io_lncc_sigma")
    dice_loss_weight: float = _default("evaluation.io_dice_weight")
    input_masking: bool = False
    loss_function_masking: bool = False
    keep_orientation: bool = _default("evaluation.keep_orientation")
    affine: bool = _default("evaluation.affine")
    affine_metric: str = _default("evaluation.affine_metric")
    ct_window: tuple[float, float] | None = None
    quantile_range: tuple[float, float] | None = None
    seed: int = _default("seed")
    device: str | None = None
    bf16: bool = _default("evaluation.bf16")
    input_shape: tuple[int, int, int] | None = None
    allow_download: bool = True


@dataclass(frozen=True)
class ImageFiles:
    """One image of a pair as files: the image, its modality (``ct`` or ``mri``), and optionally a mask and a label
    map on its grid."""

    image: str | os.PathLike
    modality: str
    mask: str | os.PathLike | None = None
    segmentation: str | os.PathLike | None = None


@dataclass(frozen=True)
class InputPlan:
    """What a pair's masks and label maps are used for: the masks restrict IO's similarity (``input_masking``: they
    also multiply the images); the segmentations feed IO's Dice term, weighted ``dice_weight``."""

    fixed_mask: str | os.PathLike | None = None
    moving_mask: str | os.PathLike | None = None
    input_masking: bool = False
    fixed_segmentation: str | os.PathLike | None = None
    moving_segmentation: str | os.PathLike | None = None
    dice_weight: float = 0.0


def plan_inputs(fixed: ImageFiles, moving: ImageFiles, options: RegisterOptions) -> InputPlan:
    """The use of a pair's masks and segmentations, as upstream 1.0.6: a Dice weight > 0 needs both segmentations;
    with weight 0, two segmentations and no masks serve as masks (with input masking unless
    ``loss_function_masking``).

    Raises:
        OptionError: input masking with one mask, one segmentation without the other, or a Dice weight without
            segmentations.
    """
    if (fixed.mask is None) != (moving.mask is None) and options.input_masking:
        raise OptionError("--input-masking needs both --fixed-mask and --moving-mask")
    segmentations = (fixed.segmentation, moving.segmentation)
    if (segmentations[0] is None) != (segmentations[1] is None):
        given = "--fixed-segmentation" if segmentations[0] is not None else "--moving-segmentation"
        raise OptionError(f"{given}: needs both --fixed-segmentation and --moving-segmentation")
    masks = InputPlan(fixed.mask, moving.mask, options.input_masking)
    if options.dice_loss_weight > 0:
        if segmentations[0] is None:
            raise OptionError("--dice-loss-weight: needs --fixed-segmentation and --moving-segmentation")
        return replace(
            masks,
            fixed_segmentation=segmentations[0],
            moving_segmentation=segmentations[1],
            dice_weight=options.dice_loss_weight,
        )
    if segmentations[0] is not None and fixed.mask is None and moving.mask is None:
        if options.loss_function_masking or not options.input_masking:
            return InputPlan(*segmentations, options.input_masking or not options.loss_function_masking)
    return masks


def choose_device(requested: str | None = None) -> str:
    """``requested``, or ``cuda`` when a CUDA device is available, else ``cpu``.

    Raises:
        OptionError: ``cuda`` is asked for and no CUDA device is available.
    """
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"--device {requested}: no CUDA device is available")
    return requested


def default_io_similarity(model: str) -> str:
    """IO's similarity when none is asked for: 1 − LNCC² for the released multiGradICON, LNCC (upstream's
    default) for any other model."""
    return LNCC2 if model == MULTIGRADICON else LNCC


def load_model(model: str, options: RegisterOptions) -> RegistrationNetwork:
    """The network of ``model`` (a released model's name or a checkpoint path) on the options' device and grid.

    Raises:
        OptionError: no CUDA device for ``device="cuda"``.
        WeightsError, CheckpointError: weights that cannot be had or read.
    """
    from mgicon.network.checkpoint import load_network
    from mgicon.weights import resolve_model

    device = choose_device(options.device)
    path = resolve_model(model, allow_download=options.allow_download)
    return load_network(path, map_location=device, input_shape=options.input_shape)


def register_images(
    net: RegistrationNetwork,
    fixed: ImageFiles,
    moving: ImageFiles,
    options: RegisterOptions,
    plan: InputPlan,
    similarity: str,
    inverse: bool = False,
) -> Registration:
    """Register the image files ``moving`` to ``fixed`` with ``net``: normalise, reorient the moving array to the
    fixed one's axes (unless ``keep_orientation``), pre-align affinely (``affine``), predict, IO."""
    shape = net.config.input_shape
    fixed_prepared = prepare(
        fixed.image,
        fixed.modality,
        shape,
        plan.fixed_mask,
        plan.input_masking,
        options.ct_window,
        options.quantile_range,
        segmentation_path=plan.fixed_segmentation,
    )
    prealign = None
    if options.affine:
        transform = affine_prealign(
            read_for_prealign(moving.image), read_for_prealign(fixed.image), options.seed, options.affine_metric
        )
        prealign = (transform, fixed_prepared.image)
    moving_prepared = prepare(
        moving.image,
        moving.modality,
        shape,
        plan.moving_mask,
        plan.input_masking,
        options.ct_window,
        options.quantile_range,
        orientation=None if options.keep_orientation else itkio.orientation_code(fixed_prepared.image),
        prealign=prealign,
        segmentation_path=plan.moving_segmentation,
    )
    return register(
        net,
        moving_prepared,
        fixed_prepared,
        io_iterations=options.io_iterations,
        io_similarity=similarity,
        io_lr=options.io_lr,
        seed=options.seed,
        inverse=inverse,
        bf16=options.bf16,
        dice_weight=plan.dice_weight,
        io_lncc_sigma=options.io_lncc_sigma,
    )
