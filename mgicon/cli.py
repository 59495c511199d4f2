"""The ``mgicon`` command line: ``register``, ``warp``, ``jacobian``, ``finetune`` and ``learn2reg``.

A drop-in for upstream's ``unigradicon-register`` / ``-warp`` / ``-jacobian``: their underscore spellings
(``--fixed_modality``, ``--transform_out``, ``--io_iterations None``, ``--network_weights``, …) are accepted.

This module parses arguments, calls one library function per command (:mod:`mgicon.jobs`,
:func:`mgicon.learn2reg.write_submission`, :func:`mgicon.train.finetune.finetune`) and reports; the library checks
every output before any work and commits outputs all or nothing (:mod:`mgicon.fsutil`).  Reporting:

* Any failure is one line on stderr naming the file (or option) and the problem, and exit code 2; no traceback
  (``MGICON_DEBUG=1`` shows one for unexpected errors), and no warning of a library: Python warnings and logging
  are off, ITK's warnings are off, and what native code (ITK, GDCM, MetaIO, torch's C++ core) writes to file
  descriptor 2 goes to ``/dev/null`` while the command runs.
* SIGTERM ends a run like Ctrl-C: staged files are removed, one line, exit 143 (130 for SIGINT).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import warnings
from typing import Iterator, Sequence

USAGE_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise CliError(f"{self.prog}: {message}")


# ------------------------------------------------------------------------------------------- argument types


def _whole(value: str, minimum: int, what: str = "a whole number") -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {n}")
    return n


def _io_iterations(value: str) -> int:
    return 0 if value.strip().lower() == "none" else _whole(value, 0, "a number of IO steps or None")


def _positive_float(value: str) -> float:
    x = float(value)
    if not (x > 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return x


def _non_negative_float(value: str) -> float:
    x = float(value)
    if not (x >= 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return x


def _positive_int(value: str) -> int:
    return _whole(value, 1)


# ------------------------------------------------------------------------------------------- declarations


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mgicon", description="multiGradICON registration of 3-D medical images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_register_parser(sub)
    _add_warp_parser(sub)
    _add_jacobian_parser(sub)
    _add_finetune_parser(sub)
    _add_learn2reg_parser(sub)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The network of the commands that register: a released model or a checkpoint."""
    from mgicon.vocabulary import UNIGRADICON

    parser.add_argument(
        "--model",
        default=UNIGRADICON,
        help="multigradicon, unigradicon (released weights from the cache, $MGICON_WEIGHTS or ~/.cache/mgicon), "
        f"or a path to a released .trch or an mgicon checkpoint (default: {UNIGRADICON}, as upstream)",
    )
    parser.add_argument(
        "--network-weights",
        "--network_weights",
        dest="network_weights",
        help="checkpoint path (upstream spelling of --model PATH)",
    )


def _add_registration_options(parser: argparse.ArgumentParser, labels: str, masks: str) -> None:
    """How the commands that register do it (``register``, ``learn2reg``): IO, masking, orientation, the affine
    pre-alignment, intensities and the run options; ``labels``/``masks`` say where the command's label maps and
    masks come from."""
    from mgicon.config import schema_default
    from mgicon.register import default_io_similarity
    from mgicon.vocabulary import AFFINE_METRICS, MULTIGRADICON, SIMILARITIES

    io_steps, io_lr = schema_default("evaluation.io_iterations"), schema_default("evaluation.io_lr")
    dice_weight = schema_default("evaluation.io_dice_weight")
    parser.add_argument(
        "--io-iterations",
        "--io_iterations",
        type=_io_iterations,
        default=io_steps,
        help=f"instance-optimization steps; 0 or None: no IO (default {io_steps}, as upstream)",
    )
    parser.add_argument(
        "--io-sim",
        "--io_sim",
        choices=SIMILARITIES,
        default=None,
        help=f"IO similarity (default: {default_io_similarity(MULTIGRADICON)} for {MULTIGRADICON}, else "
        f"{default_io_similarity('')})",
    )
    parser.add_argument(
        "--io-lr", "--io_lr", type=_positive_float, default=io_lr, help=f"IO learning rate (default {io_lr:g})"
    )
    parser.add_argument(
        "--dice-loss-weight",
        "--dice_loss_weight",
        type=_non_negative_float,
        default=dice_weight,
        help=f"weight of IO's soft Dice term of the shared labels of {labels} (default {dice_weight:g}: none)",
    )
    parser.add_argument(
        "--input-masking",
        "--input_masking",
        action="store_true",
        help=f"also multiply the images by {masks} (masks always restrict the IO similarity)",
    )
    parser.add_argument(
        "--keep-orientation",
        "--keep_orientation",
        action="store_true",
        help="give the network the raw voxel arrays, as upstream (default: the moving image's array is permuted and "
        "flipped, without resampling, to the fixed image's axis orientation)",
    )
    parser.add_argument(
        "--affine",
        action="store_true",
        help="ANTs affine registration first; the network registers the affinely aligned pair and the written "
        "transforms are the composition",
    )
    parser.add_argument(
        "--affine-metric",
        "--affine_metric",
        choices=AFFINE_METRICS,
        default=schema_default("evaluation.affine_metric"),
        help="--affine's metric: auto (mutual information, then a correlation refinement kept unless it lowers the "
        "mutual information), mi or gc alone (default %(default)s)",
    )
    _add_intensity_options(parser)
    _add_run_options(parser, "seed of the IO randomness")


def _add_intensity_options(parser: argparse.ArgumentParser) -> None:
    """How the commands that register normalise intensities before the network."""
    parser.add_argument(
        "--ct-window",
        "--ct_window",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="CT window in HU (default -1000 1000)",
    )
    parser.add_argument(
        "--quantile-range",
        "--quantile_range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="MRI normalisation quantiles (default: minimum and 99th percentile)",
    )


def _add_run_options(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """The options every command that runs a network shares: device, bf16, seed, downloads, the network grid."""
    from mgicon.config import schema_default

    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--seed", type=int, default=schema_default("seed"), help=f"{seed_help} (default %(default)s)")
    parser.add_argument("--no-download", action="store_true", help="never download released weights")
    parser.add_argument(
        "--input-shape",
        "--input_shape",
        nargs=3,
        type=_positive_int,
        metavar=("D", "H", "W"),
        help="the network grid (default: the checkpoint's own; 175 175 175 for a released model)",
    )


def _add_register_parser(sub) -> None:
    reg = sub.add_parser("register", help="register a moving image to a fixed image")
    reg.add_argument("--fixed", required=True, help="fixed image (any ITK format, or a DICOM series folder)")
    reg.add_argument("--moving", required=True, help="moving image")
    reg.add_argument("--fixed-modality", "--fixed_modality", required=True, choices=["ct", "mri"])
    reg.add_argument("--moving-modality", "--moving_modality", required=True, choices=["ct", "mri"])
    _add_model_options(reg)
    reg.add_argument(
        "--transform-out", "--transform_out", required=True, help="ITK transform (.h5/.hdf5): fixed → moving points"
    )
    reg.add_argument("--warped-moving-out", "--warped_moving_out", help="moving image resampled on the fixed grid")
    reg.add_argument("--inverse-transform-out", "--inverse_transform_out", help="ITK transform: moving → fixed points")
    reg.add_argument(
        "--displacement-out",
        "--displacement_out",
        help="dense displacement in mm on the fixed grid (NIfTI vector image)",
    )
    reg.add_argument(
        "--learn2reg-displacement-out",
        help="the field as Learn2Reg's evaluation reads it: NIfTI (x, y, z, 3) on the fixed grid, moving voxel index "
        "of T(p) minus fixed voxel index of p",
    )
    reg.add_argument("--jacobian-out", help="Jacobian determinant of the transform on the fixed grid")
    reg.add_argument("--fixed-mask", "--fixed_mask", help="mask on the fixed grid: restricts the IO similarity")
    reg.add_argument("--moving-mask", "--moving_mask", help="mask on the moving grid: restricts the IO similarity")
    reg.add_argument(
        "--fixed-segmentation", "--fixed_segmentation", help="label map on the fixed grid: IO's Dice term (upstream)"
    )
    reg.add_argument(
        "--moving-segmentation", "--moving_segmentation", help="label map on the moving grid: IO's Dice term"
    )
    reg.add_argument(
        "--loss-function-masking",
        "--loss_function_masking",
        action="store_true",
        help="accepted for upstream compatibility: masks always restrict the IO similarity",
    )
    _add_registration_options(
        reg,
        labels="--fixed-segmentation and --moving-segmentation (with 0, segmentations without masks serve as masks "
        "with input masking, as upstream 1.0.6)",
        masks="--fixed-mask and --moving-mask",
    )


def _add_warp_parser(sub) -> None:
    warp = sub.add_parser("warp", help="resample an image on the fixed grid through a transform")
    warp.add_argument("--fixed", required=True, help="reference image: the output grid")
    warp.add_argument("--moving", required=True, help="image to warp")
    warp.add_argument("--transform", help="ITK transform (fixed → moving points); identity if omitted")
    warp.add_argument("--warped-moving-out", "--warped_moving_out", required=True)
    kind = warp.add_mutually_exclusive_group()
    kind.add_argument(
        "--nearest",
        "--nearest-neighbor",
        "--nearest_neighbor",
        dest="nearest",
        action="store_true",
        help="nearest neighbour (default for integer label maps)",
    )
    kind.add_argument("--linear", action="store_true", help="linear (default for intensity images)")


def _add_jacobian_parser(sub) -> None:
    jac = sub.add_parser("jacobian", help="Jacobian determinant of a transform on the fixed grid")
    jac.add_argument("--transform", required=True)
    jac.add_argument("--fixed", required=True)
    jac.add_argument("--jacobian-out", "--jacob", dest="jacobian_out", required=True)
    jac.add_argument("--log-jacobian-out", "--log_jacob", dest="log_jacobian_out")


def _add_finetune_parser(sub) -> None:
    """``mgicon finetune``: a released model or a checkpoint trained further on one's own manifests."""
    from mgicon.config import schema_default
    from mgicon.vocabulary import PAIRINGS, SIMILARITIES, UNIGRADICON

    fin = sub.add_parser(
        "finetune",
        help="finetune a released model or a checkpoint on your own images (a manifest CSV)",
        description="Finetune with the GradICON objective on the split=train scans of your manifests; a rerun "
        "with the same arguments resumes from OUT/train/latest.pt.  OUT/checkpoint.pt works with "
        "`mgicon register --model` and in evaluation.released.",
    )
    fin.add_argument(
        "--manifest",
        action="append",
        required=True,
        help="manifest CSV (dataset, subject, timepoint, modality, image, label, landmarks, mask, split); repeatable",
    )
    fin.add_argument(
        "--model",
        "--model-weights",
        "--model_weights",
        "--network-weights",
        "--network_weights",
        dest="model",
        default=UNIGRADICON,
        help="multigradicon, unigradicon or a checkpoint path to start from (default: %(default)s)",
    )
    fin.add_argument("--out", "--output-dir", "--output_dir", required=True, help="output folder (resumable)")
    fin.add_argument(
        "--similarity",
        choices=SIMILARITIES,
        default=schema_default("variants.*.similarity"),
        help="similarity of the objective (default %(default)s)",
    )
    fin.add_argument(
        "--steps", type=_positive_int, default=schema_default("training.steps.finetune"), help="default %(default)s"
    )
    fin.add_argument(
        "--lr",
        "--learning-rate",
        "--learning_rate",
        type=_positive_float,
        default=schema_default("training.lr"),
        help="Adam learning rate (default %(default)g)",
    )
    fin.add_argument(
        "--batch-size",
        "--batch_size",
        type=_positive_int,
        default=schema_default("training.batch_size"),
        help="pairs per step (default %(default)s)",
    )
    fin.add_argument(
        "--pairing", choices=PAIRINGS, default="inter", help="which scans are paired (default %(default)s)"
    )
    fin.add_argument(
        "--roi-masking",
        "--roi_masking",
        action="store_true",
        help="multiply every image by its manifest mask before the network and the loss",
    )
    fin.add_argument(
        "--keep-orientation",
        "--keep_orientation",
        action="store_true",
        help="train on the voxel arrays as stored (upstream); default: every scan brought to the axis orientation "
        "most of them are stored in",
    )
    fin.add_argument(
        "--dice-loss-weight",
        "--dice_loss_weight",
        type=_non_negative_float,
        default=schema_default("variants.*.dice_loss_weight"),
        help="weight of a soft Dice term of the manifest's label maps (every split=train row needs a label; "
        "default %(default)g: none)",
    )
    fin.add_argument(
        "--loss-function-masking",
        "--loss_function_masking",
        action="store_true",
        help="restrict the similarity to the fixed-side scan's manifest mask (every split=train row needs one)",
    )
    fin.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=schema_default("training.augment"),
        help="random axis permutations, flips and affines (default %(default)s)",
    )
    fin.add_argument(
        "--checkpoint-every",
        "--save_period",
        type=_positive_int,
        default=schema_default("training.checkpoint_every"),
        help="steps between resumable checkpoints (default %(default)s)",
    )
    _add_run_options(fin, "seed of the pair draws, augmentation and GradICON points")
    fin.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db)")
    fin.add_argument("--no-tracking", action="store_true", help="no MLflow run")
    fin.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_learn2reg_parser(sub) -> None:
    """``mgicon learn2reg``: one displacement field per pair of a Learn2Reg split, and their zip."""
    from mgicon.vocabulary import LEARN2REG_SPLITS

    l2r = sub.add_parser(
        "learn2reg",
        help="displacement fields of a Learn2Reg split, named and laid out for the official evaluation, and a zip",
    )
    l2r.add_argument("--dataset-json", "--dataset_json", required=True, help="the task's *_dataset.json")
    l2r.add_argument("--split", choices=LEARN2REG_SPLITS, required=True, help="registration_val or registration_test")
    _add_model_options(l2r)
    l2r.add_argument("--out", required=True, help="folder of the disp_*.nii.gz fields")
    l2r.add_argument("--zip-out", "--zip_out", help="zip of the fields (default: OUT.zip beside OUT)")
    for role in ("fixed", "moving"):
        l2r.add_argument(
            f"--{role}-modality",
            f"--{role}_modality",
            choices=["ct", "mri"],
            help="default: from the json's modality name of the image's channel (CT, CBCT → ct; MR, T1, T2 → mri)",
        )
    l2r.add_argument(
        "--masks", action="store_true", help="the json's masks (each image entry's mask) restrict the IO similarity"
    )
    _add_registration_options(l2r, labels="the json's label maps (each image entry's label)", masks="the json's masks")


# ------------------------------------------------------------------------------------------------ commands


def _register_options(args: argparse.Namespace):
    """The run options of ``register`` and ``learn2reg`` as the library takes them."""
    from mgicon.register import RegisterOptions

    return RegisterOptions(
        io_iterations=args.io_iterations,
        io_similarity=args.io_sim,
        io_lr=args.io_lr,
        dice_loss_weight=args.dice_loss_weight,
        input_masking=args.input_masking,
        loss_function_masking=getattr(args, "loss_function_masking", False),
        keep_orientation=args.keep_orientation,
        affine=args.affine,
        affine_metric=args.affine_metric,
        ct_window=tuple(args.ct_window) if args.ct_window else None,
        quantile_range=tuple(args.quantile_range) if args.quantile_range else None,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
        input_shape=tuple(args.input_shape) if args.input_shape else None,
        allow_download=not args.no_download,
    )


def cmd_register(args: argparse.Namespace) -> None:
    from mgicon.jobs import RegisterOutputs, register_to_files
    from mgicon.register import ImageFiles

    register_to_files(
        ImageFiles(args.fixed, args.fixed_modality, args.fixed_mask, args.fixed_segmentation),
        ImageFiles(args.moving, args.moving_modality, args.moving_mask, args.moving_segmentation),
        args.network_weights or args.model,
        RegisterOutputs(
            transform=args.transform_out,
            inverse_transform=args.inverse_transform_out,
            warped_moving=args.warped_moving_out,
            displacement=args.displacement_out,
            learn2reg_displacement=args.learn2reg_displacement_out,
            jacobian=args.jacobian_out,
        ),
        _register_options(args),
    )


def cmd_warp(args: argparse.Namespace) -> None:
    from mgicon.jobs import warp_to_file

    nearest = True if args.nearest else (False if args.linear else None)
    warp_to_file(args.fixed, args.moving, args.transform, args.warped_moving_out, nearest=nearest)


def cmd_jacobian(args: argparse.Namespace) -> None:
    from mgicon.jobs import jacobian_to_files

    jacobian_to_files(args.fixed, args.transform, args.jacobian_out, args.log_jacobian_out)


def cmd_finetune(args: argparse.Namespace) -> None:
    from mgicon.train.finetune import FinetuneOptions, finetune

    options = FinetuneOptions(
        similarity=args.similarity,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        augment=args.augment,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
        pairing=args.pairing,
        roi_masking=args.roi_masking,
        dice_loss_weight=args.dice_loss_weight,
        loss_function_masking=args.loss_function_masking,
        keep_orientation=args.keep_orientation,
        input_shape=tuple(args.input_shape) if args.input_shape else None,
        tracking_uri=args.tracking_uri,
        tracking=not args.no_tracking,
    )
    checkpoint = finetune(
        args.model, args.manifest, args.out, options, allow_download=not args.no_download, progress=not args.no_progress
    )
    print(f"mgicon: wrote {checkpoint}", file=sys.stderr)


def cmd_learn2reg(args: argparse.Namespace) -> None:
    from mgicon.learn2reg import write_submission

    write_submission(
        args.dataset_json,
        args.split,
        args.network_weights or args.model,
        args.out,
        _register_options(args),
        zip_path=args.zip_out,
        fixed_modality=args.fixed_modality,
        moving_modality=args.moving_modality,
        masks=args.masks,
        log=lambda line: print(line, flush=True),
    )


COMMANDS = {
    "register": cmd_register,
    "warp": cmd_warp,
    "jacobian": cmd_jacobian,
    "finetune": cmd_finetune,
    "learn2reg": cmd_learn2reg,
}


# ------------------------------------------------------------------------------------------------ reporting


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Only mgicon's own line reaches stderr: Python warnings and logging off, ITK warnings off, and file
    descriptor 2 (where native code writes) on ``/dev/null``, while ``sys.stderr`` keeps the real stderr."""
    import SimpleITK as sitk

    itk_warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    logging_disabled = logging.root.manager.disable
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        stack.callback(logging.disable, logging_disabled)
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        stack.callback(sitk.ProcessObject.SetGlobalWarningDisplay, itk_warnings)
        stack.enter_context(_native_stderr_to_devnull())
        yield


@contextlib.contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at ``/dev/null``; ``sys.stderr``, when it wrote to descriptor 2, writes to a copy
    of the real one meanwhile (replaced ``sys.stderr`` objects, e.g. pytest's, are left alone)."""
    try:
        sys.stderr.flush()
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # sys.stderr replaced by an object without a descriptor
        python_on_fd2 = False
    try:
        saved = os.dup(2)
    except OSError:  # descriptor 2 is closed: nothing to silence
        yield
        return
    original = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        if python_on_fd2:  # Python's stderr writes to a copy of the real descriptor 2
            sys.stderr = open(os.dup(saved), "w", encoding=original.encoding, errors="backslashreplace", buffering=1)
        os.dup2(devnull, 2)
        yield
    finally:
        if sys.stderr is not original:
            sys.stderr.close()
            sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _user_errors() -> tuple[type[Exception], ...]:
    """mgicon's error types whose message names the file (or option) and the problem."""
    from mgicon.data.manifest import ManifestError
    from mgicon.fsutil import OutputError
    from mgicon.io.itk import ImageError
    from mgicon.network.checkpoint import CheckpointError
    from mgicon.register import OptionError
    from mgicon.weights import WeightsError

    return CliError, OutputError, OptionError, ImageError, CheckpointError, WeightsError, ManifestError


def _describe(exc: Exception) -> str:
    """One line for a failure: the message of mgicon's errors (they name the file), ``FILE: reason`` for OS
    errors, else the exception type and message."""
    if isinstance(exc, _user_errors()):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
        if exc.filename2 is not None:
            text += f" (→ {exc.filename2})"
    elif isinstance(exc, MemoryError):
        text = "out of memory"
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (MGICON_DEBUG=1 shows the traceback)"
    text = " ".join(text.split())
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code: 0, 2 for any failure, 130 (SIGINT) or 143 (SIGTERM).

    A failure prints one line on stderr.  ``MGICON_DEBUG=1`` keeps warnings and native output, and lets
    unexpected errors end in their traceback.
    """
    from mgicon import fsutil

    debug = os.environ.get("MGICON_DEBUG", "") not in ("", "0")
    message = None
    code = 0
    commits = fsutil.commits()
    with fsutil.handle_signals(), contextlib.nullcontext() if debug else _quiet():
        try:
            args = build_parser().parse_args(argv)
            COMMANDS[args.command](args)
        except (KeyboardInterrupt, fsutil.Terminated) as exc:
            signum = exc.signum if isinstance(exc, fsutil.Terminated) else signal.SIGINT
            code = 128 + signum
            outputs = "outputs written before it" if fsutil.commits() > commits else "outputs left as they were"
            message = (
                f"{'interrupted' if signum == signal.SIGINT else 'terminated'} by "
                f"{signal.Signals(signum).name}; {outputs}"
            )
        except Exception as exc:
            if debug and not isinstance(exc, _user_errors()):
                raise
            code, message = USAGE_ERROR, f"error: {_describe(exc)}"
    if message:
        print(f"mgicon: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
