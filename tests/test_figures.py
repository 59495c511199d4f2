"""Figures: the panel data of a known transform, the PNG layout, the summary bar charts, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgicon.io.itk import identity_transform, map_to_transform, to_array
from mgicon.maps import identity_grid
from mgicon.tables.figures import panel_data, registration_panels, summary_plot
from mgicon.testing import make_image, rotation, smooth_volume

SHAPE = (20, 28, 24)  # z, y, x
SPACING = (1.0, 1.5, 2.5)  # x, y, z mm


def _images(direction=None):
    fixed = smooth_volume(SHAPE, seed=1)[0, 0].numpy()
    moving = smooth_volume(SHAPE, seed=2)[0, 0].numpy()
    geometry = dict(spacing=SPACING, origin=(3.0, -7.0, 11.0), direction=direction)
    return make_image(fixed, **geometry), make_image(moving, **geometry)


def _scaled_x(fixed, moving, factor: float):
    """A transform scaling the x axis by ``factor`` about the centre (a network map on the images' own grid)."""
    phi = identity_grid(SHAPE, dtype=torch.float64).clone()
    phi[0, 2] = 0.5 + factor * (phi[0, 2] - 0.5)
    return map_to_transform(phi, moving, fixed)


def test_identity_panel_data():
    fixed, moving = _images(direction=rotation(0.3, 0.2))
    data = panel_data(fixed, moving, identity_transform())
    z = SHAPE[0] // 2
    np.testing.assert_allclose(data["fixed"], to_array(fixed)[z])
    np.testing.assert_allclose(data["moving"], to_array(moving)[z])
    np.testing.assert_allclose(data["warped"], data["moving"], atol=1e-5)
    np.testing.assert_allclose(data["jacobian"], 1.0, atol=1e-6)
    assert not data["folds"].any()
    rows, cols = np.indices(SHAPE[1:])
    np.testing.assert_allclose(data["grid_row"], rows * SPACING[1], atol=1e-6)
    np.testing.assert_allclose(data["grid_col"], cols * SPACING[0], atol=1e-6)


def test_compression_shows_in_jacobian_and_grid():
    fixed, moving = _images(direction=rotation(0.3))
    data = panel_data(fixed, moving, _scaled_x(fixed, moving, 0.8))
    np.testing.assert_allclose(data["jacobian"], 0.8, atol=1e-4)
    np.testing.assert_allclose(np.diff(data["grid_col"], axis=1), 0.8 * SPACING[0], atol=1e-4)
    np.testing.assert_allclose(np.diff(data["grid_row"], axis=0), SPACING[1], atol=1e-4)
    folded = panel_data(fixed, moving, _scaled_x(fixed, moving, -0.5))
    assert folded["folds"].all() and np.allclose(folded["jacobian"], -0.5, atol=1e-4)


def test_coronal_slice_has_superior_up():
    fixed, moving = _images()
    data = panel_data(fixed, moving, identity_transform(), slice_axis="coronal")
    np.testing.assert_allclose(data["fixed"], to_array(fixed)[:, SHAPE[1] // 2, :][::-1])
    assert data["grid_row"][0, 0] == pytest.approx((SHAPE[0] - 1) * SPACING[2])
    assert data["grid_row"][-1, 0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        panel_data(fixed, moving, identity_transform(), slice_axis="oblique")


def test_registration_panels_layout(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    fixed, moving = _images()
    one = registration_panels(fixed, moving, {"identity": identity_transform()}, tmp_path / "one.png")
    three = registration_panels(
        fixed,
        moving,
        {
            "identity": identity_transform(),
            "compressed": _scaled_x(fixed, moving, 0.8),
            "folded": _scaled_x(fixed, moving, -0.5),
        },
        tmp_path / "three.png",
        title="synthetic",
    )
    h1, w1 = image.imread(one).shape[:2]
    h3, w3 = image.imread(three).shape[:2]
    assert w1 == w3  # five columns each
    assert h3 > 2.5 * h1  # one row per method
    # slice height/width in mm = 28·1.5 / (24·1.0): three rows of such panels over five columns
    assert h3 / w3 > 0.8 * 3 * (28 * 1.5) / (24 * 1.0) / 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "three.png"]


def _rows():
    rows = []
    for dataset, column, metric in (("HCP", "T1w/T1w", "dice"), ("COPDGene", "CT/CT", "landmarks")):
        for io in ("io-mind", "noio"):
            for i, method in enumerate(("uniGradICON", "multiGradICON")):
                mean = 70.0 + 5.0 * i if metric == "dice" else 3.0 - i  # table units: DICE in %
                rows.append(
                    dict(
                        table="table2",
                        dataset=dataset,
                        column_label=column,
                        metric=metric,
                        io=io,
                        method=method,
                        mean=mean,
                        ci_low=mean * 0.9,
                        ci_high=mean * 1.1,
                    )
                )
                rows.append(dict(rows[-1], metric="negative_jacobian_percent", mean=0.01))
    rows.append(dict(rows[0], io="noio", method="SyN", mean="61.0", ci_low="", ci_high=None))  # CSV-like values
    return rows


def test_summary_plot(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    path = summary_plot(_rows(), tmp_path / "sub" / "table2.png", title="Table 2")
    height, width = image.imread(path).shape[:2]
    assert width > height > 100
    with pytest.raises(ValueError):
        summary_plot([r for r in _rows() if r["metric"] == "negative_jacobian_percent"], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    figure = pytest.importorskip("matplotlib.figure")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(figure.Figure, "savefig", broken_savefig)
    fixed, moving = _images()
    old = tmp_path / "panels.png"
    old.write_bytes(b"previous figure")
    with pytest.raises(RuntimeError):
        registration_panels(fixed, moving, {"identity": identity_transform()}, old)
    with pytest.raises(RuntimeError):
        summary_plot(_rows(), tmp_path / "summary.png")
    assert old.read_bytes() == b"previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panels.png"]
