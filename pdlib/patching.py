"""Patching of images: space-to-depth (Luhman & Luhman 2022) and fixed 2-D position embeddings.

Layout convention used everywhere in pdlib (it is ``torch.nn.functional.pixel_unshuffle``'s):
channel ``c·P² + i·P + j`` of the patched tensor at grid cell ``(y, x)`` holds pixel
``(y·P + i, x·P + j)`` of channel ``c`` of the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["space_to_depth", "depth_to_space", "sincos_2d"]


def _check_patch_size(patch_size: int) -> None:
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size={patch_size!r} is invalid; allowed: an integer >= 1")


# ----------------------------------------------------------------------------------------------
# Space-to-depth (Luhman & Luhman 2022, §3: a fixed reshape, no learned projection).

def space_to_depth(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Luhman & Luhman §3: [B, C, H, W] -> [B, C·P², H/P, W/P], out[b, c·P²+i·P+j, y, x] = x[b, c, yP+i, xP+j]."""
    _check_patch_size(patch_size)
    if x.ndim != 4:
        raise ValueError(f"x has shape {tuple(x.shape)}; allowed: a 4-D tensor [B, C, H, W]")
    H, W = x.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(
            f"patch_size={patch_size} does not divide the image size {H}x{W}; "
            f"allowed: a common divisor of H and W, e.g. {_divisors(math.gcd(H, W))}")
    if patch_size == 1:
        return x
    return F.pixel_unshuffle(x, patch_size)                      # (B, C·P², H/P, W/P)


def depth_to_space(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of `space_to_depth`: [B, C·P², h, w] -> [B, C, h·P, w·P]."""
    _check_patch_size(patch_size)
    if x.ndim != 4:
        raise ValueError(f"x has shape {tuple(x.shape)}; allowed: a 4-D tensor [B, C·P², h, w]")
    if x.shape[1] % (patch_size * patch_size):
        raise ValueError(
            f"x has {x.shape[1]} channels, not a multiple of patch_size²={patch_size ** 2}; "
            f"allowed: C·P² channels")
    if patch_size == 1:
        return x
    return F.pixel_shuffle(x, patch_size)                        # (B, C, h·P, w·P)


def _divisors(n: int) -> list[int]:
    """The divisors of n in increasing order (the patch sizes an n-pixel side allows); nets/unet.py uses it too."""
    return [d for d in range(1, n + 1) if n % d == 0]


# ----------------------------------------------------------------------------------------------
# Fixed 2-D sinusoidal position embedding (Vaswani et al. 2017 per axis; MAE / DiT in 2-D).

def sincos_2d(dim: int, h: int, w: int, *, max_period: float = 10000.0,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding [dim, h, w]: the first dim/2 channels encode the row, the rest the column.

    Each half is the 1-D transformer embedding of the integer position p:
    ``[sin(p·ω_k), cos(p·ω_k)]`` with ``ω_k = max_period^(-k/(dim/4))``, k = 0 … dim/4 − 1.
    Every position has squared norm dim/2, and ⟨e(p), e(q)⟩ depends only on p − q.
    """
    if not isinstance(dim, int) or dim <= 0 or dim % 4:
        raise ValueError(f"dim={dim!r} is invalid; allowed: a positive multiple of 4")
    for name, n in (("h", h), ("w", w)):
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"{name}={n!r} is invalid; allowed: a positive integer")
    quarter = dim // 4
    omega = max_period ** (-torch.arange(quarter, dtype=torch.float64, device=device) / quarter)

    def axis(n: int) -> torch.Tensor:                            # (dim/2, n)
        phase = omega[:, None] * torch.arange(n, dtype=torch.float64, device=device)[None, :]
        return torch.cat([phase.sin(), phase.cos()], dim=0)

    rows = axis(h)[:, :, None].expand(2 * quarter, h, w)         # (dim/2, h, w)
    cols = axis(w)[:, None, :].expand(2 * quarter, h, w)         # (dim/2, h, w)
    return torch.cat([rows, cols], dim=0).float()                # (dim, h, w)
