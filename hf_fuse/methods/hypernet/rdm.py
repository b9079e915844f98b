"""Rectified distribution matching (RDM) regulariser."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def rdm_loss(z: Tensor, *, mu_target: float = 0.0, sigma: float = 1.0, n_proj: int = 2048,
             generator: torch.Generator | None = None) -> Tensor:
    """Sliced-Wasserstein distance between ``ReLU(z)`` and a rectified Gaussian ``ReLU(N(mu_target, sigma^2))``.

    This is the paper's Eq. 8 as the released code computes it (ReLU rectification of both
    sides).  ``z`` is ``(n_tokens, d)``; both sets are projected on ``n_proj`` random unit
    directions, sorted over tokens and compared by MSE.  The reference sample and the
    directions come from ``generator`` (which must live on ``z``'s device) or the default RNG;
    gradients flow to ``z`` only.
    """
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"z must have shape (n_tokens, d) with n_tokens, d > 0; got {tuple(z.shape)}")
    if n_proj <= 0:
        raise ValueError(f"n_proj must be positive, got {n_proj}")
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    if generator is not None and generator.device.type != z.device.type:
        raise ValueError(f"generator is on {generator.device} but z is on {z.device}")
    n, d = z.shape
    y = torch.randn(n, d, generator=generator, device=z.device, dtype=z.dtype) * sigma + mu_target
    theta = torch.randn(d, n_proj, generator=generator, device=z.device, dtype=z.dtype)
    theta = theta / theta.norm(dim=0, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)
    proj_z = torch.sort(F.relu(z) @ theta, dim=0).values
    proj_y = torch.sort(F.relu(y) @ theta, dim=0).values
    return F.mse_loss(proj_z, proj_y)
