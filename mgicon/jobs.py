"""The jobs of ``mgicon register``, ``warp`` and ``jacobian`` as library functions on files.

Each checks every output before any work (:func:`mgicon.fsutil.check_outputs`, with the writers' format rules of
:func:`mgicon.io.itk.output_format_problem`), does its work, and commits its outputs all or none
(:class:`mgicon.fsutil.StagedOutputs`).  Errors name the option as the command line spells it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mgicon import register as reg
from mgicon.fsutil import StagedOutputs, check_outputs
from mgicon.io import itk as itkio


@dataclass(frozen=True)
class RegisterOutputs:
    """The files :func:`register_to_files` writes (None: not asked for).

    ``transform``: ITK transform, fixed → moving points; ``inverse_transform``: moving → fixed; ``warped_moving``:
    the moving image on the fixed grid; ``displacement``: the dense field in mm on the fixed grid;
    ``learn2reg_displacement``: the field as Learn2Reg's evaluation reads it
    (:func:`mgicon.io.itk.learn2reg_displacement`); ``jacobian``: det of the transform's Jacobian on the fixed grid.
    """

    transform: str | os.PathLike
    inverse_transform: str | os.PathLike | None = None
    warped_moving: str | os.PathLike | None = None
    displacement: str | os.PathLike | None = None
    learn2reg_displacement: str | os.PathLike | None = None
    jacobian: str | os.PathLike | None = None


#: each output's command-line option (named in errors) and its kind (:data:`mgicon.io.itk.OUTPUT_KINDS`)
REGISTER_OUTPUTS = {
    "transform": ("--transform-out", "transform"),
    "inverse_transform": ("--inverse-transform-out", "transform"),
    "warped_moving": ("--warped-moving-out", "image"),
    "displacement": ("--displacement-out", "vector image"),
    "learn2reg_displacement": ("--learn2reg-displacement-out", "4-D image"),
    "jacobian": ("--jacobian-out", "image"),
}


def register_to_files(
    fixed: reg.ImageFiles,
    moving: reg.ImageFiles,
    model: str,
    outputs: RegisterOutputs,
    options: reg.RegisterOptions | None = None,
) -> reg.Registration:
    """Register ``moving`` to ``fixed`` with ``model`` (a released model's name or a checkpoint path) and write
    ``outputs``, all or none; returns the registration.

    Raises:
        OutputError: an output that could not be written (checked before any work).
        OptionError: masks or segmentations that do not go together (:func:`mgicon.register.plan_inputs`), or no
            CUDA device for ``device="cuda"``.
        ImageError, WeightsError, CheckpointError: inputs that cannot be read.
    """
    options = options or reg.RegisterOptions()
    check_outputs(
        [(option, getattr(outputs, name), kind) for name, (option, kind) in REGISTER_OUTPUTS.items()],
        [
            ("--fixed", fixed.image),
            ("--moving", moving.image),
            ("--fixed-mask", fixed.mask),
            ("--moving-mask", moving.mask),
            ("--fixed-segmentation", fixed.segmentation),
            ("--moving-segmentation", moving.segmentation),
            ("--model", model),
        ],
        itkio.output_format_problem,
    )
    plan = reg.plan_inputs(fixed, moving, options)
    torch.manual_seed(options.seed)
    net = reg.load_model(model, options)
    similarity = options.io_similarity or reg.default_io_similarity(model)
    result = reg.register_images(
        net, fixed, moving, options, plan, similarity, inverse=outputs.inverse_transform is not None
    )
    with StagedOutputs() as out:
        itkio.write_transform(result.transform, out.path(outputs.transform), atomic=False)
        if outputs.inverse_transform:
            itkio.write_transform(result.inverse, out.path(outputs.inverse_transform), atomic=False)
        if outputs.warped_moving:
            warped = itkio.warp_image(result.moving, result.transform, result.fixed)
            itkio.write_image(warped, out.path(outputs.warped_moving), atomic=False)
        if outputs.displacement or outputs.learn2reg_displacement or outputs.jacobian:
            field = itkio.displacement_field(result.transform, result.fixed)
            if outputs.displacement:
                itkio.write_image(itkio.as_float32_vectors(field), out.path(outputs.displacement), atomic=False)
            if outputs.learn2reg_displacement:
                itkio.write_image(
                    itkio.learn2reg_displacement(field, result.moving),
                    out.path(outputs.learn2reg_displacement),
                    atomic=False,
                )
            if outputs.jacobian:
                itkio.write_image(itkio.jacobian_determinant(field), out.path(outputs.jacobian), atomic=False)
        out.commit()
    return result


def warp_to_file(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    transform: str | os.PathLike | None,
    warped_out: str | os.PathLike,
    nearest: bool | None = None,
) -> None:
    """Resample ``moving`` on ``fixed``'s grid through ``transform`` (fixed → moving points; None: the identity)
    into ``warped_out``; ``nearest`` None: nearest neighbour for label maps, linear otherwise."""
    check_outputs(
        [("--warped-moving-out", warped_out, "image")],
        [("--fixed", fixed), ("--moving", moving), ("--transform", transform)],
        itkio.output_format_problem,
    )
    fixed_image = itkio.read_image(fixed, what="fixed image")
    moving_image = itkio.read_image(moving, what="moving image")
    t = itkio.read_transform(transform) if transform else itkio.identity_transform()
    warped = itkio.warp_image(moving_image, t, fixed_image, nearest=nearest)
    with StagedOutputs() as out:
        itkio.write_image(warped, out.path(warped_out), atomic=False)
        out.commit()


def jacobian_to_files(
    fixed: str | os.PathLike,
    transform: str | os.PathLike,
    jacobian_out: str | os.PathLike,
    log_jacobian_out: str | os.PathLike | None = None,
) -> None:
    """The Jacobian determinant of ``transform`` on ``fixed``'s grid into ``jacobian_out`` (and its logarithm into
    ``log_jacobian_out``)."""
    check_outputs(
        [("--jacobian-out", jacobian_out, "image"), ("--log-jacobian-out", log_jacobian_out, "image")],
        [("--fixed", fixed), ("--transform", transform)],
        itkio.output_format_problem,
    )
    fixed_image = itkio.read_image(fixed, what="fixed image")
    det = itkio.jacobian_determinant(itkio.displacement_field(itkio.read_transform(transform), fixed_image))
    with StagedOutputs() as out:
        itkio.write_image(det, out.path(jacobian_out), atomic=False)
        if log_jacobian_out:
            itkio.write_image(itkio.log_image(det), out.path(log_jacobian_out), atomic=False)
        out.commit()
