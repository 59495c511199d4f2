"""The ``mgicon`` command line: ``register``, ``warp``, ``jacobian``, ``finetune`` and ``learn2reg``.

A drop-in for upstream's ``unigradicon-register`` / ``-warp`` / ``-jacobian``: their underscore spellings
(``--fixed_modality``, ``--transform_out``, ``--io_iterations None``, ``--network_weights``, …) are accepted.

Nothing bad gets through, nothing is clobbered:

* Any failure is one line on stderr naming the file (or option) and the problem, and exit code 2; no traceback
  (``MGICON_DEBUG=1`` shows one for unexpected errors), and no warning of a library: Python warnings and logging
  are off, ITK's warnings are off, and what native code (ITK, GDCM, MetaIO, torch's C++ core) writes to file
  descriptor 2 goes to ``/dev/null`` while the command runs.
* Every output path is checked before any work starts (:func:`check_outputs`): its folder exists or can be
  created and is writable, it is not a folder nor an input nor another output, and its writer can write that kind
  of output under that name.
* Outputs are staged in private temporary folders beside their targets and committed all or nothing
  (:class:`StagedOutputs`): a failed or interrupted run leaves every pre-existing output byte-identical.
* SIGTERM ends a run like Ctrl-C: staged files are removed, one line, exit 143 (130 for SIGINT).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator, Sequence

USAGE_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise CliError(f"{self.prog}: {message}")


# ------------------------------------------------------------------------------------------------- signals

_deferring = 0  # > 0 inside _signals_deferred
_pending: int | None = None  # a signal held back
_committed = False  # whether this run of main committed outputs (a held-back signal is acted on after that)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT → KeyboardInterrupt, SIGTERM → :class:`Terminated`; held back while :func:`_signals_deferred`."""
    global _pending
    if _deferring:
        _pending = signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (as handled by :func:`main`) back until the block is done, then act on them."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    """Handle SIGINT and SIGTERM with :func:`_on_signal` (main thread only; ignored signals stay ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN:
            previous[signum] = signal.SIG_DFL if handler is None else handler
            signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ------------------------------------------------------------------------------------------------- outputs


class StagedOutputs:
    """Output files written first into private temporary folders beside their targets.

    :meth:`path` gives a path with the target's own name inside such a folder, so that a writer that adds
    companion files (``.mhd`` + ``.zraw``, ``.hdr`` + ``.img``) names them as it would beside the target.
    :meth:`commit` moves every staged file into place, or none; :meth:`discard` removes whatever is staged (and
    the folders this object created for the targets).
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temporary folder, target)
        self._created: list[Path] = []  # parent folders made for the targets, outermost first

    def path(self, final: str | os.PathLike) -> Path:
        """A path to write the output ``final`` to (its parent folders are created if missing)."""
        final = Path(final)
        missing = []
        for folder in [final.parent, *final.parent.parents]:
            if folder.exists():
                break
            missing.append(folder)
        for folder in reversed(missing):
            folder.mkdir(exist_ok=True)
            self._created.append(folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        self._staged.append((staging, final))
        return staging / final.name

    def commit(self) -> None:
        """Move every staged file into place, all or nothing.

        Targets that exist are first moved aside (under unique names), then the staged files are moved in; on any
        failure (or interruption) the new files are removed and every original is put back, byte-identical.  On
        success the originals are deleted.  SIGINT/SIGTERM are held back until the commit is complete.

        Raises:
            CliError: two outputs would write the same file, or a target is a folder.
            OSError: a move failed (everything is as it was before the commit).
        """
        global _committed
        with _signals_deferred():
            moves = [(f, final.parent / f.name) for staging, final in self._staged for f in sorted(staging.iterdir())]
            targets = [os.path.abspath(t) for _, t in moves]
            if len(set(targets)) != len(targets):
                raise CliError(f"{next(t for t in targets if targets.count(t) > 1)}: two outputs write this file")
            aside: list[tuple[Path, Path]] = []  # (where the original is kept, target)
            placed: list[Path] = []
            try:
                for _, target in moves:
                    if target.is_dir() and not target.is_symlink():
                        raise CliError(f"{target}: is a folder; an output cannot replace it")
                    if os.path.lexists(target):
                        fd, keep = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".orig", dir=target.parent)
                        os.close(fd)
                        try:
                            os.replace(target, keep)
                        except BaseException:
                            os.unlink(keep)
                            raise
                        aside.append((Path(keep), target))
                for staged, target in moves:
                    os.replace(staged, target)
                    placed.append(target)
            except BaseException:
                self._roll_back(placed, aside)
                raise
            for keep, _ in aside:
                with contextlib.suppress(OSError):
                    keep.unlink()
            _committed = True
            self._created.clear()  # the folders now hold outputs
            self.discard()

    @staticmethod
    def _roll_back(placed: Sequence[Path], aside: Sequence[tuple[Path, Path]]) -> None:
        """Remove the new files in ``placed`` and put every original back."""
        lost = []
        for target in placed:
            with contextlib.suppress(OSError):
                target.unlink()
        for keep, target in reversed(aside):
            try:
                os.replace(keep, target)
            except OSError:
                lost.append(f"{target} is kept as {keep}")
        if lost:
            raise CliError(f"could not restore every original output: {'; '.join(lost)}")

    def discard(self) -> None:
        """Remove every staged file and folder, and the target folders this object created (when empty)."""
        for staging, _ in self._staged:
            shutil.rmtree(staging, ignore_errors=True)
        self._staged.clear()
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._created.clear()


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_folder(where: str, folder: Path) -> None:
    """``folder`` exists and is writable, or can be created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CliError(f"{where}: {existing} is not a folder")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CliError(f"{where}: cannot create folder {folder} ({existing} is not writable)")
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mgicon-check.", dir=folder))
    except OSError as exc:
        raise CliError(f"{where}: folder {folder} is not writable ({exc.strerror or exc})") from None


def check_outputs(outputs: Sequence[tuple[str, str | None, str]], inputs: Sequence[tuple[str, str | None]]) -> None:
    """Refuse, before any work, outputs that could not be written.

    Args:
        outputs: ``(option, path, kind)`` per output (``path`` None: not asked for); ``kind`` is a key of
            :data:`mgicon.io.itk.OUTPUT_KINDS`.
        inputs: ``(option, path)`` per input file.

    Raises:
        CliError: "OPTION PATH: problem" for an output that is an input or another output, a folder, or not a
            regular file; whose folder is not writable and cannot be created; or whose name its writer cannot
            write that kind of output to.
    """
    from mgicon.io import itk as itkio

    seen: list[tuple[str, str]] = []
    for option, path, kind in outputs:
        if path is None:
            continue
        where = f"{option} {path}"
        if not path.strip():
            raise CliError(f"{option}: empty path")
        target = Path(path)
        for other_option, other in seen:
            if _same_file(path, other):
                raise CliError(f"{where}: the same file as {other_option}")
        for in_option, in_path in inputs:
            if in_path and _same_file(path, in_path):
                raise CliError(f"{where}: the same file as the input {in_option}; it would be overwritten")
        seen.append((option, path))
        _check_folder(where, target.parent)
        if target.is_dir():
            raise CliError(f"{where}: is a folder")
        if target.exists() and not target.is_file():
            raise CliError(f"{where}: exists and is not a regular file")
        problem = itkio.output_format_problem(target, kind)
        if problem:
            raise CliError(f"{where}: {problem}")


def _io_iterations(value: str) -> int:
    if value.strip().lower() in {"none", "0"}:
        return 0
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of IO steps or None, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"IO steps must be >= 0, got {n}")
    return n


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


def build_parser() -> argparse.ArgumentParser:
    from mgicon.config import schema_default  # the defaults of IO are the pipeline's (upstream's)
    from mgicon.vocabulary import AFFINE_METRICS, SIMILARITIES

    IO_STEPS = schema_default("evaluation.io_iterations")
    IO_LEARNING_RATE = schema_default("evaluation.io_lr")
    IO_DICE_WEIGHT = schema_default("evaluation.io_dice_weight")
    parser = _Parser(prog="mgicon", description="multiGradICON registration of 3-D medical images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    reg = sub.add_parser("register", help="register a moving image to a fixed image")
    reg.add_argument("--fixed", required=True, help="fixed image (any ITK format, or a DICOM series folder)")
    reg.add_argument("--moving", required=True, help="moving image")
    reg.add_argument("--fixed-modality", "--fixed_modality", required=True, choices=["ct", "mri"])
    reg.add_argument("--moving-modality", "--moving_modality", required=True, choices=["ct", "mri"])
    reg.add_argument(
        "--model",
        default="unigradicon",
        help="multigradicon, unigradicon (released weights from the cache, $MGICON_WEIGHTS or ~/.cache/mgicon), "
        "or a path to a released .trch or an mgicon checkpoint (default: unigradicon, as upstream)",
    )
    reg.add_argument(
        "--network-weights",
        "--network_weights",
        dest="network_weights",
        help="checkpoint path (upstream spelling of --model PATH)",
    )
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
        "--learn2reg-displacement-out", help="dense displacement in fixed voxel units, Learn2Reg layout (x, y, z, 3)"
    )
    reg.add_argument("--jacobian-out", help="Jacobian determinant of the transform on the fixed grid")
    reg.add_argument(
        "--io-iterations",
        "--io_iterations",
        type=_io_iterations,
        default=IO_STEPS,
        help=f"instance-optimization steps; 0 or None: no IO (default {IO_STEPS}, as upstream)",
    )
    reg.add_argument(
        "--io-sim",
        "--io_sim",
        choices=SIMILARITIES,
        default=None,
        help="IO similarity (default: lncc2 for multigradicon, else lncc)",
    )
    reg.add_argument(
        "--io-lr",
        "--io_lr",
        type=_positive_float,
        default=IO_LEARNING_RATE,
        help=f"IO learning rate (default {IO_LEARNING_RATE:g})",
    )
    reg.add_argument("--fixed-mask", "--fixed_mask", help="mask on the fixed grid: restricts the IO similarity")
    reg.add_argument("--moving-mask", "--moving_mask", help="mask on the moving grid: restricts the IO similarity")
    reg.add_argument(
        "--fixed-segmentation", "--fixed_segmentation", help="label map on the fixed grid: IO's Dice term (upstream)"
    )
    reg.add_argument(
        "--moving-segmentation", "--moving_segmentation", help="label map on the moving grid: IO's Dice term"
    )
    reg.add_argument(
        "--dice-loss-weight",
        "--dice_loss_weight",
        type=_non_negative_float,
        default=IO_DICE_WEIGHT,
        help=f"weight of IO's soft Dice term of the segmentations' shared labels (default {IO_DICE_WEIGHT:g}: none; "
        "with 0, segmentations without masks serve as masks with input masking, as upstream 1.0.6)",
    )
    reg.add_argument(
        "--input-masking", "--input_masking", action="store_true", help="also multiply the images by their masks"
    )
    reg.add_argument(
        "--loss-function-masking",
        "--loss_function_masking",
        action="store_true",
        help="accepted for upstream compatibility: masks always restrict the IO similarity",
    )
    _add_intensity_options(reg)
    _add_run_options(reg, "seed of the IO randomness")
    reg.add_argument(
        "--keep-orientation",
        "--keep_orientation",
        action="store_true",
        help="give the network the raw voxel arrays, as upstream (default: the moving image's array is permuted and "
        "flipped, without resampling, to the fixed image's axis orientation)",
    )
    reg.add_argument(
        "--affine",
        action="store_true",
        help="ANTs affine registration first; the network registers the affinely aligned pair and the written "
        "transforms are the composition",
    )
    reg.add_argument(
        "--affine-metric",
        "--affine_metric",
        choices=AFFINE_METRICS,
        default=schema_default("evaluation.affine_metric"),
        help="--affine's metric: auto (mutual information, then a correlation refinement kept unless it lowers the "
        "mutual information), mi or gc alone (default %(default)s)",
    )

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

    jac = sub.add_parser("jacobian", help="Jacobian determinant of a transform on the fixed grid")
    jac.add_argument("--transform", required=True)
    jac.add_argument("--fixed", required=True)
    jac.add_argument("--jacobian-out", "--jacob", dest="jacobian_out", required=True)
    jac.add_argument("--log-jacobian-out", "--log_jacob", dest="log_jacobian_out")
    _add_finetune_parser(sub)
    _add_learn2reg_parser(sub)
    return parser


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


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _add_finetune_parser(sub) -> None:
    """``mgicon finetune``: a released model or a checkpoint trained further on one's own manifests."""
    from mgicon.config import schema_default
    from mgicon.vocabulary import PAIRINGS, SIMILARITIES

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
        default="unigradicon",
        help="multigradicon, unigradicon or a checkpoint path to start from (default: unigradicon)",
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


def _load_model(args: argparse.Namespace):
    import torch

    from mgicon.network.checkpoint import CheckpointError, load_network
    from mgicon.weights import WeightsError, resolve_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available")
    try:
        path = resolve_model(args.network_weights or args.model, allow_download=not args.no_download)
        return load_network(path, map_location=device, input_shape=getattr(args, "input_shape", None))
    except (WeightsError, CheckpointError) as exc:
        raise CliError(str(exc)) from None


def _segmentations(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The (fixed, moving) label maps IO's Dice term uses (None, None without it), as upstream 1.0.6: a weight > 0
    needs both; with weight 0, both segmentations and no masks make the segmentations masks (input masking unless
    --loss-function-masking)."""
    pair = (args.fixed_segmentation, args.moving_segmentation)
    if (pair[0] is None) != (pair[1] is None):
        given = "--fixed-segmentation" if pair[0] else "--moving-segmentation"
        raise CliError(f"{given}: needs both --fixed-segmentation and --moving-segmentation")
    if args.dice_loss_weight > 0:
        if pair[0] is None:
            raise CliError("--dice-loss-weight: needs --fixed-segmentation and --moving-segmentation")
        return pair
    if pair[0] is not None and args.fixed_mask is None and args.moving_mask is None:
        if args.loss_function_masking or not args.input_masking:
            args.fixed_mask, args.moving_mask = pair
            args.input_masking = args.input_masking or not args.loss_function_masking
    return None, None


def cmd_register(args: argparse.Namespace) -> None:
    import torch

    from mgicon import register as reg
    from mgicon.io import itk as itkio

    check_outputs(
        [
            ("--transform-out", args.transform_out, "transform"),
            ("--inverse-transform-out", args.inverse_transform_out, "transform"),
            ("--warped-moving-out", args.warped_moving_out, "image"),
            ("--displacement-out", args.displacement_out, "vector image"),
            ("--learn2reg-displacement-out", args.learn2reg_displacement_out, "4-D image"),
            ("--jacobian-out", args.jacobian_out, "image"),
        ],
        [
            ("--fixed", args.fixed),
            ("--moving", args.moving),
            ("--fixed-mask", args.fixed_mask),
            ("--moving-mask", args.moving_mask),
            ("--fixed-segmentation", args.fixed_segmentation),
            ("--moving-segmentation", args.moving_segmentation),
            ("--model", args.model),
            ("--network-weights", args.network_weights),
        ],
    )
    if (args.fixed_mask is None) != (args.moving_mask is None) and args.input_masking:
        raise CliError("--input-masking needs both --fixed-mask and --moving-mask")
    segmentations = _segmentations(args)
    torch.manual_seed(args.seed)
    net = _load_model(args)
    shape = net.config.input_shape
    fixed = reg.prepare(
        args.fixed,
        args.fixed_modality,
        shape,
        args.fixed_mask,
        args.input_masking,
        args.ct_window,
        args.quantile_range,
        segmentation_path=segmentations[0],
    )
    prealign = None
    if args.affine:
        moving_image = reg.read_for_prealign(args.moving)
        fixed_image = reg.read_for_prealign(args.fixed)
        prealign = (reg.affine_prealign(moving_image, fixed_image, args.seed, args.affine_metric), fixed.image)
    moving = reg.prepare(
        args.moving,
        args.moving_modality,
        shape,
        args.moving_mask,
        args.input_masking,
        args.ct_window,
        args.quantile_range,
        orientation=None if args.keep_orientation else itkio.orientation_code(fixed.image),
        prealign=prealign,
        segmentation_path=segmentations[1],
    )
    similarity = args.io_sim or ("lncc2" if args.model == "multigradicon" and not args.network_weights else "lncc")
    result = reg.register(
        net,
        moving,
        fixed,
        io_iterations=args.io_iterations,
        io_similarity=similarity,
        io_lr=args.io_lr,
        seed=args.seed,
        inverse=bool(args.inverse_transform_out),
        bf16=args.bf16,
        dice_weight=args.dice_loss_weight if segmentations[0] else 0.0,
    )
    out = StagedOutputs()
    try:
        itkio.write_transform(result.transform, out.path(args.transform_out), atomic=False)
        if args.inverse_transform_out:
            itkio.write_transform(result.inverse, out.path(args.inverse_transform_out), atomic=False)
        if args.warped_moving_out:
            warped = itkio.warp_image(result.moving, result.transform, result.fixed)
            itkio.write_image(warped, out.path(args.warped_moving_out), atomic=False)
        if args.displacement_out or args.learn2reg_displacement_out or args.jacobian_out:
            field = itkio.displacement_field(result.transform, result.fixed)
            if args.displacement_out:
                itkio.write_image(itkio.as_float32_vectors(field), out.path(args.displacement_out), atomic=False)
            if args.learn2reg_displacement_out:
                itkio.write_image(
                    itkio.learn2reg_displacement(field), out.path(args.learn2reg_displacement_out), atomic=False
                )
            if args.jacobian_out:
                itkio.write_image(itkio.jacobian_determinant(field), out.path(args.jacobian_out), atomic=False)
        out.commit()
    finally:
        out.discard()


def cmd_warp(args: argparse.Namespace) -> None:
    from mgicon.io import itk as itkio

    check_outputs(
        [("--warped-moving-out", args.warped_moving_out, "image")],
        [("--fixed", args.fixed), ("--moving", args.moving), ("--transform", args.transform)],
    )
    fixed = itkio.read_image(args.fixed, what="fixed image")
    moving = itkio.read_image(args.moving, what="moving image")
    transform = itkio.read_transform(args.transform) if args.transform else itkio.identity_transform()
    nearest = True if args.nearest else (False if args.linear else None)
    warped = itkio.warp_image(moving, transform, fixed, nearest=nearest)
    out = StagedOutputs()
    try:
        itkio.write_image(warped, out.path(args.warped_moving_out), atomic=False)
        out.commit()
    finally:
        out.discard()


def cmd_jacobian(args: argparse.Namespace) -> None:
    from mgicon.io import itk as itkio

    check_outputs(
        [("--jacobian-out", args.jacobian_out, "image"), ("--log-jacobian-out", args.log_jacobian_out, "image")],
        [("--fixed", args.fixed), ("--transform", args.transform)],
    )
    fixed = itkio.read_image(args.fixed, what="fixed image")
    transform = itkio.read_transform(args.transform)
    det = itkio.jacobian_determinant(itkio.displacement_field(transform, fixed))
    out = StagedOutputs()
    try:
        itkio.write_image(det, out.path(args.jacobian_out), atomic=False)
        if args.log_jacobian_out:
            itkio.write_image(itkio.log_image(det), out.path(args.log_jacobian_out), atomic=False)
        out.commit()
    finally:
        out.discard()


def cmd_finetune(args: argparse.Namespace) -> None:
    import torch

    from mgicon.train.finetune import FinetuneOptions, finetune

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: exists and is not a folder")
    _check_folder(f"--out {out}", out)
    for manifest in args.manifest:
        if not Path(manifest).is_file():
            raise CliError(f"--manifest {manifest}: no such file")
    options = FinetuneOptions(
        similarity=args.similarity,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        augment=args.augment,
        seed=args.seed,
        device=device,
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
        args.model, args.manifest, out, options, allow_download=not args.no_download, progress=not args.no_progress
    )
    print(f"mgicon: wrote {checkpoint}", file=sys.stderr)


def _add_learn2reg_parser(sub) -> None:
    """``mgicon learn2reg``: one displacement field per pair of a Learn2Reg split, and their zip."""
    from mgicon.config import schema_default
    from mgicon.vocabulary import LEARN2REG_SPLITS, SIMILARITIES

    io_steps, io_lr = schema_default("evaluation.io_iterations"), schema_default("evaluation.io_lr")
    l2r = sub.add_parser(
        "learn2reg",
        help="displacement fields of a Learn2Reg split, named and laid out for the official evaluation, and a zip",
    )
    l2r.add_argument("--dataset-json", "--dataset_json", required=True, help="the task's *_dataset.json")
    l2r.add_argument("--split", choices=LEARN2REG_SPLITS, required=True, help="registration_val or registration_test")
    l2r.add_argument("--model", default="unigradicon", help="as for register (default: unigradicon)")
    l2r.add_argument("--network-weights", "--network_weights", dest="network_weights", help="checkpoint path")
    l2r.add_argument("--out", required=True, help="folder of the disp_*.nii.gz fields")
    l2r.add_argument("--zip-out", "--zip_out", help="zip of the fields (default: OUT.zip beside OUT)")
    for role in ("fixed", "moving"):
        l2r.add_argument(
            f"--{role}-modality",
            f"--{role}_modality",
            choices=["ct", "mri"],
            help="default: from the json's modality name of the image's channel (CT, CBCT → ct; MR, T1, T2 → mri)",
        )
    l2r.add_argument("--io-iterations", "--io_iterations", type=_io_iterations, default=io_steps)
    l2r.add_argument("--io-sim", "--io_sim", choices=SIMILARITIES, default=None, help="as for register")
    l2r.add_argument("--io-lr", "--io_lr", type=_positive_float, default=io_lr)
    l2r.add_argument("--keep-orientation", "--keep_orientation", action="store_true", help="as for register")
    _add_intensity_options(l2r)
    _add_run_options(l2r, "seed of the IO")


def _learn2reg_modality(names: dict[str, str], channel: str, given: str | None, option: str) -> str:
    """``ct`` or ``mri`` for a Learn2Reg channel: ``given``, else from the json's modality name."""
    if given:
        return given
    name = names.get(channel, "")
    lowered = name.lower()
    if "ct" in lowered:
        return "ct"
    if any(word in lowered for word in ("mr", "t1", "t2", "flair")):
        return "mri"
    raise CliError(f"--dataset-json: channel {channel} has modality {name or 'none'!r}; give {option} ct or mri")


def cmd_learn2reg(args: argparse.Namespace) -> None:
    import zipfile

    import torch

    from mgicon import register as reg
    from mgicon.data.adapters import DatasetSourceError, learn2reg_modalities, learn2reg_pairs
    from mgicon.io import itk as itkio

    dataset_json = Path(args.dataset_json)
    try:
        pairs = learn2reg_pairs(dataset_json, args.split)
        names = learn2reg_modalities(dataset_json)
    except DatasetSourceError as exc:
        raise CliError(f"--dataset-json {exc}") from None
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out {out_dir}: exists and is not a folder")
    zip_path = Path(args.zip_out) if args.zip_out else out_dir.parent / f"{out_dir.name}.zip"
    if zip_path.suffix != ".zip":
        raise CliError(f"--zip-out {zip_path}: must end in .zip")
    if zip_path.is_dir():
        raise CliError(f"--zip-out {zip_path}: is a folder")
    _check_folder(f"--zip-out {zip_path}", zip_path.parent)
    check_outputs(
        [("--out", str(out_dir / pair.displacement_name), "4-D image") for pair in pairs],
        [("--dataset-json", args.dataset_json), ("--model", args.model)]
        + [("--dataset-json", str(path)) for pair in pairs for path in (pair.fixed, pair.moving)],
    )
    modalities = [
        (
            _learn2reg_modality(names, pair.fixed_channel, args.fixed_modality, "--fixed-modality"),
            _learn2reg_modality(names, pair.moving_channel, args.moving_modality, "--moving-modality"),
        )
        for pair in pairs
    ]
    torch.manual_seed(args.seed)
    net = _load_model(args)
    shape = net.config.input_shape
    similarity = args.io_sim or ("lncc2" if args.model == "multigradicon" and not args.network_weights else "lncc")
    out = StagedOutputs()
    try:
        written = []
        for k, (pair, (fixed_modality, moving_modality)) in enumerate(zip(pairs, modalities), start=1):
            fixed = reg.prepare(pair.fixed, fixed_modality, shape, None, False, args.ct_window, args.quantile_range)
            moving = reg.prepare(
                pair.moving,
                moving_modality,
                shape,
                None,
                False,
                args.ct_window,
                args.quantile_range,
                orientation=None if args.keep_orientation else itkio.orientation_code(fixed.image),
            )
            result = reg.register(
                net,
                moving,
                fixed,
                io_iterations=args.io_iterations,
                io_similarity=similarity,
                io_lr=args.io_lr,
                seed=args.seed,
                bf16=args.bf16,
            )
            field = itkio.displacement_field(result.transform, result.fixed)
            path = out.path(out_dir / pair.displacement_name)
            itkio.write_image(itkio.learn2reg_displacement(field, result.moving), path, atomic=False)
            written.append(path)
            print(f"[{k}/{len(pairs)}] {pair.displacement_name}", flush=True)
        with zipfile.ZipFile(out.path(zip_path), "w", zipfile.ZIP_STORED) as archive:  # the fields are gzipped
            for path in written:
                archive.write(path, arcname=path.name)
        out.commit()
    finally:
        out.discard()


COMMANDS = {
    "register": cmd_register,
    "warp": cmd_warp,
    "jacobian": cmd_jacobian,
    "finetune": cmd_finetune,
    "learn2reg": cmd_learn2reg,
}


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
    from mgicon.io.itk import ImageError
    from mgicon.network.checkpoint import CheckpointError
    from mgicon.weights import WeightsError

    return CliError, ImageError, CheckpointError, WeightsError, ManifestError


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
    global _committed
    debug = os.environ.get("MGICON_DEBUG", "") not in ("", "0")
    message = None
    code = 0
    _committed = False
    with _signal_handlers(), contextlib.nullcontext() if debug else _quiet():
        try:
            args = build_parser().parse_args(argv)
            COMMANDS[args.command](args)
        except (KeyboardInterrupt, Terminated) as exc:
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            code = 128 + signum
            outputs = "outputs written before it" if _committed else "outputs left as they were"
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
