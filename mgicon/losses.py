"""Similarity measures, the GradICON regularizer and the training/IO objectives (Eq. 3 and Eq. 4 of the paper).

Conventions: images ``(B, 1, D, H, W)`` in [0, 1]; maps in [0,1] coordinates (see :mod:`mgicon.maps`).  Every
similarity is a *loss* (lower is better) and returns a scalar.  An optional ``mask`` ``(B, 1, D, H, W)`` restricts
the average to voxels where ``mask != 0``: each sample is averaged over its own mask, then samples equally
(upstream icon_registration >= 1.1.9).

* ``lncc``          1 − mean LNCC, local statistics from a separable Gaussian (σ = 5 voxels, 4σ+1 taps, zero
                    padding), variances ``relu(·) + 1e-5``.
* ``squared_lncc``  1 − mean LNCC²: blind to the sign of the local correlation (multiGradICON's loss).
* ``mind_ssc``      mean squared difference of MIND-SSC descriptors (Heinrich et al. 2013), radius 2, dilation 2.
* ``gradicon``      ‖∇(Φ_AB ∘ Φ_BA) − I‖²_F estimated by finite differences (δ = 0.001) at a randomly perturbed
                    half-resolution grid (noise std 2/N in [0,1] units).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mgicon.config import schema_default
from mgicon.maps import DisplacementChain, identity_grid, warp

Similarity = Callable[..., torch.Tensor]

LNCC_SIGMA = schema_default("training.lncc_sigma")  # voxels; upstream's 5
LNCC_EPS = 1e-5
GRADICON_DELTA = 1e-3
GRADICON_LAMBDA = 1.5


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` (B, C, ...) over the voxels where ``mask`` (B, 1, ...) is non-zero, per sample first."""
    if mask is None:
        return values.mean()
    if mask.shape[0] != values.shape[0] or mask.shape[2:] != values.shape[2:]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit values {tuple(values.shape)}")
    inside = (mask != 0).expand_as(values)
    dims = tuple(range(1, values.dim()))
    counts = inside.sum(dims).clamp_min(1)
    totals = (values * inside).sum(dims, dtype=torch.float32)
    return (totals / counts).mean().to(values.dtype)


@lru_cache(maxsize=8)
def _gaussian_taps(sigma: float) -> torch.Tensor:
    half = 2 * sigma
    x = torch.linspace(-half, half, steps=int(4 * sigma + 1))
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


@lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``(n, n)`` matrix ``M`` with ``(M x)_i = Σ_j taps[j − i + k//2] x_j``: the zero-padded 1-D Gaussian filter."""
    taps = _gaussian_taps(sigma).to(dtype)
    k = taps.numel()
    index = torch.arange(n)
    offset = index[None, :] - index[:, None] + k // 2
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, taps[offset.clamp(0, k - 1)], torch.zeros((), dtype=dtype)).to(device)


def _filter_axes(x: torch.Tensor, matrix: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """Apply ``matrix(n)`` (``(m, n)``: a 1-D linear filter of a length-``n`` axis) along each spatial axis of
    ``x`` (B, C, D, H, W): one matrix product per axis, an order of magnitude faster than the equivalent grouped
    1-D convolution or pooling, forward and backward, on CPUs at the grids used here.  Each product contracts its
    axis in place (``W``: ``x M_Wᵀ``; ``H`` and ``D``: ``M x`` over the trailing axes), so no axis is moved and no
    copy is made."""
    b, c, d, h, w = x.shape
    m_w, m_h, m_d = matrix(w), matrix(h), matrix(d)
    w2, h2, d2 = m_w.shape[0], m_h.shape[0], m_d.shape[0]
    out = x.reshape(-1, w) @ m_w.T  # (B·C·D·H, W')
    out = m_h @ out.view(b * c * d, h, w2)  # (B·C·D, H', W')
    out = m_d @ out.view(b * c, d, h2 * w2)  # (B·C, D', H'·W')
    return out.view(b, c, d2, h2, w2)


def gaussian_blur(x: torch.Tensor, sigma: float = LNCC_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``x`` (B, C, D, H, W), 4σ+1 taps, zero padding.

    Each axis is one product with the banded filter matrix (:func:`_blur_matrix`): the same sums as a grouped 1-D
    convolution.
    """
    if x.dim() != 5:
        raise ValueError(f"gaussian_blur takes (B, C, D, H, W), got shape {tuple(x.shape)}")
    return _filter_axes(x, lambda n: _blur_matrix(n, float(sigma), x.dtype, str(x.device)))


def local_correlation(a: torch.Tensor, b: torch.Tensor, sigma: float = LNCC_SIGMA) -> torch.Tensor:
    """The LNCC map of two single-channel images: local covariance over the product of local std deviations."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[1] != 1:
        raise ValueError("LNCC takes single-channel images (B, 1, D, H, W)")
    stats = gaussian_blur(torch.cat([a, b, a * a, b * b, a * b], dim=1), sigma)
    mu_a, mu_b, aa, bb, ab = stats.split(1, dim=1)
    var_a = torch.relu(aa - mu_a * mu_a) + LNCC_EPS
    var_b = torch.relu(bb - mu_b * mu_b) + LNCC_EPS
    return (ab - mu_a * mu_b) / torch.sqrt(var_a * var_b)


def lncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, sigma: float = LNCC_SIGMA) -> torch.Tensor:
    """1 − LNCC: uniGradICON's similarity loss (assumes locally positive correlation)."""
    return 1 - masked_mean(local_correlation(a, b, sigma), mask)


def squared_lncc(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, sigma: float = LNCC_SIGMA
) -> torch.Tensor:
    """1 − LNCC²: multiGradICON's similarity loss, invariant to the sign of the local correlation."""
    return 1 - masked_mean(local_correlation(a, b, sigma) ** 2, mask)


# The 6-neighbourhood of a 3x3x3 stencil (offsets in {0,1,2}^3, centre (1,1,1)).
_SIX = ((0, 1, 1), (1, 1, 0), (1, 0, 1), (1, 1, 2), (2, 1, 1), (1, 2, 1))
# MIND-SSC compares the 12 pairs of those at squared distance 2, listed for i > j in row-major (i, j) order ...
_SSC_PAIRS = tuple(
    (_SIX[i], _SIX[j])
    for i in range(6)
    for j in range(6)
    if i > j and sum((p - q) ** 2 for p, q in zip(_SIX[i], _SIX[j])) == 2
)
# ... and reorders the channels as Heinrich's reference C++ implementation does.
_SSC_ORDER = (6, 8, 1, 11, 2, 10, 0, 7, 9, 4, 5, 3)


@lru_cache(maxsize=32)
def _box_matrix(n_in: int, k: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``(n_in − k + 1, n_in)`` matrix of the valid-mode moving average of width ``k``."""
    rows = torch.arange(n_in - k + 1)[:, None]
    cols = torch.arange(n_in)[None, :]
    return (((cols >= rows) & (cols < rows + k)).to(dtype) / k).to(device)


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """``avg_pool3d(x, k, stride=1)`` as three matrix products (the same sums)."""
    return _filter_axes(x, lambda n: _box_matrix(n, k, x.dtype, str(x.device)))


def mind_ssc_descriptor(image: torch.Tensor, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor (B, 12, D, H, W) of a single-channel image (B, 1, D, H, W)."""
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError("MIND-SSC takes single-channel 3-D images (B, 1, D, H, W)")
    size = image.shape[2:]
    padded = F.pad(image, [dilation] * 6, mode="replicate")

    def shifted(offset: tuple[int, int, int]) -> torch.Tensor:
        s = [slice(dilation * o, dilation * o + n) for o, n in zip(offset, size)]
        return padded[:, :, s[0], s[1], s[2]]

    diffs = torch.cat([(shifted(p) - shifted(q)) ** 2 for p, q in _SSC_PAIRS], dim=1)
    ssd = _box_mean(F.pad(diffs, [radius] * 6, mode="replicate"), 2 * radius + 1)
    mind = ssd - ssd.min(dim=1, keepdim=True).values
    variance = mind.mean(dim=1, keepdim=True)
    level = variance.mean().item()
    variance = variance.clamp(level * 0.001, level * 1000)
    mind = torch.exp(-mind / variance)
    return mind[:, list(_SSC_ORDER)]


def mind_ssc(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, radius: int = 2, dilation: int = 2
) -> torch.Tensor:
    """Mean squared difference of the MIND-SSC descriptors of ``a`` and ``b``."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    difference = mind_ssc_descriptor(a, radius, dilation) - mind_ssc_descriptor(b, radius, dilation)
    return masked_mean(difference**2, mask)


SIMILARITIES: dict[str, Similarity] = {"lncc": lncc, "lncc2": squared_lncc, "mind": mind_ssc}


def get_similarity(name: str, lncc_sigma: float | None = None) -> Similarity:
    """The similarity loss named ``lncc``, ``lncc2`` or ``mind`` (the CLI's and the paper's names).

    ``lncc_sigma`` (voxels of the grid the loss sees) replaces the LNCC window's σ = 5 of the 175³ network; MIND-SSC
    has no window and ignores it.
    """
    try:
        sim = SIMILARITIES[name]
    except KeyError:
        raise ValueError(f"unknown similarity {name!r}; choose from {sorted(SIMILARITIES)}") from None
    if lncc_sigma is None or sim is mind_ssc or float(lncc_sigma) == LNCC_SIGMA:
        return sim
    return partial(sim, sigma=float(lncc_sigma))


def gradicon_noise(shape, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Standard normal noise of the full grid ``(1, 3, *shape)``; :func:`gradicon` scales and subsamples it."""
    return torch.randn((1, len(shape), *shape), generator=generator, device=device)


def gradicon(
    phi_AB: DisplacementChain,
    phi_BA: DisplacementChain,
    shape,
    delta: float = GRADICON_DELTA,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """GradICON: finite-difference estimate of ‖∇(Φ_AB ∘ Φ_BA) − I‖²_F on a perturbed half-resolution grid.

    ``shape`` is the network grid.  The points are ``identity + 2·noise/N`` (``N`` its last edge) subsampled by 2
    per axis; for each axis ``e_k`` the loss adds ``mean(((e(x) − e(x + δ e_k)) / δ)²)`` with the inverse-consistency
    error ``e(x) = x − Φ_AB(Φ_BA(x))``.  Pass ``noise`` (from :func:`gradicon_noise`) to fix the points.
    """
    ref = phi_AB.fields[0]
    identity = identity_grid(shape, ref.device, ref.dtype)
    if noise is None:
        noise = gradicon_noise(tuple(shape), generator=generator, device="cpu").to(ref.device)
    points = (identity + 2 * noise.to(ref.dtype) / shape[-1])[:, :, ::2, ::2, ::2]
    ndim = points.shape[1]
    steps = torch.zeros(ndim + 1, ndim, 1, 1, 1, dtype=ref.dtype, device=ref.device)
    steps[1:, :, 0, 0, 0] = delta * torch.eye(ndim, dtype=ref.dtype, device=ref.device)
    # all 1 + ndim point sets side by side along the first spatial axis: one pass through the maps
    n0 = points.shape[2]
    stacked = torch.cat([points + s for s in steps], dim=2)
    error = stacked - phi_AB(phi_BA(stacked))
    base = error[:, :, :n0]
    total = 0
    for k in range(1, ndim + 1):
        total = total + torch.mean(((base - error[:, :, k * n0 : (k + 1) * n0]) / delta) ** 2)
    return total


def shared_one_hot(seg_A: torch.Tensor, seg_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-hot maps ``(B, K, *spatial)`` of the K non-zero labels that both label maps ``(B, 1, *spatial)`` of some
    pair hold, and ``valid`` ``(B, K)``: pair ``b`` holds class ``k`` on both sides.

    As upstream 1.0.6's Dice term, a label that only one side of a pair holds is not a class of that pair.
    """
    if seg_A.shape != seg_B.shape or seg_A.dim() < 3 or seg_A.shape[1] != 1:
        shapes = f"{tuple(seg_A.shape)} and {tuple(seg_B.shape)}"
        raise ValueError(f"label maps must be (B, 1, *spatial) of one shape, got {shapes}")
    a, b = seg_A.round().long(), seg_B.round().long()
    classes = sorted(
        {int(v) for i in range(a.shape[0]) for v in set(a[i].unique().tolist()) & set(b[i].unique().tolist()) if v}
    )
    empty = torch.zeros((a.shape[0], 0, *a.shape[2:]), device=a.device)
    one_A = torch.cat([(a == v).float() for v in classes], dim=1) if classes else empty
    one_B = torch.cat([(b == v).float() for v in classes], dim=1) if classes else empty
    return one_A, one_B, one_A.flatten(2).any(-1) & one_B.flatten(2).any(-1)


def soft_dice_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, epsilon: float = 1e-6
) -> torch.Tensor:
    """``1 − soft Dice`` of class maps ``(B, K, *spatial)``, ``Dice = (2 Σ p·t + ε) / (Σ p + Σ t + ε)``.

    Without ``valid`` the mean over all pairs and classes; with ``valid`` ``(B, K)`` each pair's mean over its valid
    classes, then the mean over the pairs that have one (0 when none has), as upstream 1.0.6's ``dice_loss``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"soft Dice: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    dims = tuple(range(2, pred.dim()))
    dice = (2.0 * (pred * target).sum(dims) + epsilon) / (pred.sum(dims) + target.sum(dims) + epsilon)
    if valid is None:
        return 1.0 - dice.mean()
    valid = valid.to(dice.dtype)
    counts = valid.sum(dim=1)
    has = counts > 0
    if not bool(has.any()):
        return pred.sum() * 0.0
    return (((1.0 - dice) * valid).sum(dim=1)[has] / counts[has]).mean()


def label_dice_loss(
    phi_AB: torch.Tensor, phi_BA: torch.Tensor, one_hot_A: torch.Tensor, one_hot_B: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """The segmentation term of upstream 1.0.6: ``Dice(S_A ∘ Φ_AB, S_B) + Dice(S_B ∘ Φ_BA, S_A)`` as soft Dice
    losses of the trilinearly warped one-hot maps (:func:`shared_one_hot`), maps on their grid ``(B, 3, *spatial)``."""
    return soft_dice_loss(warp(one_hot_A, phi_AB), one_hot_B, valid) + soft_dice_loss(
        warp(one_hot_B, phi_BA), one_hot_A, valid
    )


@dataclass
class ObjectiveTerms:
    """The value of the objective and its parts; maps on the network grid (B, 3, *shape)."""

    total: torch.Tensor
    similarity: torch.Tensor
    gradicon: torch.Tensor
    phi_AB: torch.Tensor
    phi_BA: torch.Tensor


def _register_both(net: nn.Module, image_A: torch.Tensor, image_B: torch.Tensor):
    """``(Φ[A,B], Φ[B,A])``; one batched pass where that is exact (no BatchNorm in training mode)."""
    batch_norm_training = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in net.modules())
    if batch_norm_training:
        return net(image_A, image_B), net(image_B, image_A)
    both = net(torch.cat([image_A, image_B]), torch.cat([image_B, image_A]))
    n = image_A.shape[0]
    return (
        DisplacementChain([f[:n] for f in both.fields]),
        DisplacementChain([f[n:] for f in both.fields]),
    )


def objective(net: nn.Module, image_A: torch.Tensor, image_B: torch.Tensor, *args, **kwargs) -> ObjectiveTerms:
    """The symmetric GradICON objective of ``net`` on a pair (options: see :func:`objective_from_maps`).

    With ``loss_A``/``loss_B`` unset it is Eq. (3): ``sim(A∘Φ_AB, B) + sim(B∘Φ_BA, A) + λ·GradICON``.  With them set
    it is the loss-randomized Eq. (4): the network sees ``(image_A, image_B)`` while the similarity compares the
    loss images ``loss_A∘Φ_AB`` with ``loss_B`` and ``loss_B∘Φ_BA`` with ``loss_A``.
    """
    chain_AB, chain_BA = _register_both(net, image_A, image_B)
    return objective_from_maps(chain_AB, chain_BA, image_A, image_B, *args, **kwargs)


def objective_from_maps(
    chain_AB: DisplacementChain,
    chain_BA: DisplacementChain,
    image_A: torch.Tensor,
    image_B: torch.Tensor,
    similarity: Similarity | str = squared_lncc,
    lmbda: float = GRADICON_LAMBDA,
    loss_A: torch.Tensor | None = None,
    loss_B: torch.Tensor | None = None,
    mask_A: torch.Tensor | None = None,
    mask_B: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    padding: str = "zeros",
) -> ObjectiveTerms:
    """:func:`objective` for maps already predicted (``Φ[A,B]``, ``Φ[B,A]``), e.g. by a distributed wrapper.

    ``mask_B`` restricts the first similarity term, ``mask_A`` the second; ``noise``/``generator`` fix the GradICON
    points.  The warped images are zero outside the image (``padding="zeros"``) as in upstream's objective;
    ``"border"`` is available.
    """
    sim = get_similarity(similarity) if isinstance(similarity, str) else similarity
    if (loss_A is None) != (loss_B is None):
        raise ValueError("give both loss images (Eq. 4) or neither (Eq. 3)")
    target_A = image_A if loss_A is None else loss_A
    target_B = image_B if loss_B is None else loss_B
    shape = tuple(image_A.shape[2:])
    phi_AB = chain_AB.on_grid(shape)
    phi_BA = chain_BA.on_grid(shape)
    zeros = padding == "zeros"
    similarity_value = sim(warp(target_A, phi_AB, zero_boundary=zeros), target_B, mask_B) + sim(
        warp(target_B, phi_BA, zero_boundary=zeros), target_A, mask_A
    )
    regularizer = gradicon(chain_AB, chain_BA, shape, noise=noise, generator=generator)
    return ObjectiveTerms(lmbda * regularizer + similarity_value, similarity_value, regularizer, phi_AB, phi_BA)
