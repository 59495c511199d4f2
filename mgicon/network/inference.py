"""Inference: one direction, no loss, no gradients; channels-last activations, optional bf16 autocast on CUDA."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from mgicon.network.unet import UNet


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Put ``net`` in eval mode (BatchNorm uses its running statistics) and restore its mode afterwards."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked for, a no-op otherwise (CPU autocast is slower for 3-D convolutions)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def channels_last_mode(net: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Run every U-Net of ``net`` on channels-last (NDHWC) activations, restoring the previous setting after."""
    unets = [m for m in net.modules() if isinstance(m, UNet)]
    before = [u.channels_last for u in unets]
    for u in unets:
        u.channels_last = enabled
    try:
        yield net
    finally:
        for u, b in zip(unets, before):
            u.channels_last = b


def predict_map(
    net: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    *,
    bf16: bool = False,
    channels_last: bool = True,
) -> torch.Tensor:
    """``phi_AB`` on the fixed grid, ``(B, 3, *spatial)`` in [0,1] coordinates (float32), so that
    ``moving ∘ phi_AB ≈ fixed``.

    Only the moving→fixed direction is computed, without the loss, under ``torch.inference_mode`` with the network
    in eval mode.  ``bf16`` (CUDA only) runs the U-Nets under bf16 autocast; ``channels_last`` runs them on NDHWC
    activations, for which oneDNN (CPU) and cuDNN have faster 3-D kernels (1.5x at 175³ on a 2-core CPU,
    ``benchmarks/engine.py``); results agree with the NCDHW path to float rounding.
    """
    if moving.shape != fixed.shape or moving.dim() != 5:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must be equal (B, 1, D, H, W)")
    device = next(net.parameters()).device
    moving = moving.to(device=device, dtype=torch.float32)
    fixed = fixed.to(device=device, dtype=torch.float32)
    with torch.inference_mode(), eval_mode(net), channels_last_mode(net, channels_last), autocast_context(device, bf16):
        phi = net(moving, fixed).on_grid(fixed.shape[2:])
    return phi.float()
