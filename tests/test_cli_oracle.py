"""``mgicon register`` against upstream's ``unigradicon-register`` on the same pair and the same random weights.

Both run the paper network at 175³ on the CPU (about a minute for upstream, a few seconds for us)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import mgicon
from mgicon.cli import main
from mgicon.testing import make_image, randomize_weights, rotation, smooth_volume


@pytest.fixture(scope="module")
def released_random(tmp_path_factory):
    """A released-format .trch with non-trivial random weights (upstream's 188-key layout)."""
    path = tmp_path_factory.mktemp("weights") / "Step_2_final.trch"
    net = randomize_weights(mgicon.build_network("paper", input_shape=(65, 65, 65)), seed=21)
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.oracle
def test_register_matches_unigradicon_register(tmp_path, released_random):
    fixed = make_image(
        1000 * smooth_volume((30, 34, 28), 1, scale=5)[0, 0].numpy(), (1.2, 0.9, 1.6), (5.0, -3.0, 2.0), rotation(0.2)
    )
    moving = make_image(
        800 * smooth_volume((32, 30, 34), 2, scale=5)[0, 0].numpy(),
        (1.0, 1.1, 1.3),
        (-2.0, 4.0, 1.0),
        rotation(-0.1, 0.1),
    )
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(moving, str(tmp_path / "moving.nii.gz"))
    common = [
        "--fixed",
        str(tmp_path / "fixed.nii.gz"),
        "--moving",
        str(tmp_path / "moving.nii.gz"),
        "--fixed_modality",
        "mri",
        "--moving_modality",
        "mri",
    ]
    upstream = Path(sys.executable).with_name("unigradicon-register")
    run = subprocess.run(
        [
            str(upstream),
            *common,
            "--network_weights",
            str(released_random),
            "--model",
            "multigradicon",
            "--io_iterations",
            "None",
            "--transform_out",
            str(tmp_path / "up.hdf5"),
            "--warped_moving_out",
            str(tmp_path / "up.nii.gz"),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (
        main(
            [
                "register",
                *common,
                "--model",
                str(released_random),
                "--io-iterations",
                "0",
                "--device",
                "cpu",
                "--transform-out",
                str(tmp_path / "ours.h5"),
                "--warped-moving-out",
                str(tmp_path / "ours.nii.gz"),
            ]
        )
        == 0
    )
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "up.nii.gz")))
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ours.nii.gz")))
    value_range = float(np.ptp(sitk.GetArrayFromImage(moving)))
    assert np.abs(ours - theirs).max() <= 1e-3 * value_range
    # and the transforms agree point by point, in mm
    t_up, t_ours = sitk.ReadTransform(str(tmp_path / "up.hdf5")), sitk.ReadTransform(str(tmp_path / "ours.h5"))
    points = [
        fixed.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, 9, 27) for j in (0, 17, 33) for k in (0, 13, 29)
    ]
    moved = max(np.linalg.norm(np.subtract(t_ours.TransformPoint(p), p)) for p in points)
    assert moved > 1.0, "random weights must give a non-trivial transform"
    assert max(np.linalg.norm(np.subtract(t_up.TransformPoint(p), t_ours.TransformPoint(p))) for p in points) < 1e-3
