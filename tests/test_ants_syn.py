"""The SyN baseline: ANTs ↔ SimpleITK conversions (mgicon.io.ants) and syn_register (mgicon.evaluate.ants_syn).

Small synthetic brains (40×48×40 voxels) keep the whole file to a few SyN runs of under a second each (plus
~3 s start-up per deterministic run, which uses a worker process).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mgicon.data.synthetic import generate_dataset
from mgicon.evaluate.ants_syn import SynResult, syn_register
from mgicon.io import ants as antsio
from mgicon.io.itk import displacement_field, identity_transform, read_image, to_array, warp_image
from mgicon.metrics import mean_dice

SIZE = [40, 48, 40]


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    """Images and labels of three small syn-brain subjects: ``brain[(subject, modality)]``."""
    root = tmp_path_factory.mktemp("syn-brain")
    rows = generate_dataset("syn-brain", root, {"subjects": 3, "n_test": 2, "syn-brain": {"size": SIZE}}, seed=0)
    out = {}
    for row in rows:
        out[(row["subject"], row["modality"])] = read_image(root / row["image"])
        out[(row["subject"], "label")] = read_image(root / row["label"])
    return out


@pytest.fixture(scope="module")
def mono(brain):
    """One deterministic SyN of sub-00 t1w → sub-01 t1w (shared by the Dice and the determinism tests)."""
    return syn_register(brain[("sub-00", "t1w")], brain[("sub-01", "t1w")], seed=3)


def _rotated(shape_zyx, dtype, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = (rng.random(shape_zyx) * 200).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 1.3, 2.1))
    image.SetOrigin((-31.5, 10.25, 7.125))
    image.SetDirection(sitk.VersorTransform((0.3, -0.5, 0.8), 0.6).GetMatrix())
    return image


def _dice(fixed_labels, moving_labels, transform) -> float:
    warped = warp_image(moving_labels, transform, fixed_labels, nearest=True)
    return mean_dice(to_array(fixed_labels), to_array(warped))


# ---------------------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
def test_ants_round_trip_preserves_geometry_and_values(dtype):
    image = _rotated((5, 6, 7), dtype)
    converted = antsio.to_ants(image)
    # the ANTs image itself has the geometry: same physical point for the same (x, y, z) index and value
    assert converted.shape == image.GetSize()
    index = (4, 2, 3)
    direction = np.asarray(converted.direction).reshape(3, 3)
    point = np.asarray(converted.origin) + direction @ (np.asarray(converted.spacing) * index)
    np.testing.assert_allclose(point, image.TransformIndexToPhysicalPoint(index), atol=1e-9)
    assert converted.numpy()[index] == np.float32(to_array(image)[index[::-1]])

    back = antsio.from_ants(converted)
    assert back.GetSize() == image.GetSize()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetSpacing() == image.GetSpacing()
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-12)
    # values: exact, except float64, which ANTsPy holds as float32
    np.testing.assert_array_equal(to_array(back), to_array(image).astype(to_array(back).dtype))
    assert to_array(back).dtype == {np.uint8: np.uint8}.get(dtype, np.float32)


def test_converted_transform_reproduces_ants_apply_transforms(brain, tmp_path):
    # a rotated direction (same on both grids) checks that field vectors are physical, not voxel, components
    rotation = sitk.VersorTransform((0.2, 0.9, -0.3), 0.5).GetMatrix()
    moving, fixed = sitk.Image(brain[("sub-00", "t1w")]), sitk.Image(brain[("sub-01", "t1w")])
    for image in (moving, fixed):
        image.SetDirection(rotation)
    run = antsio.register(moving, fixed, tmp_path / "reg_", type_of_transform="SyN", seed=1)
    assert [Path(p).name for p in run.fwdtransforms] == ["reg_1Warp.nii.gz", "reg_0GenericAffine.mat"]
    expected = to_array(antsio.apply_transforms(moving, fixed, run.fwdtransforms, interpolator="linear"))

    transform = antsio.transform_from_ants(run.fwdtransforms)
    for path in run.fwdtransforms:  # the transform must not depend on the files
        Path(path).unlink()
    ours = to_array(warp_image(moving, transform, fixed))
    scale = float(np.abs(expected).max())
    assert np.abs(ours - expected).max() <= 1e-4 * scale

    # the opposite order (affine applied to fixed points first) is clearly different: the test has power
    swapped = sitk.CompositeTransform(3)
    swapped.AddTransform(transform.GetNthTransform(1))
    swapped.AddTransform(transform.GetNthTransform(0))
    assert np.abs(to_array(warp_image(moving, swapped, fixed)) - expected).mean() > 1e-3 * scale


# ---------------------------------------------------------------------------------------------- syn_register


def test_syn_raises_dice_on_monomodal_pair(brain, mono, monkeypatch, tmp_path):
    assert isinstance(mono, SynResult) and 0 < mono.seconds < 60
    fixed_labels, moving_labels = brain[("sub-01", "label")], brain[("sub-00", "label")]
    before = _dice(fixed_labels, moving_labels, identity_transform())
    after = _dice(fixed_labels, moving_labels, mono.transform)
    assert after > before + 0.1, (before, after)

    # temporary files are cleaned up (also on the in-process path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    syn_register(brain[("sub-00", "t1w")], brain[("sub-01", "t1w")], deterministic=False, reg_iterations=(5, 0, 0))
    assert list(tmp_path.iterdir()) == []


def test_syn_registers_multimodal_pair(brain):
    moving, fixed = brain[("sub-00", "t1w")], brain[("sub-01", "t2w")]
    result = syn_register(moving, fixed, deterministic=False, threads=1)  # in this process or a worker
    field = to_array(displacement_field(result.transform, fixed))
    assert np.isfinite(field).all() and np.abs(field).max() > 1.0
    fixed_labels, moving_labels = brain[("sub-01", "label")], brain[("sub-00", "label")]
    assert (
        _dice(fixed_labels, moving_labels, result.transform)
        > _dice(fixed_labels, moving_labels, identity_transform()) + 0.05
    )


def test_deterministic_syn_repeats_exactly(brain, mono):
    again = syn_register(brain[("sub-00", "t1w")], brain[("sub-01", "t1w")], seed=3, deterministic=True)
    fixed = brain[("sub-01", "t1w")]
    first = to_array(displacement_field(mono.transform, fixed))
    second = to_array(displacement_field(again.transform, fixed))
    assert np.abs(first).max() > 1.0
    np.testing.assert_array_equal(first, second)


def test_syn_refuses_bad_input(brain):
    image = brain[("sub-00", "t1w")]
    flat = sitk.Image(8, 8, sitk.sitkFloat32) + 1.0
    with pytest.raises(ValueError, match="2-D"):
        syn_register(flat, image)
    with pytest.raises(ValueError, match="constant"):
        syn_register(image, sitk.Image(8, 8, 8, sitk.sitkFloat32))
    with pytest.raises(ValueError, match="seed"):
        syn_register(image, image, seed=None)
    with pytest.raises(ValueError, match="deterministic=False"):
        syn_register(image, image, threads=2)
    with pytest.raises(ValueError, match="threads"):
        syn_register(image, image, deterministic=False, threads=0)
    with pytest.raises(ValueError, match="seed"):
        syn_register(image, image, seed=-1, deterministic=False)
