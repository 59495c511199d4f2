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


def _other_orientation(image: sitk.Image, Q: np.ndarray = Q) -> sitk.Image:
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


# ------------------------------------------------------------------------------ the pipeline's data stage
RAI = -np.eye(3, dtype=int)  # every index axis reversed: x towards the right, y anterior, z inferior


def _dataset(root, name: str, stored: list[np.ndarray | None], keep: bool = False, same: bool = False) -> dict:
    """A manifest dataset of one subject per entry of ``stored`` (an image and a label map each, different data per
    subject unless ``same``), subject ``i`` stored in ``stored[i]``'s axes (None: LPS, as built); returns the config
    the data stage reads."""
    from mgicon.data.manifest import write_manifest

    folder = root / name
    folder.mkdir()
    rows = []
    for i, q in enumerate(stored):
        array = 100 * smooth_volume((16, 20, 24), 0 if same else i, scale=4)[0, 0].numpy()
        image = make_image((array + np.linspace(0, 30, 24)[None, None, :]).astype(np.float32), SPACING)
        label = itkio.from_array((itkio.to_array(image) > 60).astype(np.uint8) + 1, like=image)
        if q is not None:
            image, label = _other_orientation(image, q), _other_orientation(label, q)
        for what, data in (("image", image), ("label", label)):
            sitk.WriteImage(data, str(folder / f"s{i}_{what}.nii.gz"))
        rows.append({"dataset": name, "subject": f"s{i}", "timepoint": "", "modality": "t1w", "split": "test"})
        rows[-1].update(image=f"s{i}_image.nii.gz", label=f"s{i}_label.nii.gz", landmarks="", mask="")
    write_manifest(rows, folder / "manifest.csv")
    source = {"kind": "manifest", "path": str(folder / "manifest.csv")}
    spec = {"region": "Brain", "modalities": ["t1w"], "pairing": "inter", "stages": ["test"], "source": source}
    network = {"preset": "tiny", "input_shape": list(SHAPE)}
    return {"network": network, "datasets": {name: {**spec, "keep_orientation": keep}}}


def _preprocessed(tmp_path, name: str, stored, keep: bool = False, same: bool = False) -> list:
    """The data stage's rows of the dataset (manifest, then the ``preprocess`` rule's function)."""
    from mgicon.config import resolve
    from mgicon.data.build import build_manifest, preprocess_dataset, read_preprocessed
    from mgicon.records import ScanRecord

    config = resolve(_dataset(tmp_path, name, stored, keep, same), check_files=False)
    out = tmp_path / "results" / name
    build_manifest(name, config, out / "manifest.csv")
    preprocess_dataset(name, config, out / "manifest.csv", out / "preprocessed.csv")
    return [ScanRecord.from_row(r) for r in read_preprocessed(out / "preprocessed.csv")]


def _arrays(scans, column: str) -> list[np.ndarray]:
    return [itkio.to_array(itkio.read_image(getattr(s, column))) for s in scans]


def test_the_data_stage_brings_a_mixed_dataset_to_one_orientation(tmp_path):
    """Half the scans stored RAI (copies of the same data): the network volumes and label maps are the all-LPS
    dataset's (the RAI half permuted back, no resampling), the orientation is recorded; ``keep_orientation``
    keeps the RAI arrays as stored."""
    lps = _preprocessed(tmp_path, "lps", [None] * 4)
    mixed = _preprocessed(tmp_path, "mixed", [None, RAI, None, RAI])
    kept = _preprocessed(tmp_path, "kept", [None, RAI, None, RAI], keep=True)
    assert itkio.orientation_code(itkio.read_image(mixed[1].image)) == "RAI"
    assert [s.orientation for s in lps] == [s.orientation for s in mixed] == ["LPS"] * 4
    assert [s.orientation for s in kept] == ["LPS", "RAI", "LPS", "RAI"]
    for column in ("network_image", "network_label"):
        for a, b in zip(_arrays(lps, column), _arrays(mixed, column)):
            np.testing.assert_allclose(b, a, atol=1e-5)
        for i, (a, b) in enumerate(zip(_arrays(lps, column), _arrays(kept, column))):
            assert np.allclose(a, b, atol=1e-5) == (i % 2 == 0), (column, i)
    # the volumes still cover each scan's field of view: the same physical grid as the LPS dataset's
    for a, b in zip(lps, mixed):
        assert itkio.same_grid(itkio.read_image(a.network_image), itkio.read_image(b.network_image))


@pytest.mark.parametrize("keep_data", [False, True])
def test_evaluation_sees_the_data_stage_volumes_in_one_orientation(tmp_path, keep_data):
    """The network method on two copies of one image, stored LPS (moving) and RAI (fixed), from the data stage's
    volumes (reoriented, or kept as stored): the network sees equal arrays, so a network whose displacement is
    ``k · (moving − fixed)`` gives the identity in physical space; ``evaluation.keep_orientation`` gives it the
    arrays as stored in the files (mirrored here), as upstream, and the transform moves points."""
    from mgicon.evaluate.methods import make_method
    from mgicon.testing import known_output_network

    model = tmp_path / "difference.pt"
    save_checkpoint(known_output_network(antisymmetric=[0.05, -0.04, 0.04], input_shape=SHAPE), model)
    moving, fixed = _preprocessed(tmp_path, "pair", [None, RAI], keep=keep_data, same=True)
    fixed_image = itkio.read_image(fixed.image)
    assert itkio.orientation_code(fixed_image) == "RAI" and fixed.orientation == ("RAI" if keep_data else "LPS")
    corner = np.array(fixed_image.GetSize()) - 1
    points = itkio.index_to_physical(fixed_image, np.random.default_rng(2).uniform(0, corner, (50, 3)))
    for keep, identity in ((False, True), (True, False)):
        method = make_method("ours", "network", checkpoint=model, keep_orientation=keep)
        moved = itkio.transform_points(method.register(moving, fixed, False, "noio").transform, points)
        assert np.allclose(moved, points, atol=1e-3) == identity, (keep, np.abs(moved - points).max())
