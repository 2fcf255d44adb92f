"""Deliberate failures of an image set, for chapter 8's "which metric moves with which failure".

Each function takes real images [N, C, H, W] in [-1, 1] and returns a corrupted copy that stands
for one way a generative model can fail: `gaussian_blur` (lost detail), `add_noise` (residual
noise), `keep_classes` (mode dropping) and `stitch` (tiles of different images side by side: the
seams a patch-wise generator can leave).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur", "add_noise", "keep_classes", "stitch"]


def _check_images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"images: expected a float tensor [N, C, H, W], got "
                         f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}")
    return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W]: a kernel of radius max(1, round(3σ)) pixels,
    normalised to sum 1, reflect padding (so a constant image stays constant)."""
    _check_images(x)
    if not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma={sigma!r}: must be a positive number of pixels")
    r = max(1, int(round(3 * sigma)))
    if r >= min(x.shape[-2:]):
        raise ValueError(f"sigma={sigma!r}: its radius {r} px needs images larger than "
                         f"{tuple(x.shape[-2:])}")
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """x + std·ε (ε standard normal from `generator`), clamped to [-1, 1]."""
    _check_images(x)
    if not isinstance(std, (int, float)) or not std >= 0:
        raise ValueError(f"std={std!r}: must be a number >= 0")
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + std * eps).clamp(-1, 1)


def keep_classes(labels, classes) -> np.ndarray:
    """Indices (ascending) of the images whose label is in `classes`: a set that has dropped
    every other mode of the data."""
    labels = np.asarray(labels)
    keep = np.flatnonzero(np.isin(labels, np.asarray(list(classes))))
    if keep.size == 0:
        raise ValueError(f"classes={list(classes)!r}: no label in the set is one of them")
    return keep


def stitch(x: torch.Tensor, grid: int = 2) -> torch.Tensor:
    """Seamed images: image k's tile (r, c) of a grid×grid grid is the same tile of image
    (k + (r·grid + c)·⌊N/grid²⌋) mod N. Every tile keeps its place, and the grid² tiles of one
    image come from grid² different images when N ≥ grid², so every border is a seam."""
    _check_images(x)
    n, _, H, W = x.shape
    if not isinstance(grid, int) or grid < 2 or H % grid or W % grid:
        raise ValueError(f"grid={grid!r}: must be an integer >= 2 that divides the image size "
                         f"{H}×{W}")
    if n < grid ** 2:
        raise ValueError(f"images: {n} images cannot fill a {grid}×{grid} grid with tiles of "
                         f"different images; pass at least {grid ** 2}")
    h, w, step = H // grid, W // grid, n // grid ** 2
    out = x.clone()
    for r in range(grid):
        for c in range(grid):
            src = (torch.arange(n) + (r * grid + c) * step) % n
            rows, cols = slice(r * h, (r + 1) * h), slice(c * w, (c + 1) * w)
            out[:, :, rows, cols] = x[src, :, rows, cols]
    return out
