"""Relay Diffusion's blurring process (Teng et al. 2024): the per-frequency blur of s×s blocks, its
schedule in t, and block noise.

Forward process of stage 2, with t ∈ (0, 1] and the orthonormal block DCT of `pdlib.dct`:

    σ(t)   = exp(P_mean + P_std·Φ⁻¹(t·L))                  (7.1)  EDM's log-normal, cut at its L quantile
    σ_B(t) = σ_B,max · sin²(π·t/2)                          (7.2)  the blur level
    α_kl   = (1 − m)·exp(−π²(k² + l²)/s² · σ_B²/2) + m      (7.3)  per DCT frequency (k, l) of a block
    x_t    = IDCT(α ⊙ DCT(x0)) + σ·(ε + s_b·ε_block)        (7.4)

α = 1 at σ_B = 0 (no blur) and α_00 = 1 always (every block keeps its mean); as σ_B grows the
block tends to its mean, which is what a nearest-neighbour upsampling of the block-averaged
low-resolution image looks like. t(σ) inverts (7.1), so a denoiser D(x, σ) knows its blur from σ.

Block noise (the release's box filter): ε_block(i, j) = (1/s)·Σ_{a,b<s} g(i − a, j − b) of white
noise g, wrapped around the image borders. Each pixel has unit variance; pixels (Δi, Δj) apart
have correlation (1 − |Δi|/s)·(1 − |Δj|/s) for |Δi|, |Δj| < s and 0 further away, so the noise has
the low-frequency power that white noise lacks at high resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pdlib._checks import check, is_int, is_num
from pdlib.dct import block_dct, block_idct, check_block_size

__all__ = ["BlurSchedule", "block_noise", "block_noise_correlation", "upsample", "downsample"]

_SQRT2 = math.sqrt(2.0)


def _ndtri(p: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹(p), the standard normal quantile."""
    return _SQRT2 * torch.erfinv(2 * p - 1)


def _ndtr(z: torch.Tensor) -> torch.Tensor:
    """Φ(z), the standard normal distribution function."""
    return 0.5 * (1 + torch.erf(z / _SQRT2))


@dataclass(frozen=True)
class BlurSchedule:
    """The stage-2 schedule: σ(t), σ_B(t) and the DCT attenuation α of s×s blocks, eqs. (7.1)–(7.3)."""
    up_scale: int = 4                       # s: the block side, the factor between the stages' resolutions
    blur_sigma_max: float = 3.0             # σ_B,max: the blur level at t = 1
    P_mean: float = -1.2                    # ln σ ~ N(P_mean, P_std²), cut at its prob_length quantile
    P_std: float = 1.2
    prob_length: float = 0.93               # L: t = 1 is the L quantile of EDM's log-normal σ
    blur_m: float = 0.001                   # m: the floor of α (no frequency is removed entirely)

    def __post_init__(self):
        check(is_int(self.up_scale) and self.up_scale >= 1, "up_scale", self.up_scale, "an int >= 1")
        check(is_num(self.blur_sigma_max) and self.blur_sigma_max >= 0, "blur_sigma_max",
              self.blur_sigma_max, "a finite number >= 0")
        check(is_num(self.P_mean), "P_mean", self.P_mean, "a finite number")
        check(is_num(self.P_std) and self.P_std > 0, "P_std", self.P_std, "a finite number > 0")
        check(is_num(self.prob_length) and 0 < self.prob_length < 1, "prob_length",
              self.prob_length, "a number in (0, 1)")
        check(is_num(self.blur_m) and 0 <= self.blur_m < 1, "blur_m", self.blur_m,
              "a number in [0, 1)")

    # -- the schedule in t --------------------------------------------------------------------
    def sigma(self, t) -> torch.Tensor:
        """σ(t) of (7.1), float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.exp(self.P_mean + self.P_std * _ndtri(t * self.prob_length))

    def t_of_sigma(self, sigma) -> torch.Tensor:
        """The inverse of (7.1), clamped to [0, 1]; σ = 0 gives t = 0."""
        s = torch.as_tensor(sigma, dtype=torch.float64)
        z = (torch.log(s.clamp_min(1e-300)) - self.P_mean) / self.P_std
        return torch.where(s > 0, _ndtr(z) / self.prob_length, torch.zeros_like(s)).clamp(0, 1)

    @property
    def sigma_max(self) -> float:
        """σ(1), the largest noise level stage 2 is trained at."""
        return float(self.sigma(1.0))

    def blur_sigma(self, t) -> torch.Tensor:
        """σ_B(t) = σ_B,max·sin²(πt/2) of (7.2), float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.blur_sigma_max * torch.sin(math.pi * t / 2) ** 2

    # -- the attenuation ----------------------------------------------------------------------
    def alpha(self, blur_sigma) -> torch.Tensor:
        """α of (7.3) for blur levels of any shape S: (*S, s, s), float64; α[..., 0, 0] = 1."""
        b = torch.as_tensor(blur_sigma, dtype=torch.float64)
        k = torch.arange(self.up_scale, dtype=torch.float64)
        freq2 = (k[:, None] ** 2 + k[None, :] ** 2) * (math.pi / self.up_scale) ** 2   # (s, s)
        b2 = (b ** 2)[..., None, None]
        return (1 - self.blur_m) * torch.exp(-freq2 * b2 / 2) + self.blur_m

    def alpha_at_sigma(self, sigma) -> torch.Tensor:
        """α at the blur level that noise level σ carries: alpha(blur_sigma(t_of_sigma(σ)))."""
        return self.alpha(self.blur_sigma(self.t_of_sigma(sigma)))

    def blur(self, x0: torch.Tensor, blur_sigma) -> torch.Tensor:
        """IDCT(α ⊙ DCT(x0)) of (7.4) for images (B, C, H, W) and blur levels () or (B,)."""
        s = self.up_scale
        check_block_size(x0, s, "x0")
        a = self.alpha(blur_sigma).to(dtype=x0.dtype, device=x0.device)
        if a.ndim == 3:                                                     # one level per image
            a = a[:, None, None, None]
        return block_idct(a * block_dct(x0, s))


def block_noise(shape, s: int, generator: torch.Generator | None = None, device=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Block noise (B, C, H, W): a sliding s×s box sum of white noise over s, wrapped at the
    borders (unit variance per pixel; see the module docstring for its correlation)."""
    check(is_int(s) and s >= 1, "s", s, "an int >= 1")
    check(len(tuple(shape)) == 4, "shape", tuple(shape), "(B, C, H, W)")
    dev = generator.device if generator is not None else torch.device(device or "cpu")
    g = torch.randn(tuple(shape), generator=generator, device=dev, dtype=dtype)
    out = torch.zeros_like(g)
    for a in range(s):
        for b in range(s):
            out += torch.roll(g, shifts=(a, b), dims=(-2, -1))
    return (out / s).to(device or dev)


def block_noise_correlation(s: int, max_lag: int) -> torch.Tensor:
    """The correlation of block noise at lags (Δi, Δj) ∈ [0, max_lag]²: (1 − Δi/s)₊·(1 − Δj/s)₊."""
    lag = torch.arange(max_lag + 1, dtype=torch.float64)
    r = (1 - lag / s).clamp_min(0)
    return r[:, None] * r[None, :]


def upsample(x: torch.Tensor, s: int) -> torch.Tensor:
    """Nearest-neighbour upsampling by s (every pixel becomes an s×s block), as the release does."""
    check(is_int(s) and s >= 1, "up_scale", s, "an int >= 1")
    return x.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def downsample(x: torch.Tensor, s: int) -> torch.Tensor:
    """The mean of every s×s block (B, C, H/s, W/s): the DC term of block_dct over s."""
    check_block_size(x, s)
    return torch.nn.functional.avg_pool2d(x, s)
