"""The orthonormal DCT-II of s×s blocks, the frequency space of Relay Diffusion's blur.

An image (B, C, H, W) with s dividing H and W is cut into (H/s)·(W/s) blocks of s×s pixels; each
block X becomes M·X·Mᵀ with the orthonormal DCT-II matrix

    M[k, n] = c_k · cos(π·(n + ½)·k / s),   c_0 = √(1/s), c_k = √(2/s) for k ≥ 1,

so M·Mᵀ = I, the inverse is Mᵀ·Y·M, and the sum of squares is kept (Parseval). Coefficient (0, 0)
of a block is s times its mean (the DC term); (k, l) is the k-th vertical and l-th horizontal
frequency. With s = H the whole image is one block (scipy's `dctn(x, norm="ortho")`).
"""
from __future__ import annotations

import math

import torch

__all__ = ["dct_matrix", "block_dct", "block_idct", "check_block_size"]


def dct_matrix(s: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix M (s, s): row k is the k-th cosine, M·Mᵀ = I."""
    if not (isinstance(s, int) and not isinstance(s, bool) and s >= 1):
        raise ValueError(f"s={s!r} is invalid; allowed: an int >= 1 (the block side)")
    n = torch.arange(s, dtype=torch.float64)
    k = n[:, None]
    M = torch.cos(math.pi * (n[None, :] + 0.5) * k / s) * math.sqrt(2.0 / s)
    M[0] = M[0] / math.sqrt(2.0)
    return M.to(dtype=dtype, device=device)


def check_block_size(x: torch.Tensor, s: int, name: str = "x") -> None:
    """ValueError unless x is (B, C, H, W) with the block side s dividing H and W."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(getattr(x, 'shape', ()))}; allowed: (B, C, H, W)")
    H, W = x.shape[-2:]
    if H % s or W % s:
        raise ValueError(f"block size s={s} does not divide {name}'s {H}×{W}; allowed: a divisor "
                         f"of both sides")


def _blocks(x: torch.Tensor, s: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H/s, W/s, s, s)."""
    B, C, H, W = x.shape
    return x.reshape(B, C, H // s, s, W // s, s).permute(0, 1, 2, 4, 3, 5)


def _unblocks(y: torch.Tensor) -> torch.Tensor:
    """(B, C, H/s, W/s, s, s) → (B, C, H, W)."""
    B, C, h, w, s, _ = y.shape
    return y.permute(0, 1, 2, 4, 3, 5).reshape(B, C, h * s, w * s)


def block_dct(x: torch.Tensor, s: int) -> torch.Tensor:
    """DCT-II of every s×s block: (B, C, H, W) → (B, C, H/s, W/s, s, s), coefficient (k, l) last."""
    check_block_size(x, s)
    M = dct_matrix(s, x.dtype, x.device)
    return M @ _blocks(x, s) @ M.T


def block_idct(y: torch.Tensor) -> torch.Tensor:
    """The inverse of block_dct: (B, C, H/s, W/s, s, s) → (B, C, H, W)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 6 or y.shape[-1] != y.shape[-2]:
        raise ValueError(f"y has shape {tuple(getattr(y, 'shape', ()))}; allowed: "
                         f"(B, C, H/s, W/s, s, s) from block_dct")
    M = dct_matrix(y.shape[-1], y.dtype, y.device)
    return _unblocks(M.T @ y @ M)
