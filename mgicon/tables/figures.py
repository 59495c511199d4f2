"""Figures: qualitative registration panels (the paper's Fig. 1–2), bar charts of a table's summary, and the
training curves of the variants.

Conventions (stated once here):

* A registration result is an ITK transform mapping **fixed** physical points to **moving** physical points; the
  warped moving image is ``warp_image(moving, transform, fixed)``, on the fixed grid.  All SimpleITK work goes
  through :mod:`mgicon.io.itk`; this module only handles numpy arrays and matplotlib.
* Images are first reoriented (permuted/flipped, no resampling) to ITK's identity axes (``LPS``,
  :data:`mgicon.io.itk.DISPLAY_ORIENTATION`), so a scan stored in any axis orientation shows the same planes.
* Arrays are ITK's ``[z, y, x]``.  A slice is taken perpendicular to an array axis: ``"axial"`` = axis 0 (ITK z),
  ``"coronal"`` = axis 1, ``"sagittal"`` = axis 2 (names assume a near-identity direction matrix).  Slices are
  returned ready to display with row 0 at the top (``imshow(origin="upper")``): axial keeps the LPS array order
  (anterior up, patient left on the right, the radiological view); coronal and sagittal are flipped so that
  superior is up.  Pixel aspect comes from the physical spacing.
* The deformation grid is the regular grid of the fixed image's slice plane (in mm along its in-plane axes) seen
  through the transform: ``grid_row``/``grid_col`` hold the in-plane coordinates of ``T(p)`` per pixel, and the
  drawn lines are their iso-lines.  They deform exactly as the warped image does (upstream icon_registration draws
  the same iso-lines of the map over the warped image); the identity gives straight, evenly spaced lines.
* The Jacobian determinant is the physical one (:func:`mgicon.io.itk.jacobian_determinant` of the displacement
  field on the fixed grid); folds are ``J < 0`` (:func:`mgicon.vocabulary.is_fold`).
* matplotlib is imported only inside the plotting functions (it belongs to the ``workflow`` extra) and is used
  through :class:`matplotlib.figure.Figure` (Agg canvas), so no global backend is switched.  Files are written
  atomically through :func:`mgicon.fsutil.atomic_path`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from mgicon.fsutil import atomic_path
from mgicon.io.itk import (
    DISPLAY_ORIENTATION,
    displacement_field,
    index_to_physical,
    jacobian_determinant,
    reorient,
    to_array,
    warp_image,
)
from mgicon.vocabulary import IO_SETTINGS, METRIC_LABELS, NEGATIVE_JACOBIAN, TRAINING_STAGES, TRAINING_TERMS, is_fold

if TYPE_CHECKING:  # type hints only; SimpleITK calls live in mgicon.io.itk
    import SimpleITK as sitk

SLICE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
PANEL_COLUMNS = ("fixed", "moving", "warped moving", "deformation grid", "Jacobian determinant")
JACOBIAN_RANGE = (0.0, 2.0)  # diverging colour scale, centred at 1 (no change of volume)
SKIPPED_METRICS = {NEGATIVE_JACOBIAN}
PANEL_INCHES = 2.4
DPI = 100


# ----------------------------------------------------------------------------------------------- geometry


def _index_frame(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """``(origin, A)`` with ``physical = origin + A @ index`` (x, y, z order), from ``index_to_physical``."""
    points = index_to_physical(image, np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float))
    origin = points[0]
    return origin, (points[1:] - origin).T


def _array_spacing(image: sitk.Image) -> np.ndarray:
    """Voxel size in mm per array axis (z, y, x)."""
    _, frame = _index_frame(image)
    return np.linalg.norm(frame, axis=0)[::-1]


def _axis(slice_axis: str | int) -> int:
    if isinstance(slice_axis, str):
        if slice_axis not in SLICE_AXES:
            raise ValueError(f"slice_axis must be one of {sorted(SLICE_AXES)} or an array axis 0-2, got {slice_axis!r}")
        return SLICE_AXES[slice_axis]
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be an array axis 0-2, got {slice_axis}")
    return int(slice_axis)


def _take(volume: np.ndarray, axis: int, index: int | None) -> np.ndarray:
    """The 2-D slice of a ``[z, y, x, ...]`` array perpendicular to ``axis`` (mid slice by default), oriented for
    display (superior up for coronal/sagittal)."""
    n = volume.shape[axis]
    index = n // 2 if index is None else int(index)
    if not 0 <= index < n:
        raise ValueError(f"slice index {index} outside 0..{n - 1} along array axis {axis}")
    plane = np.take(volume, index, axis=axis)
    return plane if axis == 0 else plane[::-1]


def _plane_aspect(image: sitk.Image, axis: int) -> float:
    """imshow aspect (pixel height / width) of a slice perpendicular to ``axis``."""
    spacing = np.delete(_array_spacing(image), axis)
    return float(spacing[0] / spacing[1])


def panel_data(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    slice_axis: str | int = "axial",
    slice_index: int | None = None,
) -> dict[str, np.ndarray]:
    """The 2-D arrays one row of :func:`registration_panels` shows, all oriented for display.

    ``fixed``/``moving``/``warped``: intensities (fixed grid for ``warped``; ``moving`` on its own grid, same
    relative slice position).  ``grid_row``/``grid_col``: in-plane coordinates (mm along the fixed slice's
    vertical/horizontal axis, from the fixed origin) of ``T(p)`` for each fixed pixel ``p``.  ``jacobian``: the
    physical Jacobian determinant; ``folds``: ``jacobian < 0`` (:func:`~mgicon.vocabulary.is_fold`).  ``slice_index``
    is along the fixed image (default: middle); the moving slice is taken at the same fraction of its own size.
    Both images are first reoriented (no resampling) to :data:`~mgicon.io.itk.DISPLAY_ORIENTATION`, so that every
    panel shows the same anatomical plane whatever the axis orientation a scan is stored in.
    """
    fixed, moving = reorient(fixed, DISPLAY_ORIENTATION), reorient(moving, DISPLAY_ORIENTATION)
    axis = _axis(slice_axis)
    fixed_array = to_array(fixed).astype(np.float32)
    moving_array = to_array(moving).astype(np.float32)
    n = fixed_array.shape[axis]
    index = n // 2 if slice_index is None else int(slice_index)
    m = moving_array.shape[axis]
    moving_index = m // 2 if slice_index is None else int(round(index / max(n - 1, 1) * (m - 1)))

    field = displacement_field(transform, fixed)
    displacement = to_array(field)  # [z, y, x, 3], physical (x, y, z) mm
    _, frame = _index_frame(fixed)
    # T(p) in fixed continuous index (x, y, z): index(p) + A⁻¹ u(p)
    shift = _take(displacement, axis, index) @ np.linalg.inv(frame).T
    rows, cols = np.indices(shift.shape[:2], dtype=np.float64)
    spacing = _array_spacing(fixed)  # z, y, x
    in_plane = [a for a in range(3) if a != axis]  # array axes shown as rows, columns
    size = fixed_array.shape
    # display row r of the oriented slice is array index r (axial) or size-1-r (flipped views)
    row_index = rows if axis == 0 else (size[in_plane[0]] - 1 - rows)
    grid_row = (row_index + shift[..., 2 - in_plane[0]]) * spacing[in_plane[0]]
    grid_col = (cols + shift[..., 2 - in_plane[1]]) * spacing[in_plane[1]]

    jacobian = _take(to_array(jacobian_determinant(field)).astype(np.float64), axis, index)
    warped = to_array(warp_image(moving, transform, fixed, nearest=False)).astype(np.float32)
    return {
        "fixed": _take(fixed_array, axis, index),
        "moving": _take(moving_array, axis, moving_index),
        "warped": _take(warped, axis, index),
        "grid_row": grid_row,
        "grid_col": grid_col,
        "jacobian": jacobian,
        "folds": is_fold(jacobian),
    }


def intensity_window(volume: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The display window of an image: its ``low``–``high`` percentiles of finite voxels (never empty)."""
    finite = np.asarray(volume, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _nice_step(extent: float, lines: int = 10) -> float:
    """A round grid spacing (1, 2 or 5 × 10^k mm) giving about ``lines`` lines over ``extent``."""
    raw = max(extent, 1e-9) / lines
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


# --------------------------------------------------------------------------------------------------- panels


def registration_panels(
    fixed: sitk.Image,
    moving: sitk.Image,
    transforms: Mapping[str, sitk.Transform],
    path: str | os.PathLike,
    title: str = "",
    slice_axis: str | int = "axial",
    slice_index: int | None = None,
    dpi: int = DPI,
) -> Path:
    """One PNG like the paper's Fig. 1–2: a row per method (in ``transforms`` order) with the fixed, moving and
    warped moving slices, the deformation grid over the warped slice, and the Jacobian determinant (diverging
    colours centred at 1, folds in black).  Intensities use each image's 1st–99th percentile window (the warped
    image shares the moving image's).  Written atomically; returns ``path``."""
    from matplotlib.colors import ListedColormap, TwoSlopeNorm
    from matplotlib.figure import Figure

    if not transforms:
        raise ValueError("registration_panels needs at least one transform")
    fixed, moving = reorient(fixed, DISPLAY_ORIENTATION), reorient(moving, DISPLAY_ORIENTATION)
    axis = _axis(slice_axis)
    fixed_window = intensity_window(to_array(fixed))
    moving_window = intensity_window(to_array(moving))
    fixed_aspect, moving_aspect = _plane_aspect(fixed, axis), _plane_aspect(moving, axis)
    rows = [(name, panel_data(fixed, moving, t, axis, slice_index)) for name, t in transforms.items()]

    first = rows[0][1]["fixed"]
    ratio = float(np.clip(first.shape[0] * fixed_aspect / first.shape[1], 0.4, 2.5))  # slice height / width
    ncols, nrows = len(PANEL_COLUMNS), len(rows)
    header = 0.45 if title else 0.25
    fig = Figure(
        figsize=(ncols * PANEL_INCHES + 0.6, nrows * PANEL_INCHES * ratio + header), dpi=dpi, layout="constrained"
    )
    if title:
        fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm = TwoSlopeNorm(vmin=JACOBIAN_RANGE[0], vcenter=1.0, vmax=JACOBIAN_RANGE[1])
    fold_colour = ListedColormap(["black"])
    spacing = np.delete(_array_spacing(fixed), axis)
    extent = np.array(first.shape) * spacing
    step = _nice_step(float(extent.min()), lines=8)

    for r, (name, data) in enumerate(rows):
        ax = axes[r]
        gray = dict(cmap="gray", interpolation="nearest")
        ax[0].imshow(data["fixed"], vmin=fixed_window[0], vmax=fixed_window[1], aspect=fixed_aspect, **gray)
        ax[1].imshow(data["moving"], vmin=moving_window[0], vmax=moving_window[1], aspect=moving_aspect, **gray)
        ax[2].imshow(data["warped"], vmin=moving_window[0], vmax=moving_window[1], aspect=fixed_aspect, **gray)
        ax[3].imshow(
            data["warped"], vmin=moving_window[0], vmax=moving_window[1], aspect=fixed_aspect, alpha=0.6, **gray
        )
        h, w = data["grid_row"].shape
        for coordinate, colour in ((data["grid_row"], "tab:orange"), (data["grid_col"], "tab:cyan")):
            lo, hi = np.nanmin(coordinate), np.nanmax(coordinate)
            levels = np.arange(math.ceil(lo / step), math.floor(hi / step) + 1) * step
            if levels.size and hi > lo:
                ax[3].contour(coordinate, levels=levels, colors=colour, linewidths=0.6)
        ax[3].set_xlim(-0.5, w - 0.5)
        ax[3].set_ylim(h - 0.5, -0.5)
        image = ax[4].imshow(data["jacobian"], cmap="RdBu_r", norm=norm, aspect=fixed_aspect, interpolation="nearest")
        folds = data["folds"]
        if folds.any():
            ax[4].imshow(
                np.ma.masked_where(~folds, np.ones_like(data["jacobian"])),
                cmap=fold_colour,
                aspect=fixed_aspect,
                interpolation="nearest",
            )
        ax[4].text(
            0.02,
            0.02,
            f"J<0: {100.0 * folds.mean():.2g}%",
            transform=ax[4].transAxes,
            fontsize=7,
            color="black",
            bbox=dict(facecolor="white", alpha=0.7, linewidth=0, pad=1),
        )
        fig.colorbar(image, ax=ax[4], extend="both", fraction=0.05, pad=0.02)
        for c, a in enumerate(ax):
            a.set_xticks([])
            a.set_yticks([])
            if r == 0:
                a.set_title(PANEL_COLUMNS[c], fontsize=9)
        ax[0].set_ylabel(name, fontsize=9)

    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Render ``fig`` to ``path`` through a temporary file beside it (format from the suffix, PNG by default)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return path


# -------------------------------------------------------------------------------------------- summary plot


def _number(value: Any) -> float:
    """A float from a row value (numbers or CSV strings); missing → NaN."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ordered(values: Iterable[str], preferred: Iterable[str] = ()) -> list[str]:
    """Distinct values, ``preferred`` ones first in that order, then the others in order of appearance."""
    seen = list(dict.fromkeys(values))
    head = [v for v in preferred if v in seen]
    return head + [v for v in seen if v not in head]


def summary_plot(summary_rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Bar charts of one table's long-form summary (:mod:`mgicon.tables.layout`, in the tables' units: DICE in %,
    mTRE in mm; axes labelled with :data:`~mgicon.vocabulary.METRIC_LABELS`): one subplot per (dataset,
    column_label, metric); % folds are not plotted.  Bars are methods (one colour each, shared legend) grouped by
    instance optimisation (:data:`~mgicon.vocabulary.IO_SETTINGS`, then others); error bars span the CI.
    Written atomically; returns ``path``."""
    from matplotlib.figure import Figure

    rows = []
    for row in summary_rows:
        if row["metric"] in SKIPPED_METRICS:
            continue
        mean = _number(row["mean"])
        if not math.isfinite(mean):
            continue
        rows.append({**row, "mean": mean, "ci_low": _number(row.get("ci_low")), "ci_high": _number(row.get("ci_high"))})
    if not rows:
        raise ValueError("summary_plot: no dice or landmark rows with a mean to plot")

    panels = list(dict.fromkeys((r["dataset"], r["column_label"], r["metric"]) for r in rows))
    methods = _ordered(r["method"] for r in rows)
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(
        figsize=(3.2 * ncols, 2.8 * nrows + 0.4 + 0.25 * math.ceil(len(methods) / 4)), dpi=DPI, layout="constrained"
    )
    if title:
        fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (dataset, column, metric) in zip(axes, panels):
        mine = [r for r in rows if (r["dataset"], r["column_label"], r["metric"]) == (dataset, column, metric)]
        groups = _ordered((r["io"] for r in mine), IO_SETTINGS)
        ticks = []
        x = 0.0
        for io in groups:
            bars = [r for r in mine if r["io"] == io]
            bars.sort(key=lambda r: methods.index(r["method"]))
            start = x
            for r in bars:
                low, high = r["ci_low"], r["ci_high"]
                err = None
                if math.isfinite(low) and math.isfinite(high):
                    err = [[max(r["mean"] - low, 0.0)], [max(high - r["mean"], 0.0)]]
                ax.bar(
                    x,
                    r["mean"],
                    width=0.8,
                    color=colours[r["method"]],
                    yerr=err,
                    capsize=2,
                    error_kw=dict(linewidth=0.8),
                )
                x += 1.0
            ticks.append(((start + x - 1.0) / 2, io))
            x += 0.6  # gap between io groups
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
        ax.set_title(f"{dataset}\n{column}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=colours[m], label=m) for m in methods],
        loc="outside lower center",
        ncols=min(4, len(methods)),
        fontsize=8,
        frameon=False,
    )
    return _save(fig, path)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - window, 0)
    return (sums[n] - sums[lo]) / (n - lo)


@dataclass(frozen=True)
class CurveLine:
    """One stage of one variant's curve of one objective term: steps on the shared axis, values, trailing mean."""

    variant: str
    term: str
    stage: str
    steps: np.ndarray
    values: np.ndarray
    smoothed: np.ndarray


def curve_lines(
    curves: Mapping[str, Mapping[str, Mapping[str, Iterable[tuple[int, float]]]]],
    offsets: Mapping[str, int] | None = None,
    window: int = 10,
) -> list[CurveLine]:
    """The lines of :func:`training_curves`: for every variant, term and stage (``curves[variant][stage][term] =
    [(step, value), ...]``), the stages of a variant one after the other in the order of
    :data:`~mgicon.vocabulary.TRAINING_STAGES`, starting at ``offsets[variant]`` (default 0)."""
    offsets = offsets or {}
    lines = []
    for variant, stages in curves.items():
        for term in TRAINING_TERMS:
            start = offsets.get(variant, 0)
            for stage in [s for s in TRAINING_STAGES if s in stages]:
                points = np.asarray(list(stages[stage].get(term, ())), dtype=float).reshape(-1, 2)
                if not len(points):
                    continue
                steps = points[:, 0] + start
                lines.append(
                    CurveLine(variant, term, stage, steps, points[:, 1], _moving_average(points[:, 1], window))
                )
                start = int(steps[-1]) + 1
    return lines


def training_curves(
    curves: Mapping[str, Mapping[str, Mapping[str, Iterable[tuple[int, float]]]]],
    path: str | os.PathLike,
    offsets: Mapping[str, int] | None = None,
    window: int = 10,
) -> Path:
    """The objective's terms over training (:func:`curve_lines`): one panel per term of
    :data:`~mgicon.vocabulary.TRAINING_TERMS`, one colour per variant, the trailing mean over ``window`` steps bold
    and the raw values faint, a dotted line where a stage starts.  Written atomically; returns ``path``."""
    from matplotlib.figure import Figure

    lines = curve_lines(curves, offsets, window)
    if not lines:
        raise ValueError("training_curves: no variant logged any training step")
    variants = list(dict.fromkeys(line.variant for line in lines))
    fig = Figure(figsize=(6.4 * len(TRAINING_TERMS), 4.2), dpi=DPI, layout="constrained")
    axes = dict(zip(TRAINING_TERMS, fig.subplots(1, len(TRAINING_TERMS), squeeze=False).ravel()))
    labelled = set()
    for line in lines:
        ax, colour = axes[line.term], f"C{variants.index(line.variant) % 10}"
        ax.plot(line.steps, line.values, color=colour, alpha=0.2, linewidth=0.6)
        label = None if (line.variant, line.term) in labelled else line.variant
        labelled.add((line.variant, line.term))
        ax.plot(line.steps, line.smoothed, color=colour, linewidth=1.4, label=label)
        if line.steps[0] > 0:
            ax.axvline(line.steps[0], color=colour, linestyle=":", linewidth=0.8)
    for term, ax in axes.items():
        ax.set_xlabel("training step", fontsize=9)
        ax.set_ylabel(TRAINING_TERMS[term], fontsize=9)
        ax.set_title(TRAINING_TERMS[term], fontsize=10)
        ax.tick_params(labelsize=8)
    next(iter(axes.values())).legend(fontsize=8, frameon=False)
    return _save(fig, path)
