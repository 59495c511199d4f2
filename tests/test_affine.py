"""Affine pre-alignment (issue #14, item 4; issue #21, item 4): ``--affine`` runs an ANTs affine registration
first, the network registers the aligned pair, and the written transform is the composition; its metric rule
(``auto``) is precise on monomodal and contrast-inverted pairs and safe on non-monotonic ones.  The truth: a moving
image sampled analytically through a known affine (rotation 10°, scaling 1.1, translation 8 mm)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mgicon.cli import main
from mgicon.io import itk as itkio
from mgicon.network import build_network, save_checkpoint

SPACING = 1.5
ANGLE = np.deg2rad(10.0)
SCALE = 1.1
TRANSLATION = np.array([8.0, 0.0, 0.0])
# T_true maps fixed points to moving points: q = R·S·p + t (about the origin of physical space)
AXIS = np.array([1.0, 1.0, 2.0]) / np.sqrt(6.0)
K = np.array([[0, -AXIS[2], AXIS[1]], [AXIS[2], 0, -AXIS[0]], [-AXIS[1], AXIS[0], 0]])
ROTATION = np.eye(3) + np.sin(ANGLE) * K + (1 - np.cos(ANGLE)) * K @ K
MATRIX = SCALE * ROTATION


def _true(points: np.ndarray) -> np.ndarray:
    return points @ MATRIX.T + TRANSLATION


def _phantom(points: np.ndarray) -> np.ndarray:
    """A smooth, structured intensity at physical points (mm): an ellipsoid body holding 100 small anisotropic
    blobs of random contrasts (a texture ANTs' mutual information can lock onto; with only a few large blobs its
    affine is off by 1-4 mm)."""
    rng = np.random.default_rng(10)
    body = 1 / (1 + np.exp((np.linalg.norm(points / np.array([26.0, 20.0, 17.0]), axis=1) - 1) * 12))
    value = 40 * body
    for _ in range(100):
        centre, sigma = rng.uniform(-1, 1, 3) * np.array([20.0, 15.0, 12.0]), rng.uniform(2.0, 4.0, 3)
        value += rng.uniform(-40, 80) * np.exp(-0.5 * np.sum(((points - centre) / sigma) ** 2, axis=1))
    return value


def _sampled(size: int, values_at) -> sitk.Image:
    """An image of ``size``³ voxels of 1.5 mm centred on the physical origin, sampled from ``values_at``."""
    image = sitk.Image([size] * 3, sitk.sitkFloat32)
    image.SetSpacing([SPACING] * 3)
    image.SetOrigin([-(size - 1) * SPACING / 2] * 3)
    index = np.indices((size,) * 3)[::-1].reshape(3, -1).T  # (x, y, z) of voxels in array order
    points = index * SPACING + np.array(image.GetOrigin())
    return itkio.from_array(values_at(points).reshape((size,) * 3).astype(np.float32), like=image)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("affine")
    fixed = _sampled(48, _phantom)
    inverse = np.linalg.inv(MATRIX)
    moving = _sampled(58, lambda q: _phantom((q - TRANSLATION) @ inverse.T))  # M(T_true(p)) = F(p)
    paths = {"fixed": root / "fixed.nii.gz", "moving": root / "moving.nii.gz", "root": root}
    sitk.WriteImage(fixed, str(paths["fixed"]))
    sitk.WriteImage(moving, str(paths["moving"]))
    model = root / "identity.pt"
    save_checkpoint(build_network("tiny", input_shape=(24, 24, 24)), model)  # untrained: the identity map
    return paths, model, fixed


def _register(paths, model, out, *extra) -> int:
    return main(
        ["register", "--fixed", str(paths["fixed"]), "--moving", str(paths["moving"]), "--fixed-modality", "mri"]
        + ["--moving-modality", "mri", "--model", str(model), "--io-iterations", "0", "--device", "cpu"]
        + ["--transform-out", str(out / "T.h5"), "--inverse-transform-out", str(out / "Tinv.h5"), *extra]
    )


def _points(n: int = 200) -> np.ndarray:
    """Points inside the phantom's body (where the images say where things are)."""
    points = np.random.default_rng(3).uniform(-1, 1, (4 * n, 3)) * np.array([20.0, 15.0, 12.0])
    return points[np.linalg.norm(points / np.array([22.0, 16.0, 13.0]), axis=1) < 1][:n]


def test_affine_recovers_a_known_affine(pair, tmp_path):
    paths, model, _ = pair
    assert _register(paths, model, tmp_path, "--affine") == 0
    transform = sitk.ReadTransform(str(tmp_path / "T.h5"))
    points = _points()
    error = np.linalg.norm(itkio.transform_points(transform, points) - _true(points), axis=1)
    assert error.max() <= 1.0, f"max error {error.max():.2f} mm"
    # the inverse transform (moving → fixed) undoes it
    inverse = sitk.ReadTransform(str(tmp_path / "Tinv.h5"))
    back = itkio.transform_points(inverse, itkio.transform_points(transform, points))
    np.testing.assert_allclose(back, points, atol=0.1)


def test_without_affine_the_identity_network_leaves_the_affine(pair, tmp_path):
    """The same pair without ``--affine``: an identity network maps every point to the same relative place of the
    moving grid, far from the true affine (so the test above measures the pre-alignment)."""
    paths, model, _ = pair
    assert _register(paths, model, tmp_path) == 0
    transform = sitk.ReadTransform(str(tmp_path / "T.h5"))
    points = _points()
    error = np.linalg.norm(itkio.transform_points(transform, points) - _true(points), axis=1)
    assert error.mean() > 4.0


def test_compose_applies_right_to_left():
    a, b = sitk.TranslationTransform(3, (1.0, 0.0, 0.0)), sitk.ScaleTransform(3, (2.0, 2.0, 2.0))
    inner = sitk.CompositeTransform(3)
    inner.AddTransform(b)
    composite = itkio.compose(a, inner)
    assert composite.GetNumberOfTransforms() == 2
    np.testing.assert_allclose(composite.TransformPoint((1.0, 1.0, 1.0)), (3.0, 2.0, 2.0))


def test_network_method_affine_option(pair):
    """The pipeline's network method with ``evaluation.affine`` composes the same pre-alignment."""
    from mgicon.config import schema_default
    from mgicon.evaluate.methods import make_method
    from mgicon.records import ScanRecord

    paths, model, _ = pair
    assert schema_default("evaluation.affine") is False
    method = make_method("ours", "network", checkpoint=model, affine=True)
    scans = {name: ScanRecord("d", name, "", "t1w", str(paths[name])) for name in ("moving", "fixed")}
    transform = method.register(scans["moving"], scans["fixed"], False, "noio").transform
    points = _points()
    error = np.linalg.norm(itkio.transform_points(transform, points) - _true(points), axis=1)
    assert error.max() <= 1.0, f"max error {error.max():.2f} mm"
    assert method.fingerprint != make_method("ours", "network", checkpoint=model).fingerprint


# ------------------------------------------------------------------ the metric rule on oblique, anisotropic grids
# the case: 10° about z, scaling 1.1, 8 mm translation; fixed 40×44×36 voxels, both grids oblique
Z_MATRIX = SCALE * np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])


def _rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _oblique(size, spacing, direction: np.ndarray, values_at) -> sitk.Image:
    """An image of ``size`` voxels (x, y, z) with ``spacing`` and ``direction``, centred on the physical origin,
    sampled from ``values_at`` (physical points → intensities)."""
    image = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin((-direction @ ((np.asarray(size) - 1) * np.asarray(spacing) / 2)).tolist())
    index = np.indices(tuple(size)[::-1])[::-1].reshape(3, -1).T
    points = (index * np.asarray(spacing)) @ direction.T + np.asarray(image.GetOrigin())
    return itkio.from_array(values_at(points).reshape(tuple(size)[::-1]).astype(np.float32), like=image)


#: intensity relations of the moving image to the fixed one: the same, inverted (linear, negative), non-monotonic
#: (the middle of the phantom's range becomes its brightest: no correlation holds, mutual information does)
RELATIONS = {
    "monomodal": lambda v: v,
    "contrast-inverted": lambda v: 200 - v,
    "non-monotonic": lambda v: 100 * np.sin(np.pi * np.clip(v / 160, 0, 1)),
}


@pytest.fixture(scope="module")
def oblique():
    """The fixed image and one moving image per relation, sampled through the known affine."""
    fixed = _oblique((40, 44, 36), (1.5, 1.2, 1.8), _rotation([1, 2, 0.5], 20), _phantom)
    inverse = np.linalg.inv(Z_MATRIX)
    moving = {
        kind: _oblique(
            (48, 50, 44),
            (1.4, 1.3, 1.6),
            _rotation([0.3, -1, 1], 25),
            lambda q, r=r: r(_phantom((q - TRANSLATION) @ inverse.T)),
        )
        for kind, r in RELATIONS.items()
    }
    return fixed, moving


def _z_error(transform: sitk.Transform) -> float:
    """The maximum error (mm) over 200 points of the fixed image's body against the known affine."""
    points = _points()
    return float(
        np.linalg.norm(itkio.transform_points(transform, points) - (points @ Z_MATRIX.T + TRANSLATION), axis=1).max()
    )


@pytest.mark.parametrize("kind, bound", [("monomodal", 1.0), ("contrast-inverted", 1.0), ("non-monotonic", 2.0)])
def test_auto_affine_recovers_a_known_affine(oblique, kind, bound):
    """The default rule needs no modality flag: ≤ 1 mm where intensities relate linearly, ≤ 2 mm otherwise."""
    from mgicon.register import affine_prealign

    fixed, moving = oblique
    error = _z_error(affine_prealign(moving[kind], fixed, seed=0))
    assert error <= bound, f"{kind}: max error {error:.2f} mm"


def test_the_correlation_refinement_is_kept_where_it_is_more_precise(oblique):
    """On the monomodal pair auto is more precise than mutual information alone (ANTs' default, the old rule)."""
    from mgicon.register import affine_prealign

    fixed, moving = oblique
    auto = _z_error(affine_prealign(moving["monomodal"], fixed, seed=0, metric="auto"))
    alone = _z_error(affine_prealign(moving["monomodal"], fixed, seed=0, metric="mi"))
    assert auto < alone, (auto, alone)


def test_the_correlation_refinement_is_dropped_where_it_misleads(oblique):
    """On the non-monotonic pair the refinement, always kept, would drift far from the truth; auto does not."""
    from mgicon.io.ants import register_affine
    from mgicon.register import AFFINE_REFINEMENT, affine_prealign

    fixed, moving = oblique
    first = affine_prealign(moving["non-monotonic"], fixed, seed=0, metric="mi")
    refined = register_affine(moving["non-monotonic"], fixed, seed=0, initial=first, **AFFINE_REFINEMENT)
    auto = affine_prealign(moving["non-monotonic"], fixed, seed=0)
    assert _z_error(refined) > _z_error(auto) + 1.0, (_z_error(refined), _z_error(auto))
    assert itkio.mutual_information(fixed, moving["non-monotonic"], refined) < itkio.mutual_information(
        fixed, moving["non-monotonic"], first
    )


def test_the_metric_rule_is_one_option_with_the_schemas_default():
    from mgicon.cli import build_parser
    from mgicon.config import schema_default
    from mgicon.register import affine_prealign
    from mgicon.vocabulary import AFFINE_METRICS

    args = ["register", "--fixed", "f", "--moving", "m", "--fixed-modality", "mri", "--moving-modality", "mri"]
    args += ["--transform-out", "T.h5"]
    assert build_parser().parse_args(args).affine_metric == schema_default("evaluation.affine_metric") == "auto"
    assert build_parser().parse_args([*args, "--affine-metric", "gc"]).affine_metric == "gc"
    assert tuple(AFFINE_METRICS) == ("auto", "mi", "gc")
    with pytest.raises(ValueError, match="affine metric 'cc'"):
        affine_prealign(sitk.Image([4, 4, 4], sitk.sitkFloat32), sitk.Image([4, 4, 4], sitk.sitkFloat32), metric="cc")
