"""The ``mgicon`` command: round trips through the written files, label maps, bad input, upstream spellings."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mgicon.cli import main
from mgicon.network import save_checkpoint
from mgicon.testing import known_output_network, make_image, rotation, smooth_volume


def _smooth(shape_zyx, seed):
    return smooth_volume(shape_zyx, seed, scale=6)[0, 0].numpy()


@pytest.fixture
def pair(tmp_path):
    """Fixed and moving MR-like images with anisotropic spacing, non-zero origins and rotated directions."""
    fixed = make_image(100 * _smooth((18, 22, 20), 1), (1.1, 0.9, 2.0), (12.0, -7.0, 4.0), rotation(0.25, 0.1))
    moving = make_image(100 * _smooth((20, 18, 24), 2), (0.8, 1.3, 1.5), (-3.0, 5.0, 9.0), rotation(-0.15))
    paths = {"fixed": tmp_path / "fixed.nii.gz", "moving": tmp_path / "moving.nrrd"}
    sitk.WriteImage(fixed, str(paths["fixed"]))
    sitk.WriteImage(moving, str(paths["moving"]))
    return paths


@pytest.fixture
def translation_model(tmp_path):
    path = tmp_path / "translation.pt"
    save_checkpoint(known_output_network(translation=[0.04, -0.03, 0.02]), path)
    return path


@pytest.fixture
def antisymmetric_model(tmp_path):
    path = tmp_path / "antisymmetric.pt"
    save_checkpoint(known_output_network(antisymmetric=[0.03, -0.02, 0.02]), path)
    return path


def _register(pair, model, out, *extra):
    return main(
        [
            "register",
            "--fixed",
            str(pair["fixed"]),
            "--moving",
            str(pair["moving"]),
            "--fixed-modality",
            "mri",
            "--moving-modality",
            "mri",
            "--model",
            str(model),
            "--io-iterations",
            "0",
            "--transform-out",
            str(out / "T.h5"),
            *extra,
        ]
    )


def _voxel_centres(image):
    size = image.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).reshape(-1, 3)
    return [image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, i))) for i in idx[::7]]


def test_register_round_trip(pair, translation_model, tmp_path):
    out = tmp_path / "out"
    assert (
        _register(
            pair,
            translation_model,
            out,
            "--warped-moving-out",
            str(out / "W.nii.gz"),
            "--displacement-out",
            str(out / "D.nii.gz"),
            "--jacobian-out",
            str(out / "J.nii.gz"),
            "--learn2reg-displacement-out",
            str(out / "L.nii.gz"),
        )
        == 0
    )
    fixed, moving = sitk.ReadImage(str(pair["fixed"])), sitk.ReadImage(str(pair["moving"]))
    transform = sitk.ReadTransform(str(out / "T.h5"))
    # the transform file, applied by SimpleITK's resampler, gives the written warped image
    resampled = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "W.nii.gz")))
    value_range = float(np.ptp(sitk.GetArrayFromImage(moving)))
    assert np.abs(resampled - written).max() <= 1e-4 * value_range
    assert np.abs(written - sitk.GetArrayFromImage(fixed)).max() > 1e-2 * value_range, "a real warp, not a copy"
    # the dense field equals the transform at the fixed voxel centres, in mm
    field = sitk.ReadImage(str(out / "D.nii.gz"))
    assert field.GetSize() == fixed.GetSize() and field.GetNumberOfComponentsPerPixel() == 3
    vectors = sitk.GetArrayFromImage(field)
    for p in _voxel_centres(fixed):
        i = fixed.TransformPhysicalPointToIndex(p)
        expected = np.asarray(transform.TransformPoint(p)) - np.asarray(p)
        assert np.abs(vectors[i[2], i[1], i[0]] - expected).max() <= 1e-3
    # a translation of the network grid is affine in physical space: det = moving FOV volume / fixed FOV volume
    jac = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "J.nii.gz")))
    fov = [np.prod(np.asarray(im.GetSpacing()) * im.GetSize()) for im in (moving, fixed)]
    assert np.allclose(jac, fov[0] / fov[1], atol=1e-4)
    # Learn2Reg's convention, NIfTI dims (x, y, z, 3): the moving voxel index of T(p) minus the fixed voxel index of p
    l2r = sitk.ReadImage(str(out / "L.nii.gz"))
    assert l2r.GetSize() == (*fixed.GetSize(), 3)
    l2r_array = sitk.GetArrayFromImage(l2r)  # (3, z, y, x)
    for index in [(7, 6, 5), (0, 0, 0), (19, 21, 17), (3, 15, 9)]:
        q = transform.TransformPoint(fixed.TransformIndexToPhysicalPoint(index))
        expected = np.subtract(moving.TransformPhysicalPointToContinuousIndex(q), index)
        assert np.allclose(l2r_array[:, index[2], index[1], index[0]], expected, atol=1e-4), index
    assert sorted(p.name for p in out.iterdir()) == ["D.nii.gz", "J.nii.gz", "L.nii.gz", "T.h5", "W.nii.gz"]


def test_inverse_composed_with_forward_is_near_identity(pair, antisymmetric_model, tmp_path):
    out = tmp_path / "out"
    assert _register(pair, antisymmetric_model, out, "--inverse-transform-out", str(out / "Tinv.h5")) == 0
    forward = sitk.ReadTransform(str(out / "T.h5"))
    inverse = sitk.ReadTransform(str(out / "Tinv.h5"))
    fixed = sitk.ReadImage(str(pair["fixed"]))
    moved = np.array([np.asarray(forward.TransformPoint(p)) - p for p in _voxel_centres(fixed)])
    errors = np.array(
        [np.asarray(inverse.TransformPoint(forward.TransformPoint(p))) - p for p in _voxel_centres(fixed)]
    )
    assert np.linalg.norm(moved, axis=1).max() > 0.5, "the map must move points"
    assert np.linalg.norm(errors, axis=1).max() < 0.1 * np.linalg.norm(moved, axis=1).max()


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkInt32])
def test_warp_label_map_with_nearest_keeps_type(pair, translation_model, tmp_path, pixel):
    out = tmp_path / "out"
    assert _register(pair, translation_model, out) == 0
    moving = sitk.ReadImage(str(pair["moving"]))
    labels = sitk.Cast(sitk.BinaryThreshold(moving, 50.0, 1e9, 5, 0), pixel)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    assert (
        main(
            [
                "warp",
                "--fixed",
                str(pair["fixed"]),
                "--moving",
                str(tmp_path / "labels.nii.gz"),
                "--transform",
                str(out / "T.h5"),
                "--warped_moving_out",
                str(out / "WL.nii.gz"),
            ]
        )
        == 0
    )
    warped = sitk.ReadImage(str(out / "WL.nii.gz"))
    assert warped.GetPixelID() == pixel
    assert set(np.unique(sitk.GetArrayFromImage(warped))) == {0, 5}


def test_jacobian_command(pair, translation_model, tmp_path):
    out = tmp_path / "out"
    assert _register(pair, translation_model, out) == 0
    assert (
        main(
            [
                "jacobian",
                "--transform",
                str(out / "T.h5"),
                "--fixed",
                str(pair["fixed"]),
                "--jacob",
                str(out / "J.nii.gz"),
                "--log_jacob",
                str(out / "logJ.nii.gz"),
            ]
        )
        == 0
    )
    jac = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "J.nii.gz")))
    log_jac = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "logJ.nii.gz")))
    assert np.allclose(np.log(jac), log_jac, atol=1e-5)


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _write(path, image):
    sitk.WriteImage(image, str(path))
    return path


BAD_INPUTS = {
    "missing": lambda d: d / "nope.nii.gz",
    "corrupt": lambda d: _write_bytes(d / "corrupt.nii.gz", b"\x1f\x8b garbage"),
    "2-D": lambda d: _write(d / "flat.nii.gz", sitk.Image(9, 9, sitk.sitkFloat32)),
    "4-D": lambda d: _write(d / "four.nii.gz", sitk.Image([6, 6, 6, 3], sitk.sitkFloat32)),
    "all-NaN": lambda d: _write(d / "nan.nrrd", make_image(np.full((6, 6, 6), np.nan, np.float32))),
}
PROBLEM = {
    "missing": "no such file",
    "corrupt": "cannot read",
    "2-D": "is 2-D",
    "4-D": "is 4-D",
    "all-NaN": "no finite voxel",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_moving_image_is_one_line_exit_2_no_output(pair, translation_model, tmp_path, capsys, case):
    bad = BAD_INPUTS[case](tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "register",
            "--fixed",
            str(pair["fixed"]),
            "--moving",
            str(bad),
            "--fixed-modality",
            "mri",
            "--moving-modality",
            "mri",
            "--model",
            str(translation_model),
            "--io-iterations",
            "0",
            "--transform-out",
            str(out / "T.h5"),
            "--warped-moving-out",
            str(out / "W.nii.gz"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and str(bad) in err[0] and PROBLEM[case] in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_mask_that_does_not_match_its_image(pair, translation_model, tmp_path, capsys):
    mask = _write(tmp_path / "mask.nii.gz", sitk.Image(5, 5, 5, sitk.sitkUInt8) + 1)
    out = tmp_path / "out"
    code = _register(pair, translation_model, out, "--fixed-mask", str(mask), "--moving-mask", str(mask))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mask.nii.gz: mask grid" in err[0] and "does not match" in err[0]
    assert not (out / "T.h5").exists()


def test_unknown_modality_and_missing_weights(pair, tmp_path, capsys, monkeypatch):
    code = main(
        [
            "register",
            "--fixed",
            str(pair["fixed"]),
            "--moving",
            str(pair["moving"]),
            "--fixed-modality",
            "pet",
            "--moving-modality",
            "mri",
            "--transform-out",
            str(tmp_path / "T.h5"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pet" in err[0]
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    code = main(
        [
            "register",
            "--fixed",
            str(pair["fixed"]),
            "--moving",
            str(pair["moving"]),
            "--fixed_modality",
            "mri",
            "--moving_modality",
            "mri",
            "--model",
            "multigradicon",
            "--no-download",
            "--transform_out",
            str(tmp_path / "T.h5"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "multigradicon_weights/Step_2_final.trch" in err[0] and str(tmp_path / "cache") in err[0]
    assert not (tmp_path / "T.h5").exists()


def test_upstream_spellings_and_console_script(pair, translation_model, tmp_path):
    out = tmp_path / "out"
    script = Path(sys.executable).with_name("mgicon")
    result = subprocess.run(
        [
            str(script),
            "register",
            "--fixed",
            str(pair["fixed"]),
            "--moving",
            str(pair["moving"]),
            "--fixed_modality",
            "mri",
            "--moving_modality",
            "mri",
            "--network_weights",
            str(translation_model),
            "--io_iterations",
            "None",
            "--io_sim",
            "lncc2",
            "--transform_out",
            str(out / "T.hdf5"),
            "--warped_moving_out",
            str(out / "W.mha"),
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
    )
    assert result.returncode == 0, result.stderr
    assert (out / "T.hdf5").is_file() and (out / "W.mha").is_file()
    bad = subprocess.run(
        [str(script), "register", "--fixed", "x"], capture_output=True, encoding="utf-8", errors="replace"
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
