"""Patching of images: space-to-depth (Luhman & Luhman 2022), fixed 2-D position embeddings, and
random crops with their pixel-coordinate channels (Patch Diffusion, Wang et al. 2023), and the
N×N tile grid of patch-by-patch generation (Arakawa et al. 2023).

Layout convention used everywhere in pdlib (it is ``torch.nn.functional.pixel_unshuffle``'s):
channel ``c·P² + i·P + j`` of the patched tensor at grid cell ``(y, x)`` holds pixel
``(y·P + i, x·P + j)`` of channel ``c`` of the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["space_to_depth", "depth_to_space", "sincos_2d", "coord_grid", "random_crops",
           "check_grid", "to_tiles", "from_tiles", "global_content"]


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


# ----------------------------------------------------------------------------------------------
# Random crops and coordinate channels (Wang et al. 2023, "Patch Diffusion").

def coord_grid(resolution: int, height: int, width: int, top=0, left=0, *,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Wang et al. 2023: pixel coordinates (pos/(R−1) − 0.5)·2 of a height×width window
    whose first pixel is (top, left) of an image of side R = `resolution`: [2, h, w], channel 0
    x = the column, channel 1 y = the row. The whole image (top = left = 0, h = w = R) spans
    [−1, 1]; pixels outside it (a larger canvas, a negative offset) extend the same line.

    `top` and `left` are ints, or int tensors [B] (one window each): then [B, 2, h, w]."""
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 2:
        raise ValueError(f"resolution={resolution!r} is invalid; allowed: an integer >= 2")
    for name, n in (("height", height), ("width", width)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{name}={n!r} is invalid; allowed: an integer >= 1")
    batched = isinstance(top, torch.Tensor) or isinstance(left, torch.Tensor)
    if batched:
        dev = top.device if isinstance(top, torch.Tensor) else left.device
        top, left = (torch.as_tensor(v, device=dev).reshape(-1) for v in (top, left))
        top, left = torch.broadcast_tensors(top, left)                  # (B,), (B,)
    else:
        top, left = torch.tensor([top], device=device), torch.tensor([left], device=device)
    scale = 2.0 / (resolution - 1)
    rows = (top[:, None] + torch.arange(height, device=top.device)) * scale - 1     # (B, h)
    cols = (left[:, None] + torch.arange(width, device=left.device)) * scale - 1    # (B, w)
    B = rows.shape[0]
    grid = torch.stack([cols[:, None, :].expand(B, height, width),
                        rows[:, :, None].expand(B, height, width)], dim=1)           # (B, 2, h, w)
    grid = grid.float()
    return grid if batched else grid[0]


def random_crops(images: torch.Tensor, size: int, n: int = 1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Wang et al. 2023: `n` independent uniformly placed size×size crops of each image (no
    padding: every crop lies inside its image). Returns (crops [n·B, C, s, s], top [n·B],
    left [n·B]); crops n·i … n·i + n − 1 are those of image i, (top, left) their first pixel.
    The positions are drawn with `generator` (on its device)."""
    if images.ndim != 4:
        raise ValueError(f"images has shape {tuple(images.shape)}; allowed: a 4-D tensor [B, C, H, W]")
    B, _, H, W = images.shape
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= min(H, W):
        raise ValueError(f"size={size!r} is invalid; allowed: an integer in [1, {min(H, W)}] "
                         f"(the crop lies inside the {H}x{W} image)")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r} is invalid; allowed: an integer >= 1")
    dev = generator.device if generator is not None else images.device
    top = torch.randint(0, H - size + 1, (n * B,), generator=generator, device=dev).to(images.device)
    left = torch.randint(0, W - size + 1, (n * B,), generator=generator, device=dev).to(images.device)
    which = torch.arange(B, device=images.device).repeat_interleave(n)             # (n·B,)
    rows = top[:, None] + torch.arange(size, device=images.device)                 # (n·B, s)
    cols = left[:, None] + torch.arange(size, device=images.device)                # (n·B, s)
    crops = images[which[:, None, None], :, rows[:, :, None], cols[:, None, :]]    # (n·B, s, s, C)
    return crops.permute(0, 3, 1, 2).contiguous(), top, left                       # (n·B, C, s, s)


# ----------------------------------------------------------------------------------------------
# The N×N tile grid (Arakawa et al. 2023, "patch-based generation").
# Tile index i·N + j (row-major) covers rows i·h … (i+1)·h − 1 and columns j·w … (j+1)·w − 1,
# h = H/N, w = W/N: any H × W that N divides (the release's slicing mixed H and W: square only).

def check_grid(grid: int, height: int, width: int, name: str = "grid") -> tuple[int, int]:
    """(h, w) = (H/N, W/N), the tile size of an N×N grid over an H×W image; a one-line
    ValueError naming `name` unless N is an int >= 1 that divides H and W."""
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1 or height % grid or width % grid:
        allowed = _divisors(math.gcd(int(height), int(width)))
        raise ValueError(f"{name}={grid!r} is invalid; allowed: an int N >= 1 dividing both sides of "
                         f"the {height}x{width} image, one of {allowed}")
    return height // grid, width // grid


def to_tiles(x: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N², C, H/N, W/N]: tile k = i·N + j is rows i·h…, columns j·w… ."""
    if x.ndim != 4:
        raise ValueError(f"x has shape {tuple(x.shape)}; allowed: a 4-D tensor [B, C, H, W]")
    B, C, H, W = x.shape
    h, w = check_grid(grid, H, W)
    t = x.reshape(B, C, grid, h, grid, w).permute(0, 2, 4, 1, 3, 5)      # (B, N, N, C, h, w)
    return t.reshape(B, grid * grid, C, h, w)


def from_tiles(tiles: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of `to_tiles`: [B, N², C, h, w] -> [B, C, N·h, N·w]."""
    if tiles.ndim != 5 or not isinstance(grid, int) or grid < 1 or tiles.shape[1] != grid * grid:
        raise ValueError(f"tiles has shape {tuple(getattr(tiles, 'shape', ()))} for grid={grid!r}; "
                         f"allowed: [B, N², C, h, w] with N = grid >= 1")
    B, _, C, h, w = tiles.shape
    x = tiles.reshape(B, grid, grid, C, h, w).permute(0, 3, 1, 4, 2, 5)  # (B, C, N, h, N, w)
    return x.reshape(B, C, grid * h, grid * w)


def global_content(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Global Content Conditioning (Arakawa et al. 2023): the whole image average-pooled by N to
    the tile size, [B, C, H, W] -> [B, C, H/N, W/N]; every tile of the image gets the same one."""
    if x.ndim != 4:
        raise ValueError(f"x has shape {tuple(x.shape)}; allowed: a 4-D tensor [B, C, H, W]")
    check_grid(grid, x.shape[-2], x.shape[-1])
    return x if grid == 1 else F.avg_pool2d(x, grid)
