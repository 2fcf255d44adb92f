"""Noise schedules: discrete VP schedules (DDPM / improved DDPM / ADM / Lin et al.) and EDM σ grids.

Everything is expressed in σ-space as well (ARCHITECTURE.md): a VP state x_t = √ᾱ_t · x_σ with
σ_t = √((1−ᾱ_t)/ᾱ_t), so ᾱ = 1/(1+σ²) and SNR_t = ᾱ/(1−ᾱ) = 1/σ². All tables are float64.

A schedule is a small immutable object; respacing and zero-terminal-SNR rescaling are functions
of a schedule that return a new one, never hidden state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

__all__ = [
    "VPSchedule", "vp_schedule", "zero_terminal_snr", "respace", "sampling_sigmas",
    "edm_sigmas", "snr_to_t", "space_timesteps", "ZERO_SNR_SIGMA",
]

# σ that stands for σ = ∞ (ᾱ = 0, zero terminal SNR) wherever a finite number is needed:
# ᾱ = 1/(1+σ²) = 1e-10 there, so √ᾱ·x = 1e-5·x is negligible and every formula stays finite.
ZERO_SNR_SIGMA = 1e5


def _as_f64(values, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).detach().to(device="cpu")
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; allowed: a non-empty 1-D sequence")
    return t


@dataclass(frozen=True, eq=False)
class VPSchedule:
    """A discrete variance-preserving schedule (Ho et al. 2020, eq. 4): q(x_t|x0) = N(√ᾱ_t x0, (1−ᾱ_t) I)."""

    betas: torch.Tensor               # β of each kept step, float64 [T]; recomputed after respacing
    alphas_cumprod: torch.Tensor      # ᾱ of each kept step, float64 [T], non-increasing in (0, 1]..[0, 1)
    timesteps: torch.Tensor = None    # ORIGINAL t index of each kept step, int64 [T]; arange(T) if None

    def __post_init__(self):
        betas = _as_f64(self.betas, "betas")
        abar = _as_f64(self.alphas_cumprod, "alphas_cumprod")
        if betas.shape != abar.shape:
            raise ValueError(f"betas has {betas.numel()} entries but alphas_cumprod has "
                             f"{abar.numel()}; allowed: the same length")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(f"betas range over [{betas.min().item():.4g}, {betas.max().item():.4g}]; "
                             f"allowed: 0 < β <= 1 (a linear schedule needs T >= 21)")
        if not bool(((abar >= 0) & (abar < 1)).all()) or bool((abar[1:] > abar[:-1]).any()):
            raise ValueError("alphas_cumprod must be non-increasing with values in [0, 1)")
        if self.timesteps is None:
            ts = torch.arange(betas.numel(), dtype=torch.int64)
        else:
            ts = torch.as_tensor(self.timesteps).detach().to(device="cpu", dtype=torch.int64)
            if ts.shape != betas.shape or bool((ts[1:] <= ts[:-1]).any()) or bool((ts < 0).any()):
                raise ValueError(f"timesteps={ts.tolist()[:8]}... is invalid; allowed: strictly "
                                 f"increasing non-negative integers, one per step")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", abar)
        object.__setattr__(self, "timesteps", ts)

    @property
    def T(self) -> int:
        """Number of (kept) steps."""
        return int(self.betas.numel())

    @property
    def sigmas(self) -> torch.Tensor:
        """σ_t = √((1−ᾱ_t)/ᾱ_t) (Karras et al. 2022, Table 1, VP); +inf where ᾱ = 0."""
        return ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = β_t(1−ᾱ_{t−1})/(1−ᾱ_t), the variance of q(x_{t−1}|x_t, x0) (Ho et al. 2020, eq. 7); β̃_0 = 0."""
        abar = self.alphas_cumprod
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return self.betas * (1 - abar_prev) / (1 - abar)

    @property
    def snr(self) -> torch.Tensor:
        """SNR_t = ᾱ_t/(1−ᾱ_t) = 1/σ_t² (Kingma et al. 2021)."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)

    def _log_sigma_table(self) -> torch.Tensor:
        return self.sigmas.clamp(max=ZERO_SNR_SIGMA).log()      # (T,), increasing in t

    def sigma_to_t(self, sigma) -> torch.Tensor:
        """Continuous ORIGINAL t for σ: linear interpolation in log σ over the kept steps, clamped."""
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if not sigma.is_floating_point():
            sigma = sigma.to(torch.float64)
        if bool((sigma < 0).any()) or bool(sigma.isnan().any()):
            raise ValueError("sigma must be >= 0 and not NaN")
        log_s = sigma.to(torch.float64).clamp(min=1e-300, max=ZERO_SNR_SIGMA).log()
        t = _interp(log_s, self._log_sigma_table().to(sigma.device),
                    self.timesteps.to(device=sigma.device, dtype=torch.float64))
        return t.to(sigma.dtype)

    def t_to_sigma(self, t) -> torch.Tensor:
        """σ at a continuous ORIGINAL t: linear interpolation of log σ between kept steps, clamped."""
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=torch.float64)
        out_dtype = t.dtype if t.is_floating_point() else torch.float64
        log_s = _interp(t.to(torch.float64), self.timesteps.to(device=t.device, dtype=torch.float64),
                        self._log_sigma_table().to(t.device))
        return log_s.exp().to(out_dtype)

    def __repr__(self) -> str:
        return (f"VPSchedule(T={self.T}, timesteps={self.timesteps[0].item()}..."
                f"{self.timesteps[-1].item()}, alphas_cumprod={self.alphas_cumprod[0].item():.6g}..."
                f"{self.alphas_cumprod[-1].item():.6g})")


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for torch: piecewise-linear, clamped to the end values; xp increasing."""
    if xp.numel() == 1:
        return torch.full_like(x, fp.item(), dtype=fp.dtype)
    xc = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, xc.reshape(-1).contiguous()).reshape(x.shape).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = (xc - x0) / (x1 - x0)
    return f0 + w * (f1 - f0)


def _betas_from_alphas_cumprod(abar: torch.Tensor) -> torch.Tensor:
    """β_i = 1 − ᾱ_i/ᾱ_{i−1}, ᾱ_{−1} = 1 (the inverse of ᾱ = ∏(1−β))."""
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return 1 - abar / prev


def vp_schedule(name: str = "linear", T: int = 1000) -> VPSchedule:
    """`linear` / `linearX` (Ho et al. 2020, scaled by 1000/T as in ADM) or `cosine` (Nichol & Dhariwal 2021, eq. 17)."""
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T={T!r} is invalid; allowed: an integer >= 1")
    if not isinstance(name, str):
        raise ValueError(f"name={name!r} is invalid; allowed: 'linear', 'linearX' (e.g. 'linear0.025'), 'cosine'")
    m = re.fullmatch(r"linear(\d*\.?\d+(?:[eE][-+]?\d+)?)?", name)
    if m:
        end = float(m.group(1)) if m.group(1) else 0.02
        s = 1000.0 / T
        if T == 1:
            betas = torch.tensor([1e-4 * s], dtype=torch.float64)
        else:
            betas = torch.linspace(1e-4 * s, end * s, T, dtype=torch.float64)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"{name} with T={T} gives betas up to {betas.max().item():.4g}; "
                             f"allowed: end·1000/T < 1 (a larger T or a smaller end value)")
    elif name == "cosine":
        s = 0.008
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2             # ᾱ(t)·f(0)
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"name={name!r} is invalid; allowed: 'linear', 'linearX' (e.g. "
                         f"'linear0.025'), 'cosine'")
    return VPSchedule(betas=betas, alphas_cumprod=torch.cumprod(1 - betas, 0))


def zero_terminal_snr(schedule: VPSchedule) -> VPSchedule:
    """Lin et al. 2024, Algorithm 1: shift √ᾱ so the last is 0, rescale so the first is unchanged."""
    sqrt_ab = schedule.alphas_cumprod.sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    if schedule.T < 2 or not first > last:
        raise ValueError(f"schedule={schedule!r} cannot be rescaled; allowed: T >= 2 with "
                         f"decreasing alphas_cumprod")
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    abar = sqrt_ab ** 2
    abar[-1] = 0.0
    return VPSchedule(betas=_betas_from_alphas_cumprod(abar), alphas_cumprod=abar,
                      timesteps=schedule.timesteps)


def space_timesteps(T: int, spec) -> list[int]:
    """ADM `space_timesteps` (Nichol & Dhariwal 2021, §4): the kept step indices in 0..T−1, sorted.

    spec 'ddimN': range(0, T, i) for the smallest stride i in [1, T) that gives exactly N steps.
    Otherwise a count or comma-separated counts ('250', '10,15,20', or a list of ints): the T
    steps are cut into len(counts) sections of T // len(counts) steps, the first T % len(counts)
    of them one step longer, and section k keeps counts[k] of its steps evenly spaced from its
    first to its last: start + round(cur) with cur = 0, then cur += (size − 1)/(count − 1) after
    each, accumulated by repeated float addition and rounded by Python's round (half to even),
    exactly as ADM does it, since at .5 ties that differs from rounding j·stride.
    """
    bad = (f"spec={spec!r} is invalid; allowed: a step count '250', 'ddimN' (stride with exactly "
           f"N steps from 0), or comma-separated section counts '10,15,20' (each <= its section)")
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, (list, tuple)):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in spec):
            raise ValueError(bad)
        spec = ",".join(str(c) for c in spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(bad)
    spec = spec.replace(" ", "")
    if spec.startswith("ddim"):
        if not re.fullmatch(r"ddim\d+", spec):
            raise ValueError(bad)
        n = int(spec[4:])
        for stride in range(1, T):
            if len(range(0, T, stride)) == n:
                return list(range(0, T, stride))
        raise ValueError(f"spec={spec!r}: no integer stride in [1, T) gives exactly {n} steps out "
                         f"of T={T}; allowed: N = ceil(T/stride) for some stride 1 <= stride < T, e.g. "
                         f"{sorted({len(range(0, T, i)) for i in range(1, T)})[-6:]}")
    if not re.fullmatch(r"\d+(,\d+)*", spec):
        raise ValueError(bad)
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(T, len(counts))
    steps, start = set(), 0
    for k, count in enumerate(counts):
        size = size_per + (1 if k < extra else 0)
        if size < count:
            raise ValueError(f"spec={spec!r}: section {k} asks for {count} steps out of its "
                             f"{size} (T={T} cut into {len(counts)} sections); allowed: "
                             f"count <= {size}")
        frac_stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.add(start + round(cur))
            cur += frac_stride
        start += size
    if not steps:
        raise ValueError(f"spec={spec!r} keeps no step; allowed: at least one count >= 1")
    return sorted(steps)


def respace(schedule: VPSchedule, spec) -> VPSchedule:
    """ADM respacing: keep the ᾱ of the chosen steps, recompute β from them, keep the original t."""
    keep = torch.tensor(space_timesteps(schedule.T, spec), dtype=torch.int64)
    abar = schedule.alphas_cumprod[keep]
    return VPSchedule(betas=_betas_from_alphas_cumprod(abar), alphas_cumprod=abar,
                      timesteps=schedule.timesteps[keep])


def sampling_sigmas(schedule: VPSchedule) -> torch.Tensor:
    """Descending σ of the kept steps, then a final 0 (σ = ∞ becomes `ZERO_SNR_SIGMA`); float64."""
    sig = schedule.sigmas.clamp(max=ZERO_SNR_SIGMA).flip(0)
    return torch.cat([sig, sig.new_zeros(1)])


def edm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: σ_i = (σmax^(1/ρ) + i/(n−1)(σmin^(1/ρ) − σmax^(1/ρ)))^ρ, then σ_n = 0; float64."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r} is invalid; allowed: an integer >= 1")
    if not (sigma_min > 0 and math.isfinite(sigma_min)):
        raise ValueError(f"sigma_min={sigma_min!r} is invalid; allowed: a finite value > 0")
    if not (sigma_max >= sigma_min and math.isfinite(sigma_max)):
        raise ValueError(f"sigma_max={sigma_max!r} is invalid; allowed: finite, >= sigma_min={sigma_min}")
    if not rho > 0:
        raise ValueError(f"rho={rho!r} is invalid; allowed: a value > 0")
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + i / (n - 1) * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def snr_to_t(schedule: VPSchedule, snr: float) -> int:
    """First ORIGINAL t whose SNR_t < snr (Luhman & Luhman's split: t < 396 ⇔ SNR_t >= 0.25, linear T=1000)."""
    if not snr > 0:
        raise ValueError(f"snr={snr!r} is invalid; allowed: a value > 0")
    below = (schedule.snr < snr).nonzero()
    if below.numel() == 0:
        raise ValueError(f"snr={snr!r}: no step of the schedule has SNR below it (min SNR "
                         f"{schedule.snr.min().item():.4g}); allowed: snr > min SNR")
    return int(schedule.timesteps[below[0, 0]])
