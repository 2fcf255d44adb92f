"""Samplers in σ-space (the denoiser wrappers they take are in `pdlib.denoisers`).

Every sampler has the signature `(denoiser, x, sigmas, *, cond=None, generator=None,
callback=None, ...) -> x` (as in k-diffusion): `x` is the starting state at noise level sigmas[0],
`sigmas` a descending 1-D grid (normally ending in 0, see `pdlib.schedules.edm_sigmas` and
`sampling_sigmas`), `cond` a dict passed to the denoiser as keyword arguments. The sampler works
in float64, calls `denoiser(x, sigma, **cond)` with x float64 [B, ...] and sigma float64 [B], and
returns the result in the dtype of the input `x`. `callback(dict(i, x, sigma, sigma_next,
denoised))` is called after each step, with `x` the new state at `sigma_next`.

Starting states (`prior_sample`): an EDM model starts from x = σ0·ε; a VP model from
x = √(1+σ0²)·ε, which is the VP prior x_T ~ N(0, I) written in σ-space (x = x_T/√ᾱ_T).
"""

from __future__ import annotations

import math

import torch

from pdlib.denoisers import learns_variance
from pdlib.precond import _check_x, sigma_batch

__all__ = ["edm_sample", "euler_sample", "ddim_sample", "ddpm_sample", "relay_sample", "relay_start", "prior_sample"]


# ----------------------------------------------------------------------------------------------
# Shared helpers.

def _check_sigmas(sigmas) -> torch.Tensor:
    s = torch.as_tensor(sigmas, dtype=torch.float64).detach().to(device="cpu")
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas has shape {tuple(s.shape)}; allowed: a 1-D grid of >= 2 levels "
                         f"(e.g. edm_sigmas(n))")
    if bool(s.isnan().any()) or bool(s.isinf().any()) or bool((s < 0).any()):
        raise ValueError(f"sigmas={s.tolist()[:6]}... is invalid; allowed: finite values >= 0")
    if bool((s[1:] >= s[:-1]).any()):
        raise ValueError(f"sigmas={s.tolist()[:6]}... is invalid; allowed: strictly decreasing")
    return s


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def _call(denoiser, x: torch.Tensor, sigma: float, cond: dict) -> torch.Tensor:
    s = sigma_batch(float(sigma), x.shape[0], x.device)               # (B,) float64, as x here
    return denoiser(x, s, **cond).to(x.dtype)


def _call_with_variance(denoiser, x: torch.Tensor, sigma: float, cond: dict):
    s = sigma_batch(float(sigma), x.shape[0], x.device)
    x0, v = denoiser.forward_with_variance(x, s, **cond)
    return x0.to(x.dtype), v.to(x.dtype)


def _report(callback, i, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback(dict(i=i, x=x, sigma=float(sigma), sigma_next=float(sigma_next), denoised=denoised))


# ----------------------------------------------------------------------------------------------
# ODE / SDE samplers of Karras et al. 2022.

def _churn_sample(denoiser, x, sigmas, heun, S_churn, S_min, S_max, S_noise, cond, generator, callback):
    _check_x(x, "at noise level sigmas[0]")
    s = _check_sigmas(sigmas)
    if not S_churn >= 0:
        raise ValueError(f"S_churn={S_churn!r} is invalid; allowed: a value >= 0")
    cond = {} if cond is None else dict(cond)
    N = s.numel() - 1
    x_next = x.to(torch.float64)
    for i in range(N):
        sigma, sigma_next = s[i].item(), s[i + 1].item()
        x_cur = x_next
        # Increase noise temporarily (Algorithm 2, lines 4–6).
        gamma = min(S_churn / N, math.sqrt(2) - 1) if S_min <= sigma <= S_max else 0.0
        sigma_hat = sigma + gamma * sigma
        if gamma > 0:
            x_hat = x_cur + math.sqrt(sigma_hat ** 2 - sigma ** 2) * S_noise * _noise(x_cur, generator)
        else:
            x_hat = x_cur
        # Euler step (lines 7–8).
        denoised = _call(denoiser, x_hat, sigma_hat, cond)
        d_cur = (x_hat - denoised) / sigma_hat
        x_next = x_hat + (sigma_next - sigma_hat) * d_cur
        # Second-order correction on every step but the last (lines 9–11).
        if heun and i < N - 1:
            d_prime = (x_next - _call(denoiser, x_next, sigma_next, cond)) / sigma_next
            x_next = x_hat + (sigma_next - sigma_hat) * (0.5 * d_cur + 0.5 * d_prime)
        _report(callback, i, x_next, sigma, sigma_next, denoised)
    return x_next.to(x.dtype)


@torch.no_grad()
def edm_sample(denoiser, x: torch.Tensor, sigmas, *, S_churn: float = 0.0, S_min: float = 0.0,
               S_max: float = float("inf"), S_noise: float = 1.0, cond: dict | None = None,
               generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2: Heun (2nd order) with churn; NFE = 2N − 1 for N steps; x = σ0·ε."""
    return _churn_sample(denoiser, x, sigmas, True, S_churn, S_min, S_max, S_noise, cond,
                         generator, callback)


@torch.no_grad()
def euler_sample(denoiser, x: torch.Tensor, sigmas, *, S_churn: float = 0.0, S_min: float = 0.0,
                 S_max: float = float("inf"), S_noise: float = 1.0, cond: dict | None = None,
                 generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2 without the Heun correction: Euler on dx/dσ = (x − D)/σ; NFE = N."""
    return _churn_sample(denoiser, x, sigmas, False, S_churn, S_min, S_max, S_noise, cond,
                         generator, callback)


# ----------------------------------------------------------------------------------------------
# DDIM and DDPM, written in σ-space (ᾱ = 1/(1+σ²)), so any descending grid works (respaced too).

@torch.no_grad()
def ddim_sample(denoiser, x: torch.Tensor, sigmas, *, eta: float = 0.0, cond: dict | None = None,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Song et al. 2021, eq. 12 in σ-space: x' = x̂0 + √(σ'² − σ_up²)·ε̂ + σ_up·z, σ_up = η·σ'√(1 − σ'²/σ²).

    η = 0 is deterministic (and equals Euler in σ); η = 1 is the DDPM posterior (ancestral sampling).
    """
    _check_x(x, "at noise level sigmas[0]")
    s = _check_sigmas(sigmas)
    if not eta >= 0:
        raise ValueError(f"eta={eta!r} is invalid; allowed: a value >= 0")
    cond = {} if cond is None else dict(cond)
    x_cur = x.to(torch.float64)
    for i in range(s.numel() - 1):
        sigma, sigma_next = s[i].item(), s[i + 1].item()
        denoised = _call(denoiser, x_cur, sigma, cond)
        eps = (x_cur - denoised) / sigma                                  # ε̂
        sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2)))
        sigma_down = math.sqrt(max(0.0, sigma_next ** 2 - sigma_up ** 2))
        x_cur = denoised + sigma_down * eps
        if sigma_up > 0:
            x_cur = x_cur + sigma_up * _noise(x_cur, generator)
        _report(callback, i, x_cur, sigma, sigma_next, denoised)
    return x_cur.to(x.dtype)


@torch.no_grad()
def ddpm_sample(denoiser, x: torch.Tensor, sigmas, *, variance: str = "auto",
                cond: dict | None = None, generator: torch.Generator | None = None,
                callback=None) -> torch.Tensor:
    """Ho et al. 2020, Algorithm 2 with the posterior q(x_{t−1}|x_t, x̂0) between consecutive σ's; last step returns the mean.

    variance: 'posterior' β̃ (default), 'prior' β, 'learned' (Nichol & Dhariwal 2021, eq. 15:
    log Σ = v·log β + (1−v)·log β̃ from `denoiser.forward_with_variance`), 'learned_clipped' (the
    same with v clipped to [0, 1], so that β̃ ≤ Σ ≤ β), or 'auto' (learned when the denoiser has
    `learn_sigma` true and `forward_with_variance`, else posterior). β and β̃ are those of the
    step taken (of the respaced schedule): a v outside [0, 1], which the hybrid loss learns when
    the mean's error makes the best Σ exceed β, extrapolates further on a coarser schedule. Start from
    x = √(1+σ0²)·ε (`prior_sample(..., vp=True)`).
    """
    _check_x(x, "at noise level sigmas[0]")
    s = _check_sigmas(sigmas)
    allowed = ("auto", "posterior", "prior", "learned", "learned_clipped")
    if variance not in allowed:
        raise ValueError(f"variance={variance!r} is invalid; allowed: {allowed}")
    learned = learns_variance(denoiser)
    if variance.startswith("learned") and not learned:
        raise ValueError(f"variance={variance!r} needs a denoiser with learn_sigma=True and "
                         "forward_with_variance (e.g. VPPrecond(..., learn_sigma=True))")
    if variance == "auto":
        variance = "learned" if learned else "posterior"
    cond = {} if cond is None else dict(cond)
    x_cur = x.to(torch.float64)
    for i in range(s.numel() - 1):
        sigma, sigma_next = s[i].item(), s[i + 1].item()
        if variance.startswith("learned"):
            denoised, v = _call_with_variance(denoiser, x_cur, sigma, cond)
            if variance == "learned_clipped":
                v = v.clamp(0.0, 1.0)
        else:
            denoised, v = _call(denoiser, x_cur, sigma, cond), None
        # Posterior mean in σ-space: x̂0 + (σ'²/σ²)(x − x̂0) (= Ho et al. eq. 7 divided by √ᾱ').
        c = (sigma_next / sigma) ** 2
        mean = denoised + c * (x_cur - denoised)
        if sigma_next > 0:
            abar, abar_next = 1 / (1 + sigma ** 2), 1 / (1 + sigma_next ** 2)
            beta = 1 - abar / abar_next                                 # β of this (respaced) step
            beta_tilde = beta * (1 - abar_next) / (1 - abar)            # β̃
            if variance == "posterior":
                var_vp = torch.full_like(x_cur, beta_tilde)
            elif variance == "prior":
                var_vp = torch.full_like(x_cur, beta)
            else:
                var_vp = torch.exp(v * math.log(beta) + (1 - v) * math.log(beta_tilde))
            # A VP variance Σ becomes Σ/ᾱ' in σ-space (x = x_t/√ᾱ').
            x_cur = mean + (var_vp / abar_next).sqrt() * _noise(x_cur, generator)
        else:
            x_cur = mean
        _report(callback, i, x_cur, sigma, sigma_next, denoised)
    return x_cur.to(x.dtype)


@torch.no_grad()
def relay_sample(denoiser, x: torch.Tensor, sigmas, *, blur, s_noise: float = 0.0,
                 s_block: float = 0.0, heun: bool = True, cond: dict | None = None,
                 generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Relay Diffusion's stage-2 sampler (Teng et al. 2024): the blurring process run backwards in
    the DCT of `blur.up_scale`-sided blocks (`blur` a pdlib.blur.BlurSchedule; α_i its attenuation
    at σ_i). With u = DCT(x), û0 = DCT(D(x, σ_i)) and the noise estimate n̂ = (u − α_i·û0)/σ_i:

        Euler:  u' = α_{i+1}·û0 + σ_{i+1}·n̂  =  u + (σ_{i+1} − σ_i)·n̂ + (α_{i+1} − α_i)·û0
        Heun:   the same increment with û0 and n̂ averaged with those at (u', σ_{i+1})
        s_noise: u' ← α_{i+1}·û0 + √(1 − s_n²)·(u' − α_{i+1}·û0) + s_n·σ_{i+1}·DCT(ε + s_b·ε_block)

    With s_noise = 0 and no Heun this is the paper's update x' = IDCT[γ·u + (α_{i+1} − γ·α_i)·û0],
    γ = σ_{i+1}/σ_i; with s_noise > 0, γ = √(1 − s_n²)·σ_{i+1}/σ_i and fresh noise s_n·σ_{i+1}.
    Without blur (α ≡ 1) and s_noise = 0 it is EDM's Heun (or Euler) step exactly. Heun corrects
    every step but the last (the last goes to σ = 0 and returns D(x, σ_{N−1})): NFE = 2N − 1.
    Start from x = up(x_low) + σ0·(ε + s_b·ε_block) (`relay_start`). The release's Heun step
    averages the unblurred slope (u − û0)/σ instead and draws fresh noise twice per step; ours
    averages û0 and n̂, so that an exact denoiser lands on the data (tests/test_relay.py)."""
    from pdlib.blur import block_noise
    from pdlib.dct import block_dct, block_idct, check_block_size
    _check_x(x, "at noise level sigmas[0]")
    s = _check_sigmas(sigmas)
    if not 0 <= s_noise < 1:
        raise ValueError(f"s_noise={s_noise!r} is invalid; allowed: a number in [0, 1)")
    if not s_block >= 0:
        raise ValueError(f"s_block={s_block!r} is invalid; allowed: a number >= 0")
    bs = blur.up_scale
    check_block_size(x, bs)
    cond = {} if cond is None else dict(cond)
    alphas = blur.alpha_at_sigma(s).to(x.device)                        # (N+1, s, s) float64
    x_cur = x.to(torch.float64)
    N = s.numel() - 1
    for i in range(N):
        sigma, sigma_next = s[i].item(), s[i + 1].item()
        a, a_next = alphas[i], alphas[i + 1]
        u = block_dct(x_cur, bs)
        denoised = _call(denoiser, x_cur, sigma, cond)
        x0_hat = block_dct(denoised, bs)
        n_hat = (u - a * x0_hat) / sigma
        u_next = a_next * x0_hat + sigma_next * n_hat
        if heun and i < N - 1:
            x0_2 = block_dct(_call(denoiser, block_idct(u_next), sigma_next, cond), bs)
            n_2 = (u_next - a_next * x0_2) / sigma_next
            x0_hat, n_hat = (x0_hat + x0_2) / 2, (n_hat + n_2) / 2
            u_next = u + (sigma_next - sigma) * n_hat + (a_next - a) * x0_hat
        if s_noise > 0 and sigma_next > 0:
            fresh = _noise(x_cur, generator)
            if s_block > 0:
                fresh = fresh + s_block * block_noise(x_cur.shape, bs, generator,
                                                      x_cur.device, x_cur.dtype)
            u_next = (a_next * x0_hat + math.sqrt(1 - s_noise ** 2) * (u_next - a_next * x0_hat)
                      + s_noise * sigma_next * block_dct(fresh, bs))
        x_cur = block_idct(u_next)
        _report(callback, i, x_cur, sigma, sigma_next, denoised)
    return x_cur.to(x.dtype)


def relay_start(low: torch.Tensor, sigma0: float, up_scale: int, s_block: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Stage 2's starting state from low-resolution images (B, C, h, w): the nearest-neighbour
    upsampling by up_scale plus σ0·(ε + s_b·ε_block), float64."""
    from pdlib.blur import block_noise, upsample
    _check_x(low, "(the low-resolution images)")
    up = upsample(low.to(torch.float64), up_scale)
    dev = generator.device if generator is not None else up.device
    noise = torch.randn(up.shape, generator=generator, device=dev, dtype=torch.float64)
    if s_block > 0:
        noise = noise + s_block * block_noise(up.shape, up_scale, generator, dev, torch.float64)
    return up + float(sigma0) * noise.to(up.device)


def prior_sample(shape, sigmas, generator: torch.Generator | None = None, vp: bool = True,
                 device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Starting state at σ0 = sigmas[0]: √(1+σ0²)·ε for a VP model (x_T ~ N(0, I)), σ0·ε for EDM."""
    s0 = float(_check_sigmas(sigmas)[0])
    dev = generator.device if generator is not None else torch.device(device or "cpu")
    eps = torch.randn(tuple(shape), generator=generator, device=dev, dtype=dtype)
    scale = math.sqrt(1 + s0 ** 2) if vp else s0
    return (eps * scale).to(device or dev)
