"""Training augmentation (upstream's ``augment``): per sample a random axis permutation with random flips, shared by
both images of the pair (``permute=False`` leaves the axes as they are), then a small independent random affine
per side (the identity plus ``affine_std``·N(0,1) on all 12 entries, translation in [−1,1] grid units), applied
with trilinear sampling and border padding.

The network input and the loss image of one side get the same transform, so they stay aligned.  Randomness comes
from the ``torch.Generator`` passed in, so a step is repeatable.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

_PERMUTATIONS = list(itertools.permutations(range(3)))


def random_affines(
    batch: int, generator: torch.Generator, affine_std: float = 0.05, permute: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(theta_A, theta_B)``, each ``(batch, 3, 4)`` for ``F.affine_grid``."""
    thetas = []
    base = torch.zeros(batch, 3, 4)
    base[:, :, :3] = torch.eye(3)
    for i in range(batch if permute else 0):
        base[i, :, :3] = 0
        perm = _PERMUTATIONS[int(torch.randint(len(_PERMUTATIONS), (1,), generator=generator))]
        signs = torch.randint(0, 2, (3,), generator=generator) * 2 - 1
        for row, col in enumerate(perm):
            base[i, row, col] = float(signs[row])
    for _ in range(2):
        thetas.append(base + affine_std * torch.randn(batch, 3, 4, generator=generator))
    return thetas[0], thetas[1]


def apply_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` (B, C, D, H, W) through the affines ``theta`` (B, 3, 4)."""
    grid = F.affine_grid(theta.to(images.dtype).to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_pair(
    side_A: torch.Tensor,
    side_B: torch.Tensor,
    generator: torch.Generator,
    affine_std: float = 0.05,
    permute: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment both sides; each side's channels (network input, loss image, mask) share its transform."""
    theta_A, theta_B = random_affines(side_A.shape[0], generator, affine_std, permute)
    return apply_affine(side_A, theta_A), apply_affine(side_B, theta_B)
