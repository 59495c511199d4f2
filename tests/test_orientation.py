"""Orientation (issue #14, item 3): before the network the moving image's voxel array is permuted/flipped to the
fixed image's axis orientation, without resampling; transforms stay physical; ``--keep-orientation`` is upstream's
behaviour (raw arrays).  The truth: a copy of an image stored in another axis orientation, built by hand."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mgicon.cli import main
from mgicon.io import itk as itkio
from mgicon.network import build_network, save_checkpoint
from mgicon.testing import make_image, smooth_volume

SHAPE = (24, 24, 24)
SPACING = (1.2, 0.9, 1.5)  # x, y, z
ORIGIN = (4.0, -6.0, 10.0)
# old index (x, y, z) = Q @ new index + c: new u → old z reversed, new v → old x, new w → old y reversed
Q = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]])


def _image(shape_zyx) -> sitk.Image:
    """A smooth, asymmetric MR-like image with identity direction (LPS) and anisotropic spacing."""
    array = 100 * smooth_volume(shape_zyx, 3, scale=4)[0, 0].numpy()
    array = array + np.linspace(0, 30, shape_zyx[2])[None, None, :]  # a gradient along x: mirrors show
    return make_image(array.astype(np.float32), SPACING, ORIGIN)


def _other_orientation(image: sitk.Image) -> sitk.Image:
    """The same physical image stored with the index axes of ``Q`` (by hand, not through DICOMOrient)."""
    old_size = np.array(image.GetSize())
    new_size = np.abs(Q.T) @ old_size
    c = np.array([old_size[r] - 1 if Q[r].sum() < 0 else 0 for r in range(3)])
    new_index = np.indices(new_size[::-1])[::-1].reshape(3, -1)  # rows: u, v, w (x, y, z) of every new voxel
    old_index = Q @ new_index + c[:, None]
    array = itkio.to_array(image)[old_index[2], old_index[1], old_index[0]].reshape(new_size[::-1])
    frame = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing()) @ Q
    spacing = np.linalg.norm(frame, axis=0)
    out = make_image(array, spacing, image.TransformContinuousIndexToPhysicalPoint(c.astype(float).tolist()))
    out.SetDirection((frame / spacing).flatten().tolist())
    return out


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory):
    """An untrained tiny network: its last layer is zero, so its map is the identity."""
    path = tmp_path_factory.mktemp("model") / "identity.pt"
    save_checkpoint(build_network("tiny", input_shape=SHAPE), path)
    return path


def _register(tmp_path, fixed, moving, model, *extra) -> tuple[int, np.ndarray, sitk.Transform]:
    paths = {"fixed": tmp_path / "fixed.nii.gz", "moving": tmp_path / "moving.nii.gz"}
    sitk.WriteImage(fixed, str(paths["fixed"]))
    sitk.WriteImage(moving, str(paths["moving"]))
    warped, transform = tmp_path / "warped.nii.gz", tmp_path / "T.h5"
    code = main(
        ["register", "--fixed", str(paths["fixed"]), "--moving", str(paths["moving"]), "--fixed-modality", "mri"]
        + ["--moving-modality", "mri", "--model", str(model), "--io-iterations", "0", "--device", "cpu"]
        + ["--transform-out", str(transform), "--warped-moving-out", str(warped), *extra]
    )
    return code, itkio.to_array(sitk.ReadImage(str(warped))), sitk.ReadTransform(str(transform))


def test_hand_built_copy_is_the_same_physical_image_in_another_orientation():
    fixed = _image((16, 20, 24))
    moving = _other_orientation(fixed)
    assert itkio.orientation_code(fixed) == "LPS" and itkio.orientation_code(moving) != "LPS"
    assert moving.GetSize() != fixed.GetSize()
    # the identity resampling of the copy onto the original grid gives the original
    back = itkio.warp_image(moving, itkio.identity_transform(), fixed)
    np.testing.assert_allclose(itkio.to_array(back), itkio.to_array(fixed), atol=1e-3)
    # reorient undoes the permutation exactly, and reorient_array does to any array what reorient does to voxels
    oriented = itkio.reorient(moving, "LPS")
    assert itkio.same_grid(oriented, fixed)
    np.testing.assert_array_equal(itkio.to_array(oriented), itkio.to_array(fixed))
    np.testing.assert_array_equal(itkio.reorient_array(itkio.to_array(moving), moving, "LPS"), itkio.to_array(fixed))


@pytest.mark.parametrize("shape", [(16, 20, 24), SHAPE])
def test_register_reorients_by_default(tmp_path, identity_model, shape):
    fixed = _image(shape)
    code, warped, transform = _register(tmp_path, fixed, _other_orientation(fixed), identity_model)
    assert code == 0
    truth = itkio.to_array(fixed)
    assert np.abs(warped - truth).max() <= 1e-3 * (truth.max() - truth.min())
    points = itkio.index_to_physical(fixed, np.random.default_rng(0).uniform(0, np.array(fixed.GetSize()) - 1, (50, 3)))
    np.testing.assert_allclose(itkio.transform_points(transform, points), points, atol=1e-3)


def test_keep_orientation_registers_the_raw_arrays(tmp_path, identity_model):
    """Upstream's behaviour: the identity map pairs voxel (i, j, k) of both arrays, so the warped image is the
    moving copy's raw array, mirrored and axis-swapped against the fixed image."""
    fixed = _image(SHAPE)
    moving = _other_orientation(fixed)
    code, warped, _ = _register(tmp_path, fixed, moving, identity_model, "--keep-orientation")
    assert code == 0
    truth, raw = itkio.to_array(fixed), itkio.to_array(moving)
    assert np.abs(warped - raw).max() <= 1e-3 * (raw.max() - raw.min())
    assert np.abs(warped - truth).mean() > 0.1 * (truth.max() - truth.min())


def test_network_method_reorients_the_data_stage_volumes(tmp_path, identity_model):
    """The pipeline's network method, from the data stage's network-grid volumes, agrees with the command line."""
    from mgicon.evaluate.methods import make_method
    from mgicon.records import ScanRecord
    from mgicon.register import prepare

    fixed = _image(SHAPE)
    scans = {}
    for name, image in (("fixed", fixed), ("moving", _other_orientation(fixed))):
        path, volume = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_network.nii.gz"
        sitk.WriteImage(image, str(path))
        tensor = prepare(path, "mri", SHAPE).tensor[0, 0].numpy()  # as stored, like the data stage's volume
        sitk.WriteImage(itkio.on_network_grid(tensor, image), str(volume))
        scans[name] = ScanRecord("d", name, "", "t1w", str(path), network_image=str(volume))
    points = itkio.index_to_physical(fixed, np.random.default_rng(1).uniform(0, 23, (50, 3)))
    for keep, close in ((False, True), (True, False)):
        method = make_method("ours", "network", checkpoint=identity_model, keep_orientation=keep)
        moved = itkio.transform_points(
            method.register(scans["moving"], scans["fixed"], False, "noio").transform, points
        )
        assert np.allclose(moved, points, atol=1e-3) == close
    assert make_method("a", "network", checkpoint=identity_model).fingerprint != method.fingerprint


def test_figure_panels_show_one_anatomical_orientation():
    from mgicon.tables.figures import panel_data

    fixed = _image((16, 20, 24))
    moving = _other_orientation(fixed)
    identity = itkio.identity_transform()
    stored = panel_data(fixed, fixed, identity)
    other = panel_data(moving, moving, identity)
    for key in ("fixed", "moving", "warped", "jacobian"):
        np.testing.assert_allclose(other[key], stored[key], atol=1e-4)
