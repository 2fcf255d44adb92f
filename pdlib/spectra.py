"""Radially averaged power spectra of images, and the resolution a blurry image needs.

Frequency convention: cycles per pixel. An N×N image has DFT frequencies f = (k_x, k_y)/N with
integers |k| ≤ N/2; the radial frequency |f| = √(k_x² + k_y²)/N is rounded to the nearest bin
k/N, k = 0 … N/2, so the last bin is Nyquist (0.5 cycles/pixel, a pixel-wise ±1 pattern). The
corners of the DFT square (|f| > 0.5) are dropped: no radius beyond Nyquist is sampled in every
direction.

Power normalisation: P(f) = |DFT(x)(f)|²/(H·W), averaged over images, channels and the DFT
frequencies of one bin. By Parseval, the mean of |DFT|²/(H·W) over ALL frequencies equals the
mean of x² over pixels, so white noise of variance s² has the flat spectrum P(f) = s².

A signal sampled at resolution R keeps frequencies up to R/2 cycles per image, i.e. f·N ≤ R/2 in
our units (Nyquist–Shannon): an image whose content stops at f_c needs R = 2·f_c·N pixels a side.
This is the argument of Luhman & Luhman (2022) for patching: where E[x0 | x_t] has no power above
f_c, a denoiser working at resolution R = 2·f_c·N (patch size P = N/R) loses nothing visible.
"""
from __future__ import annotations

import math

import torch

__all__ = ["radial_frequencies", "radial_power_spectrum", "spectral_ratio", "cutoff_frequency",
           "needed_resolution"]


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images has shape {tuple(getattr(images, 'shape', ()))}; allowed: a float "
                         f"tensor (B, C, H, W)")
    B, C, H, W = images.shape
    if B < 1 or C < 1 or H < 2 or H != W:
        raise ValueError(f"images has shape {tuple(images.shape)}; allowed: (B, C, N, N) with "
                         f"B, C >= 1 and square N >= 2")
    return images


def radial_frequencies(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(freqs, bin index per DFT frequency): freqs = k/N for k = 0…N//2; index (N, N), −1 = corner."""
    if not isinstance(N, int) or isinstance(N, bool) or N < 2:
        raise ValueError(f"N={N!r} is invalid; allowed: an int >= 2 (the image side)")
    k = torch.fft.fftfreq(N, d=1.0 / N, dtype=torch.float64)            # (N,) integers −N/2 … N/2−1
    radius = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()                # (N, N) in units of 1/N
    index = radius.round().long()                                      # nearest radial bin
    index[index > N // 2] = -1                                         # beyond Nyquist: dropped
    freqs = torch.arange(N // 2 + 1, dtype=torch.float64) / N          # (N//2 + 1,) cycles/pixel
    return freqs, index


@torch.no_grad()
def radial_power_spectrum(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(freqs, power): |DFT|²/(H·W) averaged over images, channels and each radial bin (float64)."""
    x = _check_images(images)
    B, C, N, _ = x.shape
    freqs, index = radial_frequencies(N)
    spec = torch.fft.fft2(x.detach().to(torch.float64)).abs().square() / (N * N)   # (B, C, N, N)
    spec = spec.mean(dim=(0, 1)).cpu().reshape(-1)                     # (N·N,) mean over images
    index = index.reshape(-1)
    keep = index >= 0
    total = torch.zeros(len(freqs), dtype=torch.float64).index_add_(0, index[keep], spec[keep])
    count = torch.bincount(index[keep], minlength=len(freqs)).to(torch.float64)
    return freqs, total / count                                        # (N//2 + 1,) each


def spectral_ratio(power: torch.Tensor, reference: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-frequency power ratio P(f)/P_ref(f): the fraction of the reference's power that survives."""
    power, reference = torch.as_tensor(power), torch.as_tensor(reference)
    if power.shape != reference.shape:
        raise ValueError(f"power has shape {tuple(power.shape)} but reference has "
                         f"{tuple(reference.shape)}; allowed: the same shape (same frequency bins)")
    if not eps > 0:
        raise ValueError(f"eps={eps!r} is invalid; allowed: a float > 0")
    return power / reference.clamp(min=eps)


def cutoff_frequency(freqs: torch.Tensor, ratio: torch.Tensor, threshold: float = 0.5) -> float:
    """Effective bandwidth: the highest frequency f with ratio(f) >= threshold (0.0 if none)."""
    freqs, ratio = torch.as_tensor(freqs), torch.as_tensor(ratio)
    if freqs.ndim != 1 or freqs.shape != ratio.shape:
        raise ValueError(f"freqs {tuple(freqs.shape)} and ratio {tuple(ratio.shape)}; allowed: "
                         f"two 1-D tensors of the same length")
    if not (isinstance(threshold, (int, float)) and threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold={threshold!r} is invalid; allowed: a finite float > 0")
    kept = (ratio >= threshold).nonzero()
    return float(freqs[kept.max()]) if kept.numel() else 0.0


def needed_resolution(cutoff: float, N: int) -> int:
    """Nyquist: pixels a side that hold every frequency up to `cutoff` (cycles/pixel at size N): 2·f_c·N, at least 1."""
    if not isinstance(N, int) or isinstance(N, bool) or N < 1:
        raise ValueError(f"N={N!r} is invalid; allowed: an int >= 1 (the image side)")
    if not (0 <= cutoff <= 0.5):
        raise ValueError(f"cutoff={cutoff!r} is invalid; allowed: 0 <= cutoff <= 0.5 cycles/pixel")
    return max(1, round(2 * cutoff * N))
