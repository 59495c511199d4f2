"""End-to-end command-line speed: ``mgicon register --io-iterations 0`` against upstream's
``unigradicon-register --io_iterations None``, same pair, same (random, released-format) weights, CPU.

Each run is a fresh process (imports, reading, preprocessing, the network at 175³, writing the transform and the
warped image), as a user runs it.

    .venv/bin/python benchmarks/cli.py --size 128 --repeats 3

Prints the median seconds and the ratio, and writes ``results/benchmarks/cli.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json  # noqa: E402

import mgicon  # noqa: E402
from mgicon.testing import make_image, randomize_weights, rotation, smooth_volume  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="edge length of the test images (voxels)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks/cli.json")
    args = parser.parse_args(argv)
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = args.size
        fixed = make_image(
            1000 * smooth_volume((n, n, n), 1, scale=8)[0, 0].numpy(), (1.0, 1.0, 1.2), (3, -2, 1), rotation(0.1)
        )
        moving = make_image(1000 * smooth_volume((n, n, n), 2, scale=8)[0, 0].numpy(), (1.1, 0.9, 1.0), (-1, 2, 0))
        sitk.WriteImage(fixed, str(tmp / "fixed.nii.gz"))
        sitk.WriteImage(moving, str(tmp / "moving.nii.gz"))
        weights = tmp / "Step_2_final.trch"
        torch.save(
            randomize_weights(mgicon.build_network("paper", input_shape=(65, 65, 65)), seed=3).state_dict(), weights
        )
        common = [
            "--fixed",
            str(tmp / "fixed.nii.gz"),
            "--moving",
            str(tmp / "moving.nii.gz"),
            "--fixed_modality",
            "mri",
            "--moving_modality",
            "mri",
        ]
        commands = {
            "upstream": [
                str(bindir / "unigradicon-register"),
                *common,
                "--network_weights",
                str(weights),
                "--io_iterations",
                "None",
                "--transform_out",
                str(tmp / "up.hdf5"),
                "--warped_moving_out",
                str(tmp / "up.nii.gz"),
            ],
            "mgicon": [
                str(bindir / "mgicon"),
                "register",
                *common,
                "--model",
                str(weights),
                "--io-iterations",
                "0",
                "--device",
                "cpu",
                "--transform-out",
                str(tmp / "ours.h5"),
                "--warped-moving-out",
                str(tmp / "ours.nii.gz"),
            ],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
                times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["upstream"] / medians["mgicon"]
    for name in commands:
        print(f"{name:>9}: median {medians[name]:.1f} s  ({', '.join(f'{t:.1f}' for t in times[name])})")
    print(f"upstream / mgicon: {ratio:.2f}x  (images {args.size}³, network 175³, {torch.get_num_threads()} threads)")
    write_json({"size": args.size, "times": times, "medians": medians, "ratio": ratio}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
