"""ITK/SimpleITK I/O: reading and validation, preprocessing, and the network map ↔ physical transform."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mgicon.io import itk as itkio
from mgicon.io.normalize import normalize, quantile
from mgicon.maps import identity_grid
from mgicon.testing import make_image, rotation

GEOMETRIES = [
    # (size x/y/z, spacing, origin, direction)
    ((20, 24, 16), (0.8, 1.1, 2.0), (10.0, -5.0, 3.0), rotation(0.3, 0.15)),
    ((18, 22, 26), (1.2, 0.9, 0.7), (-4.0, 2.0, 7.0), rotation(-0.2)),
    ((16, 16, 16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None),
]


def _image(geometry, seed=0):
    size, spacing, origin, direction = geometry
    array = np.random.default_rng(seed).random(size[::-1]).astype(np.float32)
    return make_image(array, spacing, origin, direction)


def _index_to_physical(image, index):
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + d @ (np.asarray(index, float) * image.GetSpacing())


@pytest.mark.parametrize("fixed_geometry", GEOMETRIES)
@pytest.mark.parametrize("moving_geometry", GEOMETRIES[:2])
def test_transform_follows_the_stated_convention(fixed_geometry, moving_geometry):
    """A translation t of the network map, by hand: fixed index → network index → +t → moving index → physical."""
    fixed, moving = _image(fixed_geometry), _image(moving_geometry, 1)
    shape = (12, 14, 10)
    t = torch.tensor([0.05, -0.03, 0.02]).view(1, 3, 1, 1, 1)
    transform = itkio.map_to_transform(identity_grid(shape) + t, moving, fixed)
    n = np.asarray(shape[::-1], float)
    for index in [(0, 0, 0), (5, 7, 3), tuple(s - 1 for s in fixed.GetSize())]:
        network_index = (np.asarray(index, float) + 0.5) * n / fixed.GetSize() - 0.5
        moved = (network_index / (n - 1) + t.view(3).numpy()[::-1]) * (n - 1)
        moving_index = (moved + 0.5) * np.asarray(moving.GetSize()) / n - 0.5
        expected = _index_to_physical(moving, moving_index)
        got = transform.TransformPoint(tuple(_index_to_physical(fixed, index)))
        assert np.abs(np.asarray(got) - expected).max() < 1e-5


def test_identity_map_maps_field_of_view_onto_field_of_view():
    fixed, moving = _image(GEOMETRIES[0]), _image(GEOMETRIES[1], 1)
    transform = itkio.map_to_transform(identity_grid((8, 8, 8)), moving, fixed)
    # the corner of the fixed field of view (voxel edge) goes to the corner of the moving one
    edge = _index_to_physical(fixed, (-0.5, -0.5, -0.5))
    assert np.allclose(transform.TransformPoint(tuple(edge)), _index_to_physical(moving, (-0.5, -0.5, -0.5)), atol=1e-5)


def test_read_validates_dimension_and_content(tmp_path):
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(itkio.ImageError, match=r"flat.nii.gz: image is 2-D"):
        itkio.read_image(tmp_path / "flat.nii.gz")
    nan = make_image(np.full((4, 5, 6), np.nan, np.float32))
    sitk.WriteImage(nan, str(tmp_path / "nan.nrrd"))
    with pytest.raises(itkio.ImageError, match="no finite voxel"):
        itkio.read_scalar_image(tmp_path / "nan.nrrd")
    with pytest.raises(itkio.ImageError, match="no such file"):
        itkio.read_image(tmp_path / "missing.mha")


def test_dicom_series_folder_is_read(tmp_path):
    volume = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 7).astype(np.int16)
    image = make_image(volume, (0.7, 0.7, 2.5), (1.0, 2.0, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.99"
    for z in range(volume.shape[0]):
        s = image[:, :, z]
        s.SetMetaData("0020|000e", series)
        s.SetMetaData("0020|0013", str(z + 1))
        s.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        s.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        s.SetMetaData("0028|0030", "0.7\\0.7")
        s.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(tmp_path / f"slice{z:03d}.dcm"))
        writer.Execute(s)
    read = itkio.read_image(tmp_path)
    assert read.GetSize() == (6, 5, 4)
    assert np.array_equal(itkio.to_array(read), volume)
    assert np.allclose(read.GetSpacing(), (0.7, 0.7, 2.5))


@pytest.mark.parametrize(
    "modality, array, expected",
    [
        ("ct", np.array([-2000.0, -1000, 0, 1000, 3000]), [0, 0, 0.5, 1, 1]),
        ("mri", np.arange(100, dtype=float), [min(v / 98, 1.0) for v in range(100)]),
    ],
)
def test_normalize(modality, array, expected):
    assert np.allclose(normalize(array.astype(np.float32), modality), expected, atol=1e-6)


def test_mri_quantile_equals_upstream_kthvalue():
    from unigradicon import quantile as upstream_quantile

    values = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    for q in (0.01, 0.5, 0.99, 1.0):
        assert quantile(values, q) == upstream_quantile(torch.tensor(values), q).item()


def test_unknown_modality_is_an_error():
    with pytest.raises(ValueError, match="unknown modality 'pet'"):
        normalize(np.zeros(3, np.float32), "pet")


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkInt32])
def test_label_maps_warp_nearest_and_keep_their_type(pixel):
    labels = np.zeros((10, 12, 14), np.int64)
    labels[2:6, 3:9, 4:10] = 3
    labels[6:9, 3:9, 4:10] = 7
    image = sitk.Cast(make_image(labels.astype(np.int32), (1.0, 1.2, 0.9), (3.0, 1.0, -2.0), rotation(0.2)), pixel)
    shift = sitk.TranslationTransform(3, (0.37, -0.41, 0.23))
    warped = itkio.warp_image(image, shift, image)
    assert warped.GetPixelID() == pixel
    assert set(np.unique(itkio.to_array(warped))) <= {0, 3, 7}


def test_cached_reads_decode_a_file_once_and_see_changes(tmp_path, monkeypatch):
    path = tmp_path / "a.nii.gz"
    itkio.write_image(make_image(np.arange(24, dtype=np.float32).reshape(2, 3, 4)), path)
    decoded = []
    real = itkio._read_image
    monkeypatch.setattr(itkio, "_read_image", lambda p, what: decoded.append(p) or real(p, what))
    with itkio.cached_reads():
        first = itkio.read_image(path)
        first[0, 0, 0] = -1.0  # a caller's change stays its own
        second = itkio.read_image(path)
        assert len(decoded) == 1 and itkio.to_array(second)[0, 0, 0] == 0.0
        itkio.write_image(make_image(np.ones((2, 3, 5), np.float32)), path)
        assert itkio.read_image(path).GetSize() == (5, 3, 2) and len(decoded) == 2
    itkio.read_image(path)
    assert len(decoded) == 3  # no cache outside the context
