"""Pictures shared by the chapters: image grids (trajectories and spectra are added by chapters)."""
from __future__ import annotations

import math
import os

import numpy as np
import torch

__all__ = ["make_grid", "to_uint8", "save_grid", "show_grid"]


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1,
              pad_value: float = 1.0) -> torch.Tensor:
    """Tile images (B, C, H, W) in [-1, 1] into one image (C, rows·(H+p)+p, nrow·(W+p)+p).

    nrow: images per row (None → ⌈√B⌉); padding: pixels between tiles; pad_value: their value.
    """
    if images.ndim != 4:
        raise ValueError(f"images: shape {tuple(images.shape)}; expected (B, C, H, W)")
    B, C, H, W = images.shape
    if B == 0:
        raise ValueError("images: empty batch; expected at least one image")
    nrow = math.ceil(math.sqrt(B)) if nrow is None else int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow={nrow!r}: expected a positive int or None")
    ncol = min(nrow, B)
    rows = math.ceil(B / ncol)
    p = int(padding)
    grid = images.new_full((C, rows * (H + p) + p, ncol * (W + p) + p), float(pad_value))
    for i, img in enumerate(images.detach().float()):
        r, c = divmod(i, ncol)
        grid[:, p + r * (H + p):p + r * (H + p) + H, p + c * (W + p):p + c * (W + p) + W] = img
    return grid  # (C, H_grid, W_grid)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Map [-1, 1] to uint8 [0, 255], channels last: (C, H, W) → (H, W, C); grey drops C."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.movedim(-3, -1).numpy()  # (..., H, W, C)
    return x[..., 0] if x.shape[-1] == 1 else x


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None,
              padding: int = 1) -> str:
    """Write images (B, C, H, W) in [-1, 1] as one PNG grid; returns the path."""
    from PIL import Image

    from pdlib.checkpoint import atomic_write

    arr = to_uint8(make_grid(images, nrow=nrow, padding=padding))
    path = os.fspath(path)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format=fmt))   # never a torn file
    return path


def show_grid(ax, images: torch.Tensor, nrow: int | None = None, title: str | None = None):
    """Draw images (B, C, H, W) in [-1, 1] as a grid on a matplotlib axis; returns the axis."""
    arr = to_uint8(make_grid(images, nrow=nrow))
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax
