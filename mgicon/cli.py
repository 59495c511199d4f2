"""The ``mgicon`` command line: ``register``, ``warp`` and ``jacobian``.

A drop-in for upstream's ``unigradicon-register`` / ``-warp`` / ``-jacobian``: their underscore spellings
(``--fixed_modality``, ``--transform_out``, ``--io_iterations None``, ``--network_weights``, …) are accepted.
Bad input ends with one line on stderr naming the file and the problem, exit code 2, and no output file written:
every output is staged in a temporary file and renamed into place only when all of them are complete.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

USAGE_ERROR = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise CliError(f"{self.prog}: {message}")


class StagedOutputs:
    """Collects output files as temporary siblings; :meth:`commit` renames them all, :meth:`discard` removes them."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(final.suffixes)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp{suffix}")
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> None:
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mgicon", description="multiGradICON registration of 3-D medical images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    reg = sub.add_parser("register", help="register a moving image to a fixed image")
    reg.add_argument("--fixed", required=True, help="fixed image (any ITK format, or a DICOM series folder)")
    reg.add_argument("--moving", required=True, help="moving image")
    reg.add_argument("--fixed-modality", "--fixed_modality", required=True, choices=["ct", "mri"])
    reg.add_argument("--moving-modality", "--moving_modality", required=True, choices=["ct", "mri"])
    reg.add_argument(
        "--model", default="unigradicon",
        help="multigradicon, unigradicon (released weights from the cache, $MGICON_WEIGHTS or ~/.cache/mgicon), "
        "or a path to a released .trch or an mgicon checkpoint (default: unigradicon, as upstream)",
    )
    reg.add_argument("--network-weights", "--network_weights", dest="network_weights", help="checkpoint path (upstream spelling of --model PATH)")
    reg.add_argument("--transform-out", "--transform_out", required=True, help="ITK transform (.h5/.hdf5): fixed → moving points")
    reg.add_argument("--warped-moving-out", "--warped_moving_out", help="moving image resampled on the fixed grid")
    reg.add_argument("--inverse-transform-out", "--inverse_transform_out", help="ITK transform: moving → fixed points")
    reg.add_argument("--displacement-out", "--displacement_out", help="dense displacement in mm on the fixed grid (NIfTI vector image)")
    reg.add_argument("--learn2reg-displacement-out", help="dense displacement in fixed voxel units, Learn2Reg layout (x, y, z, 3)")
    reg.add_argument("--jacobian-out", help="Jacobian determinant of the transform on the fixed grid")
    reg.add_argument("--io-iterations", "--io_iterations", type=_io_iterations, default=50,
                     help="instance-optimization steps; 0 or None: no IO (default 50, as upstream)")
    reg.add_argument("--io-sim", "--io_sim", choices=["lncc", "lncc2", "mind"], default=None,
                     help="IO similarity (default: lncc2 for multigradicon, else lncc)")
    reg.add_argument("--io-lr", "--io_lr", type=_positive_float, default=2e-5, help="IO learning rate (default 2e-5)")
    reg.add_argument("--fixed-mask", "--fixed_mask", help="mask on the fixed grid: restricts the IO similarity")
    reg.add_argument("--moving-mask", "--moving_mask", help="mask on the moving grid: restricts the IO similarity")
    reg.add_argument("--input-masking", "--input_masking", action="store_true", help="also multiply the images by their masks")
    reg.add_argument("--loss-function-masking", "--loss_function_masking", action="store_true",
                     help="accepted for upstream compatibility: masks always restrict the IO similarity")
    reg.add_argument("--ct-window", "--ct_window", nargs=2, type=float, metavar=("MIN", "MAX"), help="CT window in HU (default -1000 1000)")
    reg.add_argument("--quantile-range", "--quantile_range", nargs=2, type=float, metavar=("LO", "HI"),
                     help="MRI normalisation quantiles (default: minimum and 99th percentile)")
    reg.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    reg.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA")
    reg.add_argument("--seed", type=int, default=0, help="seed of the IO randomness (default 0)")
    reg.add_argument("--no-download", action="store_true", help="never download released weights")

    warp = sub.add_parser("warp", help="resample an image on the fixed grid through a transform")
    warp.add_argument("--fixed", required=True, help="reference image: the output grid")
    warp.add_argument("--moving", required=True, help="image to warp")
    warp.add_argument("--transform", help="ITK transform (fixed → moving points); identity if omitted")
    warp.add_argument("--warped-moving-out", "--warped_moving_out", required=True)
    kind = warp.add_mutually_exclusive_group()
    kind.add_argument("--nearest", "--nearest-neighbor", "--nearest_neighbor", dest="nearest", action="store_true",
                      help="nearest neighbour (default for integer label maps)")
    kind.add_argument("--linear", action="store_true", help="linear (default for intensity images)")

    jac = sub.add_parser("jacobian", help="Jacobian determinant of a transform on the fixed grid")
    jac.add_argument("--transform", required=True)
    jac.add_argument("--fixed", required=True)
    jac.add_argument("--jacobian-out", "--jacob", dest="jacobian_out", required=True)
    jac.add_argument("--log-jacobian-out", "--log_jacob", dest="log_jacobian_out")
    return parser


def _check_outputs(paths: Sequence[str | None], inputs: Sequence[str | None]) -> None:
    given = [p for p in paths if p]
    if len(set(map(os.path.abspath, given))) != len(given):
        raise CliError("the same output path is given twice")
    for p in given:
        if any(i and os.path.abspath(i) == os.path.abspath(p) for i in inputs):
            raise CliError(f"{p}: output would overwrite an input")


def _load_model(args: argparse.Namespace):
    import torch

    from mgicon.network.checkpoint import CheckpointError, load_network
    from mgicon.weights import WeightsError, resolve_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available")
    try:
        path = resolve_model(args.network_weights or args.model, allow_download=not args.no_download)
        return load_network(path, map_location=device)
    except (WeightsError, CheckpointError) as exc:
        raise CliError(str(exc)) from None


def cmd_register(args: argparse.Namespace) -> None:
    import torch

    from mgicon import register as reg
    from mgicon.io import itk as itkio

    _check_outputs(
        [args.transform_out, args.warped_moving_out, args.inverse_transform_out, args.displacement_out,
         args.learn2reg_displacement_out, args.jacobian_out],
        [args.fixed, args.moving, args.fixed_mask, args.moving_mask, args.model, args.network_weights],
    )
    if (args.fixed_mask is None) != (args.moving_mask is None) and args.input_masking:
        raise CliError("--input-masking needs both --fixed-mask and --moving-mask")
    torch.manual_seed(args.seed)
    net = _load_model(args)
    shape = net.config.input_shape
    fixed = reg.prepare(args.fixed, args.fixed_modality, shape, args.fixed_mask, args.input_masking, args.ct_window, args.quantile_range)
    moving = reg.prepare(args.moving, args.moving_modality, shape, args.moving_mask, args.input_masking, args.ct_window, args.quantile_range)
    similarity = args.io_sim or ("lncc2" if args.model == "multigradicon" and not args.network_weights else "lncc")
    result = reg.register(
        net, moving, fixed, io_iterations=args.io_iterations, io_similarity=similarity, io_lr=args.io_lr,
        seed=args.seed, inverse=bool(args.inverse_transform_out), bf16=args.bf16,
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
                itkio.write_image(itkio.learn2reg_displacement(field), out.path(args.learn2reg_displacement_out), atomic=False)
            if args.jacobian_out:
                itkio.write_image(itkio.jacobian_determinant(field), out.path(args.jacobian_out), atomic=False)
        out.commit()
    finally:
        out.discard()


def cmd_warp(args: argparse.Namespace) -> None:
    from mgicon.io import itk as itkio

    _check_outputs([args.warped_moving_out], [args.fixed, args.moving, args.transform])
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

    _check_outputs([args.jacobian_out, args.log_jacobian_out], [args.fixed, args.transform])
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


COMMANDS = {"register": cmd_register, "warp": cmd_warp, "jacobian": cmd_jacobian}


def main(argv: Sequence[str] | None = None) -> int:
    from mgicon.io.itk import ImageError

    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except (CliError, ImageError) as exc:
        message = " ".join(str(exc).split())
        print(f"mgicon: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("mgicon: interrupted; no output written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
