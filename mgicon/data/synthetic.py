"""The embedded synthetic suite: small multimodal 3-D registration datasets with exact ground truth.

It mirrors the structure of multiGradICON's Table 1 at a scale a 2-core CPU generates in seconds, offline and
deterministically from a seed:

* ``syn-brain``   — brain MR (``t1w``, ``t2w``, ``flair``) on the MNI152 anatomy shipped with nilearn, each with
  its own bias field and Rician noise; tissue labels 1 = CSF, 2 = GM, 3 = WM; inter-patient.
* ``syn-abdomen`` — abdomen phantoms in ``ct`` (Hounsfield units) and ``mri`` (arbitrary positive units) whose
  intensities are not monotonically related; organ labels (:data:`ABDOMEN_LABELS`); inter-patient.
* ``syn-lung``    — lung CT, ``inhale`` and ``exhale`` of one subject (intra-patient), lung labels 1 = right,
  2 = left, a lung mask, and vessel-like landmarks with exact correspondence.
* ``syn-dixon``   — DIXON-like ``fat`` and ``water`` images (roughly complementary) of body phantoms; the organ labels
  of ``syn-abdomen``; inter-patient.

Conventions (stated once; every function below follows them):

* Grids have identity direction; ``size``, ``spacing``, ``origin``, ``fov_mm`` and ``center_mm`` are in ITK
  (x, y, z) order, physical points are ITK's (LPS, mm: +x = patient left, +y = posterior, +z = superior).  Arrays
  are ``[z, y, x]`` (:func:`mgicon.io.itk.to_array`).  All images of a dataset share one grid (the template grid);
  subjects differ as a cohort does: by their pose in the scanner, their organs' sizes and their shape.
* ``psi_s`` maps subject ``s``'s physical points to template physical points: ``image_s(x) = template(psi_s(x))``.
  For the inter-patient datasets ``psi_s = exp(v_s) ∘ pose_s``: a random :class:`Pose` (rotation, scale and
  translation about the grid centre), then a large smooth deformation ``exp(v_s)`` of template space (scaling
  and squaring of a stationary velocity ``v_s`` that vanishes on the grid's border, plus a bump per labelled
  organ that grows or shrinks it, :func:`organ_velocity`).  ``psi_s⁻¹`` starts as ``pose_s⁻¹ ∘ exp(−v_s)`` and is
  refined by fixed-point iteration ``w ← −u(y + w)`` until ``psi_s(psi_s⁻¹(y)) = y`` at the grid points to the
  stored precision — wherever ``psi_s⁻¹(y)`` lies in the grid: the pose moves a band along the field of view's
  border outside it, where the stored fields end (the template is extended there by its border values: air, or
  the body's cross-section).
* Both are stored as displacement fields in mm (ITK/LPS components, float32, multiples of 2⁻⁸ mm) on the image
  grid: ``gt_to_template`` holds ``psi_s(x) − x``, ``gt_from_template`` holds ``psi_s⁻¹(y) − y``.  Images, labels
  and landmarks are computed from the stored (rounded) values, so the stored fields are the ground truth exactly.
* The ground-truth registration of (moving ``s``, fixed ``t``) maps fixed points to moving points (ITK resampling
  convention, ``warped(p) = moving(T(p))``): ``T = psi_s⁻¹ ∘ psi_t`` (:func:`ground_truth_transform`).
* ``syn-lung``: every subject is its own template; ``psi`` of ``inhale`` is the identity (zero fields) and
  ``psi`` of ``exhale`` is a breathing motion (mostly cranio-caudal, largest at the diaphragm).  Exhale landmarks
  solve ``psi_exhale(q) = p`` for the inhale landmarks ``p`` through the stored field, as ITK interpolates it.
* Internally, fields are torch tensors ``(1, 3, *shape)`` in [0, 1] coordinates per array axis, as in
  :mod:`mgicon.maps`, and warping is trilinear (border padding).
* Labels are the dominant tissue of the warped partial-volume fractions; masks are the brain, the body or the
  lungs.  Tissue intensities are mixed by fraction, so images show partial volume at boundaries.
* Dice of the exact transform is below 1: a label map sampled on the moving grid cannot reproduce the fixed grid's
  sampling of the same anatomy (boundary voxels are off by up to half a voxel).  With :func:`warp_labels` and the
  default sizes it is about 0.92 (brain; CSF 0.85), 0.96 (abdomen, dixon) and 0.98 (lung), against 0.64, 0.77,
  0.84 and 0.89 for the identity; landmarks are exact (TRE < 0.001 voxel inhale→exhale, < 0.01 exhale→inhale).
* Subject ``i`` draws its randomness from ``SeedSequence([seed, crc32(dataset), i])``, so one dataset generated
  alone equals the same dataset generated within the suite; the last ``n_test`` subjects form the test split.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from mgicon.io.itk import from_array, to_array, warp_image, write_image
from mgicon.maps import identity_grid, interpolate
from mgicon.metrics import jacobian_determinant_physical
from mgicon.testing import make_image

DATASETS = ("syn-brain", "syn-abdomen", "syn-lung", "syn-dixon")
MODALITIES = {
    "syn-brain": ("t1w", "t2w", "flair"),
    "syn-abdomen": ("ct", "mri"),
    "syn-lung": ("ct",),
    "syn-dixon": ("fat", "water"),
}
MANIFEST_KEYS = (
    "dataset",
    "subject",
    "timepoint",
    "modality",
    "image",
    "label",
    "landmarks",
    "mask",
    "split",
    "gt_to_template",
    "gt_from_template",
)
FIELD_QUANTUM = 256.0  # stored displacements are multiples of 1/FIELD_QUANTUM mm
BRAIN_LABELS = {"csf": 1, "gm": 2, "wm": 3}
ABDOMEN_LABELS = {"liver": 1, "spleen": 2, "kidney_r": 3, "kidney_l": 4, "bone": 5}  # bone: the vertebra
LUNG_LABELS = {"lung_r": 1, "lung_l": 2}

_COMMON = {
    "subjects": 12,  # subjects per dataset (syn-lung: subjects, each with inhale and exhale)
    "n_test": 4,  # the last n_test subjects are the test split
    "displacement_mm": 10.0,  # largest velocity of a subject's random deformation (≈ its largest displacement)
    "modes": 2,  # half-waves per axis of the random smooth fields
    "rotation_deg": 10.0,  # a subject's pose: largest rotation about the z axis (half of it about x and y) ...
    "translation_mm": 15.0,  # ... largest translation along each axis ...
    "scale": 0.1,  # ... largest relative change of its size (and half of it per axis)
    "organ_scale": 0.25,  # largest relative (log) change of each labelled organ's size
    "noise": 0.02,  # noise standard deviation relative to the intensity scale (1000 HU / 1000 MR units)
    "bias": 0.2,  # MR bias field: exp(bias · smooth field in [-1, 1])
    "contrast_jitter": 0.03,  # per-image relative jitter of every tissue's intensity
}
# Per dataset also: size (voxels), fov_mm (field of view, voxel edge to edge), center_mm (its centre; the origin
# follows), psf_voxels (syn-brain: blur of the anatomy), breathing_mm (syn-lung: largest cranio-caudal velocity of
# the breathing motion), landmarks (syn-lung: landmarks per scan) and branches (syn-lung: vessel branches to random
# points of the lungs besides those to the landmarks).  A top-level key of a config applies to
# every dataset that has it; a key under a dataset's name to that dataset only.
DEFAULTS: dict[str, Any] = {
    "datasets": list(DATASETS),
    "syn-brain": {
        **_COMMON,
        "size": [56, 64, 56],
        "fov_mm": [168.0, 192.0, 168.0],
        "center_mm": [0.0, 18.0, 18.0],
        "displacement_mm": 8.0,
        "rotation_deg": 4.0,  # heads in a head coil vary less than bodies on a table
        "translation_mm": 5.0,
        "scale": 0.05,
        "psf_voxels": 1.0,
    },
    "syn-abdomen": {
        **_COMMON,
        "size": [64, 56, 48],
        "fov_mm": [352.0, 308.0, 216.0],
        "center_mm": [0.0, 20.0, -250.0],
        "displacement_mm": 30.0,
    },
    "syn-lung": {  # intra-patient: the pose and organ settings do not apply
        **_COMMON,
        "size": [56, 48, 56],
        "fov_mm": [308.0, 264.0, 336.0],
        "center_mm": [0.0, 10.0, -150.0],
        "subjects": 10,
        "n_test": 5,
        "modes": 3,
        "displacement_mm": 3.0,
        "breathing_mm": 35.0,
        "landmarks": 30,
        "branches": 60,
    },
    "syn-dixon": {
        **_COMMON,
        "size": [64, 48, 48],
        "fov_mm": [384.0, 288.0, 240.0],
        "center_mm": [0.0, 10.0, -400.0],
        "displacement_mm": 30.0,
    },
}


# ----------------------------------------------------------------------------------------------- configuration


def dataset_config(name: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full configuration of one dataset: ``DEFAULTS[name]``, then the top-level keys of ``config`` that are
    dataset settings (they apply to every dataset), then ``config[name]``."""
    if name not in DATASETS:
        raise ValueError(f"unknown synthetic dataset {name!r}; known: {', '.join(DATASETS)}")
    config = dict(config or {})
    known = {k for ds in DATASETS for k in DEFAULTS[ds]}
    unknown = [k for k in config if k not in known and k not in DATASETS and k != "datasets"]
    if unknown:
        raise ValueError(f"unknown synthetic setting(s): {', '.join(sorted(unknown))}")
    out = copy.deepcopy(DEFAULTS[name])
    out.update({k: copy.deepcopy(v) for k, v in config.items() if k in out})
    own = config.get(name) or {}
    bad = [k for k in own if k not in out]
    if bad:
        raise ValueError(f"unknown setting(s) for {name}: {', '.join(sorted(bad))}")
    out.update(copy.deepcopy(dict(own)))
    least = 1 if name == "syn-lung" else 2  # inter-patient test pairs need two test subjects
    if not least <= int(out["n_test"]) < int(out["subjects"]):
        raise ValueError(
            f"{name}: need {least} <= n_test < subjects, got n_test={out['n_test']}, subjects={out['subjects']}"
        )
    return out


def _rng(seed: int, name: str, *keys: int) -> np.random.Generator:
    """An independent generator per (seed, dataset, keys); crc32 keeps it stable across Python processes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode()), *keys]))


# ------------------------------------------------------------------------------------------------------ grids


@dataclass(frozen=True)
class Grid:
    """An identity-direction image grid: ``size``, ``spacing``, ``origin`` in ITK (x, y, z) order."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Grid":
        """The grid of ``size`` voxels covering ``fov_mm`` (voxel edge to edge) centred on ``center_mm``."""
        size = np.asarray(cfg["size"], dtype=int)
        spacing = np.asarray(cfg["fov_mm"], dtype=float) / size
        origin = np.asarray(cfg["center_mm"], dtype=float) - (size - 1) * spacing / 2
        return cls(tuple(int(s) for s in size), tuple(float(s) for s in spacing), tuple(float(o) for o in origin))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The array shape ``[z, y, x]``."""
        return self.size[::-1]

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical x, y, z coordinates of the voxel centres as arrays broadcasting over ``[z, y, x]``."""
        x, y, z = (o + s * np.arange(n) for o, s, n in zip(self.origin, self.spacing, self.size))
        return x[None, None, :], y[None, :, None], z[:, None, None]

    def center(self) -> np.ndarray:
        return np.asarray(self.origin) + (np.asarray(self.size) - 1) * np.asarray(self.spacing) / 2

    def half_fov(self) -> np.ndarray:
        return np.asarray(self.size) * np.asarray(self.spacing) / 2

    def _unit_mm(self) -> torch.Tensor:
        """mm per [0,1] unit along each array axis (z, y, x), shaped to scale a ``(1, 3, ...)`` field."""
        mm = [(n - 1) * s for n, s in zip(self.size, self.spacing)][::-1]
        return torch.tensor(mm, dtype=torch.float64).view(1, 3, 1, 1, 1)

    def to_unit(self, field_mm: np.ndarray) -> torch.Tensor:
        """A ``[z, y, x, 3]`` field in mm (x, y, z components) as a ``(1, 3, *shape)`` field in [0,1] units."""
        t = torch.from_numpy(np.ascontiguousarray(field_mm, dtype=np.float64)).permute(3, 0, 1, 2).flip(0)[None]
        return t / self._unit_mm()

    def points_mm(self) -> np.ndarray:
        """Physical points of the voxel centres, ``[z, y, x, 3]`` (x, y, z components)."""
        return np.stack(np.broadcast_arrays(*self.axes_mm()), axis=-1)

    def to_unit_points(self, points_mm: np.ndarray) -> torch.Tensor:
        """Physical points ``[z, y, x, 3]`` as a ``(1, 3, *shape)`` map in [0,1] units of this grid."""
        return self.to_unit(points_mm - np.asarray(self.origin))

    def unit_to_points_mm(self, points: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`to_unit_points` (no rounding)."""
        mm = (points.double() * self._unit_mm())[0].flip(0).permute(1, 2, 3, 0).numpy()
        return mm + np.asarray(self.origin)

    def to_mm(self, field: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`to_unit`, rounded to the stored precision: multiples of 2⁻⁸ mm in float32 (exact;
        the zero low bits let the files compress)."""
        mm = (field.double() * self._unit_mm())[0].flip(0).permute(1, 2, 3, 0).numpy()
        return (np.round(mm * FIELD_QUANTUM) / FIELD_QUANTUM).astype(np.float32)

    def image(self, array: np.ndarray, is_vector: bool = False) -> sitk.Image:
        """An image of this grid from a ``[z, y, x]`` (or ``[z, y, x, 3]`` vector) array."""
        return from_array(
            array, like=make_image(np.zeros(self.shape, np.uint8), self.spacing, self.origin), is_vector=is_vector
        )


# ------------------------------------------------------------------------------------------- smooth fields


def smooth_field(
    rng: np.random.Generator, shape: Sequence[int], channels: int, modes: int = 3, vanish: bool = True
) -> np.ndarray:
    """A smooth random field ``(channels, *shape)`` with largest vector norm 1: a sum of separable low-frequency
    modes (amplitude ∝ 1/|n|²).  ``vanish``: sine modes, zero on the grid's border (so that a deformation keeps
    the field of view); otherwise cosines with random phases (bias fields)."""
    bases = []
    for n_vox in shape:
        t = np.linspace(0.0, 1.0, int(n_vox))[None, :]
        k = np.arange(1, modes + 1)[:, None]
        if vanish:
            bases.append(np.sin(np.pi * k * t))
        else:
            bases.append(np.cos(np.pi * k * t + rng.uniform(0, 2 * np.pi, (modes, 1))))
    n = np.arange(1, modes + 1, dtype=float)
    decay = 1.0 / (n[:, None, None] ** 2 + n[None, :, None] ** 2 + n[None, None, :] ** 2)
    coeff = rng.standard_normal((channels, modes, modes, modes)) * decay
    field = np.einsum("cabd,ai,bj,dk->cijk", coeff, *bases)
    return field / max(float(np.sqrt((field**2).sum(0)).max()), 1e-12)


def _exp(velocity: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Displacement of ``exp(v)`` by scaling and squaring (fields ``(1, 3, *shape)`` in [0,1] units)."""
    identity = identity_grid(velocity.shape[2:], dtype=velocity.dtype)
    u = velocity / 2**steps
    for _ in range(steps):
        u = u + interpolate(u, identity + u)
    return u


def _refine_inverse(u: torch.Tensor, w: torch.Tensor, iterations: int = 60, tol: float = 1e-9) -> torch.Tensor:
    """Refine ``w`` so that ``y + w(y)`` inverts ``x + u(x)`` at the grid points: ``w ← −u(y + w(y))``."""
    identity = identity_grid(u.shape[2:], dtype=u.dtype)
    for _ in range(iterations):
        new = -interpolate(u, identity + w)
        change = float((new - w).abs().max())
        w = new
        if change < tol:
            break
    return w


@dataclass
class Deformation:
    """``psi`` (subject → template) and its inverse on a grid, in mm (``[z, y, x, 3]``, float32)."""

    to_template: np.ndarray
    from_template: np.ndarray

    @classmethod
    def identity(cls, grid: Grid) -> "Deformation":
        zero = np.zeros((*grid.shape, 3), np.float32)
        return cls(zero, zero.copy())

    @classmethod
    def from_velocity(cls, velocity_mm: np.ndarray, grid: Grid) -> "Deformation":
        """``psi = exp(v)`` and its refined inverse, for ``v`` given ``(3, *shape)`` in mm per array axis."""
        v = grid.to_unit(np.moveaxis(velocity_mm[::-1], 0, -1))
        return cls._refined(grid, _exp(v), _exp(-v))

    @classmethod
    def of_subject(cls, velocity_mm: np.ndarray, pose: "Pose", grid: Grid) -> "Deformation":
        """``psi = exp(v) ∘ pose``: a subject point is first posed (an affine map, :class:`Pose`), then moved by the
        smooth deformation ``exp(v)`` of template space; the inverse starts from ``pose⁻¹ ∘ exp(−v)``."""
        v = grid.to_unit(np.moveaxis(velocity_mm[::-1], 0, -1))
        identity = identity_grid(grid.shape, dtype=torch.float64)
        posed = grid.to_unit_points(pose.apply(grid.points_mm()))  # pose(x) in [0,1] units
        forward = posed + interpolate(_exp(v), posed) - identity
        pulled = identity + _refine_inverse(_exp(v), _exp(-v))  # exp(v)⁻¹(y)
        inverse = grid.to_unit_points(pose.inverse(grid.unit_to_points_mm(pulled))) - identity
        return cls._refined(grid, forward, inverse)

    @classmethod
    def _refined(cls, grid: Grid, forward: torch.Tensor, inverse: torch.Tensor) -> "Deformation":
        """The forward displacement rounded to the stored precision, and ``inverse`` refined against exactly those
        stored values (both ``(1, 3, *shape)`` in [0,1] units)."""
        stored = grid.to_mm(forward)
        return cls(stored, grid.to_mm(_refine_inverse(grid.to_unit(stored), inverse)))

    def warp(self, channels: np.ndarray, grid: Grid) -> np.ndarray:
        """Template channels ``(C, *shape)`` sampled at ``psi(x)``: the subject's channels (trilinear)."""
        u = grid.to_unit(self.to_template)
        phi = identity_grid(grid.shape, dtype=torch.float64) + u
        t = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float64))[None]
        return interpolate(t, phi)[0].numpy().astype(np.float32)


def _velocity(rng: np.random.Generator, grid: Grid, cfg: Mapping[str, Any]) -> np.ndarray:
    """A random smooth velocity ``(3, *shape)`` in mm per array axis, largest norm ``displacement_mm``."""
    return smooth_field(rng, grid.shape, 3, int(cfg["modes"])) * float(cfg["displacement_mm"])


@dataclass(frozen=True)
class Pose:
    """A subject's position in the scanner: ``x ↦ c + M (x − c) + t`` on physical points (mm, ITK x, y, z) about
    the grid centre ``c``; ``M`` = rotation · scale."""

    matrix: np.ndarray
    translation: np.ndarray
    centre: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, grid: Grid, cfg: Mapping[str, Any]) -> "Pose":
        """A random pose: rotations about each axis up to ``rotation_deg`` (the axial one full, the others half),
        a translation up to ``translation_mm`` per axis, an overall scale up to ``scale`` (relative) and per-axis
        scales up to half of it."""
        angles = np.radians(float(cfg["rotation_deg"])) * rng.uniform(-1, 1, 3) * np.array([0.5, 0.5, 1.0])
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            c, s = np.cos(angle), np.sin(angle)
            i, j = [k for k in range(3) if k != axis]
            r = np.eye(3)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            rotation = r @ rotation
        amount = float(cfg["scale"])
        scale = (1 + amount * rng.uniform(-1, 1)) * (1 + 0.5 * amount * rng.uniform(-1, 1, 3))
        translation = float(cfg["translation_mm"]) * rng.uniform(-1, 1, 3)
        return cls(rotation @ np.diag(scale), translation, grid.center())

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Posed points of ``(..., 3)`` physical points."""
        return self.centre + (points - self.centre) @ self.matrix.T + self.translation

    def inverse(self, points: np.ndarray) -> np.ndarray:
        return self.centre + (points - self.centre - self.translation) @ np.linalg.inv(self.matrix).T


def organ_velocity(grid: Grid, organs: Mapping[str, tuple], rng: np.random.Generator, amount: float) -> np.ndarray:
    """A velocity ``(3, *shape)`` (mm per array axis) that grows or shrinks each organ about its centre by up to
    ``amount`` (relative, log scale): ``s_k (y − c_k) exp(−|(y − c_k)/(1.5 r_k)|²/2)``, tapered to vanish on the
    grid's border, for every ``organs[name] = (centre, radii)`` (mm)."""
    x, y, z = grid.axes_mm()
    taper = np.ones(grid.shape)
    for n_vox, axis in zip(grid.shape, (0, 1, 2)):
        t = np.sin(np.pi * np.linspace(0.0, 1.0, n_vox))
        taper = taper * t.reshape([-1 if a == axis else 1 for a in range(3)])
    v = np.zeros((3, *grid.shape))
    for centre, radii in organs.values():
        s = amount * rng.uniform(-1.0, 1.0)
        d = [a - c for a, c in zip((x, y, z), centre)]
        bump = np.exp(-0.5 * sum((di / (1.5 * r)) ** 2 for di, r in zip(d, radii) if np.isfinite(r))) * taper
        for k, dk in enumerate(d):  # components x, y, z → array axes 2, 1, 0
            v[2 - k] += s * dk * bump
    return v


# ---------------------------------------------------------------------------------------------- anatomy


def _ramp(signed_mm: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction of a region from a signed distance (positive inside): a linear ramp one voxel wide."""
    return np.clip(0.5 + signed_mm / width, 0.0, 1.0)


def _ellipsoid(
    axes: tuple[np.ndarray, ...], center: Sequence[float], radii: Sequence[float], width: float
) -> np.ndarray:
    """Fraction inside an ellipsoid (an infinite radius makes a cylinder), from the first-order signed distance
    ``(1 − ρ)/|∇ρ|`` of its normalized radius ``ρ``."""
    d = [(a - c) / r for a, c, r in zip(axes, center, radii)]
    rho = np.sqrt(sum(di**2 for di in d))
    grad = np.sqrt(sum((di / r) ** 2 for di, r in zip(d, radii))) / np.maximum(rho, 1e-9)
    return _ramp((1.0 - rho) / np.maximum(grad, 1e-9), width)


def _dome(axes: tuple[np.ndarray, ...], top: float, height: float, center: Sequence[float], radius: float):
    """Height (z, mm) of a paraboloid dome over the x-y plane: ``top`` above ``center``, ``height`` lower at
    ``radius`` (flattening beyond twice that)."""
    x, y, _ = axes
    r2 = ((x - center[0]) ** 2 + (y - center[1]) ** 2) / radius**2
    return top - height * np.clip(r2, 0, 4)


def _paint(fractions: np.ndarray, channel: int, inside: np.ndarray) -> None:
    """Lay tissue ``channel`` over the current fractions where ``inside`` (a fraction) says, in place."""
    inside = np.broadcast_to(inside, fractions.shape[1:])
    fractions *= 1.0 - inside
    fractions[channel] += inside


def _jitter(rng: np.random.Generator, value: float, amount: float) -> float:
    return float(value * (1.0 + amount * rng.uniform(-1.0, 1.0)))


def _placer(grid: Grid, rng: np.random.Generator, amount: float):
    """``place(offset, radii, amount=amount) -> (centre, radii)`` in mm, both given in half fields of view from the
    grid's centre and jittered by ``amount`` (relative) each."""
    c, h = grid.center(), grid.half_fov()

    def place(offset: Sequence[float], radii: Sequence[float], jitter: float = amount):
        centre = c + np.array([_jitter(rng, o, jitter) * hi for o, hi in zip(offset, h)])
        return centre, tuple(_jitter(rng, r, jitter) * hi for r, hi in zip(radii, h))

    return place


def _air(tissues: Sequence[str], grid: Grid) -> np.ndarray:
    """Fractions that are all air (channel 0)."""
    f = np.zeros((len(tissues), *grid.shape))
    f[0] = 1.0
    return f


ABDOMEN_TISSUES = ("air", "fat", "muscle", "bone", "vessel", "liver", "spleen", "kidney_r", "kidney_l")


def abdomen_anatomy(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, tuple]]:
    """Tissue fractions ``(len(ABDOMEN_TISSUES), *shape)`` of an abdomen phantom — a body outline with
    subcutaneous and visceral fat, muscle, a vertebra, the aorta, and liver, spleen and kidneys each in a layer of
    fat (so that the fat image of DIXON outlines them) — and the labelled organs' ``(centre, radii)`` in mm."""
    axes, w = grid.axes_mm(), float(np.mean(grid.spacing))
    place = _placer(grid, rng, 0.08)
    t = {name: i for i, name in enumerate(ABDOMEN_TISSUES)}
    f = _air(ABDOMEN_TISSUES, grid)
    centre, body = place((0, 0, 0), (0.8, 0.72, np.inf), 0.04)
    _paint(f, t["fat"], _ellipsoid(axes, centre, body, w))
    fat_mm = _jitter(rng, 22.0, 0.2)
    _paint(f, t["muscle"], _ellipsoid(axes, centre, (body[0] - fat_mm, body[1] - fat_mm, np.inf), w))
    _paint(f, t["fat"], _ellipsoid(axes, *place((0, -0.15, -0.1), (0.45, 0.28, 0.6)), w))  # visceral fat
    organs = {
        "liver": place((-0.3, -0.05, 0.3), (0.34, 0.4, 0.55)),
        "spleen": place((0.45, 0.15, 0.35), (0.15, 0.22, 0.32)),
        # LPS: the patient's right is −x
        **{n: place((side * 0.28, 0.3, -0.1), (0.12, 0.15, 0.4)) for n, side in (("kidney_r", -1), ("kidney_l", 1))},
    }
    for centre, radii in organs.values():
        _paint(f, t["fat"], _ellipsoid(axes, centre, [r + 2.5 * w for r in radii], w))
    _paint(f, t["bone"], _ellipsoid(axes, *place((0, 0.45, 0), (0.12, 0.14, np.inf)), w))
    _paint(f, t["vessel"], _ellipsoid(axes, *place((0.05, 0.2, 0), (0.06, 0.06, np.inf)), w))
    for name, (centre, radii) in organs.items():
        _paint(f, t[name], _ellipsoid(axes, centre, radii, w))
    return f.astype(np.float32), organs


LUNG_TISSUES = ("air", "fat", "soft", "bone", "liver", "heart", "lung_r", "lung_l")


def lung_anatomy(
    grid: Grid, rng: np.random.Generator, n_landmarks: int, n_branches: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chest phantom at inhale: tissue fractions ``(len(LUNG_TISSUES), *shape)``, a vessel map ``[z, y, x]`` in
    [0, 1] (branches to every landmark, a bright blob at each, and ``n_branches`` more branches to random points of
    the lungs: the texture that lets a registration restricted to the lungs find its way) and the landmarks
    ``(K, 3)`` in mm inside the lungs.
    The lungs are ellipsoids cut below by the diaphragm's domes; the liver lies under the diaphragm."""
    axes, w = grid.axes_mm(), float(np.mean(grid.spacing))
    z = axes[2]
    c, h = grid.center(), grid.half_fov()
    place = _placer(grid, rng, 0.06)
    t = {name: i for i, name in enumerate(LUNG_TISSUES)}
    f = _air(LUNG_TISSUES, grid)
    centre, body = place((0, 0, 0), (0.88, 0.8, np.inf), 0.03)
    _paint(f, t["fat"], _ellipsoid(axes, centre, body, w))
    wall = _jitter(rng, 14.0, 0.2)
    _paint(f, t["soft"], _ellipsoid(axes, centre, (body[0] - wall, body[1] - wall, np.inf), w))
    _paint(f, t["bone"], _ellipsoid(axes, *place((0, 0.62, 0), (0.1, 0.12, np.inf)), w))
    top, height = c[2] - _jitter(rng, 0.35, 0.06) * h[2], _jitter(rng, 0.25, 0.06) * h[2]
    liver = _ramp(_dome(axes, top, height, c, 0.6 * h[0]) - z, w) * _ellipsoid(axes, centre, body, w)
    _paint(f, t["liver"], liver)
    lungs = {name: place((side * 0.4, 0.05, 0.1), (0.34, 0.55, 0.95)) for name, side in (("lung_r", -1), ("lung_l", 1))}
    for name, (centre, radii) in lungs.items():
        floor = _dome(axes, top, height, centre, 0.9 * radii[0])
        _paint(f, t[name], _ellipsoid(axes, centre, radii, w) * _ramp(z - floor, w))
    _paint(f, t["heart"], _ellipsoid(axes, *place((0.08, -0.2, -0.12), (0.26, 0.32, 0.3)), w))
    landmarks = _lung_landmarks(grid, f[t["lung_r"]] + f[t["lung_l"]], rng, n_landmarks)
    vessels = _vessels(grid, lungs, landmarks)
    if n_branches:
        ends = _lung_landmarks(grid, f[t["lung_r"]] + f[t["lung_l"]], rng, n_branches, apart=1.5)
        vessels = np.maximum(vessels, _vessels(grid, lungs, ends, blobs=False))
    return f.astype(np.float32), vessels.astype(np.float32), landmarks


def _lung_landmarks(grid: Grid, lung: np.ndarray, rng: np.random.Generator, n: int, apart: float = 3) -> np.ndarray:
    """``n`` points (mm) well inside the lungs (2 voxels from their border) and at least ``apart`` voxels apart."""
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(lung > 0.5, iterations=2)
    candidates = np.argwhere(inner)[:, ::-1].astype(float)  # x, y, z indices
    if len(candidates) == 0:
        raise ValueError("lungs too small for landmarks: enlarge the grid")
    order = rng.permutation(len(candidates))
    spacing, origin = np.asarray(grid.spacing), np.asarray(grid.origin)
    chosen: list[np.ndarray] = []
    for i in order:
        index = candidates[i] + rng.uniform(-0.3, 0.3, 3)
        if all(np.abs(index - q).max() >= apart for q in chosen):
            chosen.append(index)
            if len(chosen) == n:
                break
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} of {n} landmarks fit in the lungs: enlarge the grid or ask for fewer")
    return origin + np.asarray(chosen) * spacing


def _vessels(grid: Grid, lungs: Mapping[str, tuple], landmarks: np.ndarray, blobs: bool = True) -> np.ndarray:
    """A vessel map in [0, 1]: a Gaussian blob (σ ≈ 0.8 voxel) at every landmark (unless not ``blobs``) and tubes
    from each lung's hilum to its landmarks, thinner towards the periphery."""
    x, y, z = grid.axes_mm()
    sigma = 0.8 * max(grid.spacing)
    out = np.zeros(grid.shape)
    centres = np.array([lungs[n][0] for n in ("lung_r", "lung_l")])
    for p in landmarks:
        if blobs:
            out = np.maximum(out, np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * sigma**2)))
        hilum = centres[np.argmin(np.linalg.norm(centres[:, [0, 2]] - p[[0, 2]], axis=1))].copy()
        hilum[0] += 0.6 * (grid.center()[0] - hilum[0])  # medial side of the lung
        seg = p - hilum
        length2 = float(seg @ seg)
        s = np.clip(((x - hilum[0]) * seg[0] + (y - hilum[1]) * seg[1] + (z - hilum[2]) * seg[2]) / length2, 0, 1)
        d2 = (x - hilum[0] - s * seg[0]) ** 2 + (y - hilum[1] - s * seg[1]) ** 2 + (z - hilum[2] - s * seg[2]) ** 2
        radius = sigma * (0.9 - 0.5 * s)
        out = np.maximum(out, 0.6 * np.exp(-d2 / (2 * radius**2)))
    return out


@lru_cache(maxsize=1)
def _mni() -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 2 mm anatomy shipped with nilearn (skull-stripped): fractions of ``BRAIN_TISSUES`` as a
    ``(4, i, j, k)`` array, and the voxel → RAS affine."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nilearn import datasets

        images = [
            load(resolution=2)
            for load in (
                datasets.load_mni152_brain_mask,
                datasets.load_mni152_gm_template,
                datasets.load_mni152_wm_template,
            )
        ]
    affine = np.asarray(images[0].affine, dtype=float)
    if any(not np.allclose(im.affine, affine) for im in images):
        raise RuntimeError("nilearn's MNI152 mask and tissue maps do not share a grid")
    mask, gm, wm = (im.get_fdata() for im in images)
    mask = (mask > 0.5).astype(float)
    gm, wm = np.clip(gm, 0, 1) * mask, np.clip(wm, 0, 1) * mask
    total = gm + wm
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-9), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(mask - gm - wm, 0, 1)
    return np.stack([1 - mask, csf, gm, wm]).astype(np.float32), affine


BRAIN_TISSUES = ("outside", "csf", "gm", "wm")


def brain_anatomy(grid: Grid, psf_voxels: float = 0.0) -> np.ndarray:
    """The MNI152 anatomy on ``grid`` (trilinear): fractions of ``BRAIN_TISSUES``, ``(4, *shape)``.  LPS grid
    points are converted to RAS for nilearn's affine.  The fractions are blurred by a Gaussian of ``psf_voxels``
    (the coarse grid's partial volume), which also keeps the labels from fragmenting into single voxels."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    channels, affine = _mni()
    x, y, z = np.broadcast_arrays(*grid.axes_mm())
    ras = np.stack([-x.ravel(), -y.ravel(), z.ravel(), np.ones(x.size)])
    index = (np.linalg.inv(affine) @ ras)[:3]
    out = [
        map_coordinates(ch, index, order=1, mode="constant", cval=1.0 if i == 0 else 0.0).reshape(grid.shape)
        for i, ch in enumerate(channels)
    ]
    if psf_voxels > 0:
        out = [gaussian_filter(ch, psf_voxels, mode="nearest") for ch in out]
    return np.stack(out).astype(np.float32)


# -------------------------------------------------------------------------------------------- rendering

# Tissue intensities: CT in HU; MR in arbitrary units (scale 1000).  The orderings differ between modalities on
# purpose (see the tests): T1w WM > GM > CSF, T2w CSF > GM > WM, FLAIR GM > WM > CSF; abdomen CT kidney > spleen >
# liver, fat darkest, MR liver > spleen > kidney > bone, fat brightest; DIXON fat vs water roughly inverted.
BRAIN_CONTRAST = {
    "t1w": {"outside": 0.0, "csf": 0.25, "gm": 0.55, "wm": 0.85},
    "t2w": {"outside": 0.0, "csf": 1.0, "gm": 0.6, "wm": 0.35},
    "flair": {"outside": 0.0, "csf": 0.1, "gm": 0.9, "wm": 0.5},
}
ABDOMEN_CONTRAST = {  # CT with contrast agent (portal venous phase); MR T1-weighted (fat bright, bone dark)
    "ct": {
        "air": -1000.0,
        "fat": -100.0,
        "muscle": 50.0,
        "bone": 700.0,
        "vessel": 170.0,
        "liver": 105.0,
        "spleen": 120.0,
        "kidney_r": 180.0,
        "kidney_l": 180.0,
    },
    "mri": {
        "air": 0.0,
        "fat": 0.9,
        "muscle": 0.35,
        "bone": 0.12,
        "vessel": 0.05,
        "liver": 0.6,
        "spleen": 0.45,
        "kidney_r": 0.22,
        "kidney_l": 0.22,
    },
}
# (proton density, fat fraction) per tissue; fat image = PD·ff, water image = PD·(1 − ff): water shows the organs
# (each with its own signal, apart from muscle's), fat shows subcutaneous, visceral and perirenal fat
DIXON_TISSUE = {
    "air": (0.0, 0.0),
    "fat": (0.95, 0.92),
    "muscle": (0.7, 0.03),
    "bone": (0.55, 0.6),
    "vessel": (0.9, 0.0),
    "liver": (0.52, 0.1),
    "spleen": (0.86, 0.02),
    "kidney_r": (0.98, 0.02),
    "kidney_l": (0.98, 0.02),
}
LUNG_CT = {
    "air": -1000.0,
    "fat": -100.0,
    "soft": 45.0,
    "bone": 700.0,
    "liver": 60.0,
    "heart": 40.0,
    "lung_r": -860.0,
    "lung_l": -860.0,
}
VESSEL_HU = 40.0


def _mix(
    fractions: np.ndarray, tissues: Sequence[str], values: Mapping[str, float], rng: np.random.Generator, jitter: float
) -> np.ndarray:
    """``Σ fraction · value`` over tissues, every non-air value jittered by ``jitter`` (relative)."""
    out = np.zeros(fractions.shape[1:], np.float64)
    for k, name in enumerate(tissues):
        value = values[name] if name in ("air", "outside") else _jitter(rng, values[name], jitter)
        out += fractions[k] * value
    return out


def _bias(rng: np.random.Generator, grid: Grid, cfg: Mapping[str, Any]) -> np.ndarray:
    """A smooth multiplicative MR bias field ``exp(bias · b)``, ``|b| ≤ 1``."""
    return np.exp(float(cfg["bias"]) * smooth_field(rng, grid.shape, 1, 2, vanish=False)[0])


def _mr(signal: np.ndarray, rng: np.random.Generator, cfg: Mapping[str, Any], bias: np.ndarray) -> np.ndarray:
    """MR magnitude: signal (scale 1) × bias × 1000, with Rician noise (σ = noise · 1000), float32."""
    sigma = float(cfg["noise"]) * 1000.0
    s = signal * bias * 1000.0
    return np.hypot(s + sigma * rng.standard_normal(s.shape), sigma * rng.standard_normal(s.shape)).astype(np.float32)


def _ct(hu: np.ndarray, rng: np.random.Generator, cfg: Mapping[str, Any]) -> np.ndarray:
    """CT in HU with Gaussian noise (σ = noise · 1000 HU), float32."""
    return (hu + float(cfg["noise"]) * 1000.0 * rng.standard_normal(hu.shape)).astype(np.float32)


def _labels(fractions: np.ndarray, tissues: Sequence[str], table: Mapping[str, int]) -> np.ndarray:
    """The label of the dominant tissue per voxel (0 for tissues without a label), uint8."""
    lut = np.array([table.get(name, 0) for name in tissues], np.uint8)
    return lut[np.argmax(fractions, axis=0)]


# ------------------------------------------------------------------------------------------------ writing


class _Writer:
    """Writes one dataset's files under ``out/name`` and collects its manifest rows."""

    def __init__(self, name: str, out: Path, grid: Grid, cfg: Mapping[str, Any]):
        self.name, self.out, self.grid, self.cfg = name, Path(out), grid, cfg
        self.rows: list[dict[str, str]] = []

    def _path(self, stem: str, kind: str, ext: str = ".nii.gz") -> str:
        return f"{self.name}/{stem}_{kind}{ext}"

    def image(self, array: np.ndarray, stem: str, kind: str) -> str:
        rel = self._path(stem, kind)
        write_image(self.grid.image(array), self.out / rel)
        return rel

    def deformation(self, deformation: Deformation, stem: str) -> tuple[str, str]:
        paths = []
        for kind, field in (("to_template", deformation.to_template), ("from_template", deformation.from_template)):
            rel = self._path(stem, kind)
            write_image(self.grid.image(field, is_vector=True), self.out / rel)
            paths.append(rel)
        return paths[0], paths[1]

    def landmarks(self, points: np.ndarray, stem: str) -> str:
        rel = self._path(stem, "landmarks", ".csv")
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["x,y,z"] + [",".join(f"{v:.6f}" for v in p) for p in points]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return rel

    def scan(
        self,
        subject: int,
        timepoint: str,
        images: Mapping[str, np.ndarray],
        label: np.ndarray | None,
        mask: np.ndarray | None,
        deformation: Deformation,
        landmarks: np.ndarray | None = None,
    ) -> None:
        """Write one scan (all modalities of a subject at a timepoint) and add its rows."""
        sub = f"sub-{subject:02d}"
        stem = f"{sub}_{timepoint}" if timepoint else sub
        split = "test" if subject >= int(self.cfg["subjects"]) - int(self.cfg["n_test"]) else "train"
        common = {
            "label": self.image(label, stem, "label") if label is not None else "",
            "landmarks": self.landmarks(landmarks, stem) if landmarks is not None else "",
            "mask": self.image(mask, stem, "mask") if mask is not None else "",
        }
        to_t, from_t = self.deformation(deformation, stem)
        for modality, array in images.items():
            self.rows.append(
                {
                    "dataset": self.name,
                    "subject": sub,
                    "timepoint": timepoint,
                    "modality": modality,
                    "image": self.image(array, stem, modality),
                    **common,
                    "split": split,
                    "gt_to_template": to_t,
                    "gt_from_template": from_t,
                }
            )


# ------------------------------------------------------------------------------------------------ datasets


def _subject_deformation(
    rng: np.random.Generator, grid: Grid, cfg: Mapping[str, Any], organs: Mapping[str, tuple] | None = None
) -> Deformation:
    """A subject of an inter-patient dataset: a random pose, then a large smooth deformation of template space
    that also grows or shrinks each of ``organs`` (:func:`organ_velocity`)."""
    velocity = _velocity(rng, grid, cfg)
    if organs:
        velocity = velocity + organ_velocity(grid, organs, rng, float(cfg["organ_scale"]))
    return Deformation.of_subject(velocity, Pose.draw(rng, grid, cfg), grid)


def _brain(w: _Writer, seed: int) -> None:
    grid, cfg = w.grid, w.cfg
    template = brain_anatomy(grid, float(cfg["psf_voxels"]))
    for i in range(int(cfg["subjects"])):
        rng = _rng(seed, w.name, i)
        deformation = _subject_deformation(rng, grid, cfg)
        fractions = deformation.warp(template, grid)
        label = _labels(fractions, BRAIN_TISSUES, BRAIN_LABELS)
        images = {}
        for m in MODALITIES[w.name]:
            signal = _mix(fractions, BRAIN_TISSUES, BRAIN_CONTRAST[m], rng, float(cfg["contrast_jitter"]))
            images[m] = _mr(signal, rng, cfg, _bias(rng, grid, cfg))
        w.scan(i, "", images, label, (label > 0).astype(np.uint8), deformation)


def _body(w: _Writer, seed: int) -> None:
    """syn-abdomen and syn-dixon: one phantom template per dataset, warped per subject."""
    grid, cfg = w.grid, w.cfg
    template, organs = abdomen_anatomy(grid, _rng(seed, w.name, 10**6))
    for i in range(int(cfg["subjects"])):
        rng = _rng(seed, w.name, i)
        deformation = _subject_deformation(rng, grid, cfg, organs)
        fractions = deformation.warp(template, grid)
        label = _labels(fractions, ABDOMEN_TISSUES, ABDOMEN_LABELS)
        mask = (np.argmax(fractions, axis=0) != 0).astype(np.uint8)  # the body
        jitter = float(cfg["contrast_jitter"])
        if w.name == "syn-abdomen":
            images = {
                "ct": _ct(_mix(fractions, ABDOMEN_TISSUES, ABDOMEN_CONTRAST["ct"], rng, jitter), rng, cfg),
                "mri": _mr(
                    _mix(fractions, ABDOMEN_TISSUES, ABDOMEN_CONTRAST["mri"], rng, jitter),
                    rng,
                    cfg,
                    _bias(rng, grid, cfg),
                ),
            }
        else:
            bias = _bias(rng, grid, cfg)  # one acquisition: fat and water share the coil sensitivity
            fat = {k: pd * ff for k, (pd, ff) in DIXON_TISSUE.items()}
            water = {k: pd * (1 - ff) for k, (pd, ff) in DIXON_TISSUE.items()}
            images = {
                "fat": _mr(_mix(fractions, ABDOMEN_TISSUES, fat, rng, jitter), rng, cfg, bias),
                "water": _mr(_mix(fractions, ABDOMEN_TISSUES, water, rng, jitter), rng, cfg, bias),
            }
        w.scan(i, "", images, label, mask, deformation)


def breathing_velocity(grid: Grid, rng: np.random.Generator, cfg: Mapping[str, Any]) -> np.ndarray:
    """Velocity ``(3, *shape)`` (mm per array axis) of ``psi_exhale`` (exhale → inhale points): inhale points lie
    caudal (−z) and anterior (−y) of exhale points, most near the diaphragm (30 % up the field of view) and the
    lungs' centre, nothing at the field of view's border; plus a small random smooth part."""
    nz, ny, nx = grid.shape
    tz = np.linspace(0, 1, nz)[:, None, None]
    ty = np.linspace(0, 1, ny)[None, :, None]
    tx = np.linspace(0, 1, nx)[None, None, :]
    peak = _jitter(rng, 0.3, 0.15)
    profile = np.where(tz < peak, np.sin(0.5 * np.pi * tz / peak), np.cos(0.5 * np.pi * (tz - peak) / (1 - peak)))
    across = np.sin(np.pi * tx) * np.sin(np.pi * ty)
    amplitude = _jitter(rng, float(cfg["breathing_mm"]), 0.2)
    v = np.zeros((3, nz, ny, nx))
    v[0] = -amplitude * profile * across
    v[1] = -0.3 * amplitude * np.sin(np.pi * tz) * across
    return v + _velocity(rng, grid, cfg)


def solve_preimage(
    transform: sitk.Transform, targets: np.ndarray, tol: float = 1e-7, iterations: int = 200
) -> np.ndarray:
    """Points ``q`` with ``transform(q) = p`` for each target ``p`` (mm), by the fixed-point iteration
    ``q ← p − u(q)`` on the transform's displacement ``u`` (converges where ``|∇u| < 1``)."""
    out = []
    for p in np.asarray(targets, dtype=float):
        q = p.copy()
        for _ in range(iterations):
            new = p - (np.asarray(transform.TransformPoint(tuple(q))) - q)
            done = np.abs(new - q).max() < tol
            q = new
            if done:
                break
        out.append(q)
    return np.asarray(out)


def _lung(w: _Writer, seed: int) -> None:
    grid, cfg = w.grid, w.cfg
    for i in range(int(cfg["subjects"])):
        rng = _rng(seed, w.name, i)
        fractions, vessels, inhale_points = lung_anatomy(grid, rng, int(cfg["landmarks"]), int(cfg["branches"]))
        exhale = Deformation.from_velocity(breathing_velocity(grid, rng, cfg), grid)
        field = sitk.Cast(grid.image(exhale.to_template, is_vector=True), sitk.sitkVectorFloat64)
        exhale_points = solve_preimage(sitk.DisplacementFieldTransform(field), inhale_points)
        jitter = float(cfg["contrast_jitter"])
        lung_values = {k: _jitter(rng, v, jitter) if k != "air" else v for k, v in LUNG_CT.items()}
        stacked = np.concatenate([fractions, vessels[None]])
        for timepoint, deformation, points in (
            ("inhale", Deformation.identity(grid), inhale_points),
            ("exhale", exhale, exhale_points),
        ):
            channels = stacked if timepoint == "inhale" else deformation.warp(stacked, grid)
            f, v = channels[:-1], channels[-1]
            lung = f[LUNG_TISSUES.index("lung_r")] + f[LUNG_TISSUES.index("lung_l")]
            hu = _mix(f, LUNG_TISSUES, lung_values, rng, 0.0)
            hu += lung * v * (VESSEL_HU - lung_values["lung_r"])
            if timepoint == "exhale":  # mass is conserved: density scales with the volume change
                det = jacobian_determinant_physical(deformation.to_template[..., ::-1], grid.spacing[::-1])
                hu += lung * (hu + 1000.0) * (np.clip(det, 0.5, 2.0) - 1.0)
            label = _labels(f, LUNG_TISSUES, LUNG_LABELS)
            w.scan(i, timepoint, {"ct": _ct(hu, rng, cfg)}, label, (label > 0).astype(np.uint8), deformation, points)


_GENERATORS: dict[str, Callable[[_Writer, int], None]] = {
    "syn-brain": _brain,
    "syn-abdomen": _body,
    "syn-lung": _lung,
    "syn-dixon": _body,
}


# ------------------------------------------------------------------------------------------------ public API


def generate_dataset(
    name: str, out_dir: str | Path, config: Mapping[str, Any] | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """Write one synthetic dataset under ``out_dir/name/`` and return its manifest rows (one per image; paths
    relative to ``out_dir``; keys :data:`MANIFEST_KEYS`)."""
    cfg = dataset_config(name, config)
    writer = _Writer(name, Path(out_dir), Grid.from_config(cfg), cfg)
    with torch.no_grad():
        _GENERATORS[name](writer, int(seed))
    return writer.rows


def generate_suite(out_dir: str | Path, config: Mapping[str, Any] | None = None, seed: int = 0) -> list[dict[str, str]]:
    """Write every dataset named in ``config["datasets"]`` (default: all four) and return all manifest rows."""
    names = (config or {}).get("datasets", DEFAULTS["datasets"])
    rows: list[dict[str, str]] = []
    for name in names:
        rows += generate_dataset(name, out_dir, config, seed)
    return rows


def _field_transform(path: Path) -> sitk.DisplacementFieldTransform:
    field = sitk.ReadImage(str(path))
    if field.GetNumberOfComponentsPerPixel() != 3:
        raise ValueError(f"{path}: not a 3-D displacement field")
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def ground_truth_transform(
    moving_row: Mapping[str, str], fixed_row: Mapping[str, str], root: str | Path = "."
) -> sitk.Transform:
    """The exact registration of ``moving_row``'s image to ``fixed_row``'s: fixed physical points → moving
    physical points, ``T = psi_moving⁻¹ ∘ psi_fixed`` (paths in the rows are relative to ``root``)."""
    if moving_row["dataset"] != fixed_row["dataset"]:
        raise ValueError(f"no ground truth between datasets {moving_row['dataset']} and {fixed_row['dataset']}")
    if moving_row["dataset"] == "syn-lung" and moving_row["subject"] != fixed_row["subject"]:
        raise ValueError("syn-lung has ground truth only between the scans of one subject")
    composite = sitk.CompositeTransform(3)
    # SimpleITK applies the last added transform first
    composite.AddTransform(_field_transform(Path(root) / moving_row["gt_from_template"]))
    composite.AddTransform(_field_transform(Path(root) / fixed_row["gt_to_template"]))
    return composite


def warp_labels(labels: sitk.Image, transform: sitk.Transform, reference: sitk.Image) -> sitk.Image:
    """A label map resampled onto ``reference`` through ``transform`` (fixed → moving points) by linear
    interpolation of its one-hot channels and argmax — smoother than nearest neighbour, which adds staircase
    error; outside the moving image the label is 0."""
    array = to_array(labels)
    values = np.unique(array)
    best = np.full(to_array(reference).shape, -1.0, np.float32)
    out = np.zeros(best.shape, array.dtype)
    for value in values:  # ascending: ties, and points outside the moving image, go to the smallest label (0)
        channel = from_array((array == value).astype(np.float32), like=labels)
        warped = to_array(warp_image(channel, transform, reference, nearest=False))
        better = warped > best
        out[better], best[better] = value, warped[better]
    return from_array(out, like=reference)
