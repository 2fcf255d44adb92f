"""Denoising losses: EDM's, and the VP (DDPM / ADM / Luhman) loss with weightings and the hybrid VLB.

A loss is `loss_fn(model, x0, generator=None, **cond) -> [B]` per-sample losses (mean over pixels);
the training loop averages them. Which model each loss takes:

* `EDMLoss` takes the denoiser `EDMPrecond` (it only needs D(x, σ)).
* `BlurLoss` (Relay Diffusion's stage 2, Teng et al. 2024) takes `EDMPrecond` too: blurred,
  block-noised inputs, the clean x0 as target.
* `TileLoss` (patch-by-patch, Arakawa et al. 2023) takes either, and the tiles to train on.
* `VPLoss` takes a `VPPrecond` (anything with `.predict(x_t, t, class_labels, extra)` and
  `.prediction` / `.learn_sigma`): ε- and v-targets need the raw network output, not D.

Weightings λ_t (`loss_weight`) are always defined in x0-space, as in Luhman & Luhman 2022:
loss = mean λ_t·(x0 − x̂0)². Useful identities: ‖ε − ε̂‖² = SNR·‖x0 − x̂0‖² and
‖v − v̂‖² = (SNR+1)·‖x0 − x̂0‖², so weighting 'snr' is the ε-loss and 'snr+1' the v-loss whatever
the network predicts. The names 'none' / 'eps' mean "weight 1 in the network's own target space":
`VPLoss` then computes the plain MSE against ε, x0 or v (Ho et al.'s L_simple for ε).
"""

from __future__ import annotations

import math
import re

import torch

from pdlib.precond import PREDICTIONS, SIGMA_DATA, prediction_target, x0_from_prediction
from pdlib.schedules import VPSchedule

__all__ = [
    "WEIGHTINGS", "loss_weight", "EDMLoss", "BlurLoss", "VPLoss", "TileLoss", "uniform_t", "uniform_t_in_snr_interval",
    "drop_labels", "normal_kl", "discretized_gaussian_log_likelihood", "vb_terms_bpd",
]

WEIGHTINGS = ("none", "eps", "sqrt_snr", "p2", "snr", "snr+1", "truncated_snr", "min_snr_<γ>", "edm")


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)                 # (B,)


def _device_of(generator: torch.Generator | None, default) -> torch.device:
    return generator.device if generator is not None else torch.device(default)


# ----------------------------------------------------------------------------------------------
# Weightings.

def loss_weight(name: str, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x0-space weight λ_t(ᾱ) (Luhman & Luhman 2022, §3.3; Hang et al. 2023; Karras et al. 2022)."""
    abar = alphas_cumprod
    if not isinstance(abar, torch.Tensor):
        abar = torch.as_tensor(abar, dtype=torch.float64)
    if not abar.is_floating_point():
        abar = abar.to(torch.float64)
    snr = abar / (1 - abar)                                        # SNR = 1/σ²
    if name in ("none", "eps"):
        return torch.ones_like(abar)
    if name == "sqrt_snr":
        return snr.sqrt()
    if name == "p2":                                               # Choi et al. 2022, k=1, γ=½
        return snr * (1 - abar).sqrt()                             # = SNR/√(1+SNR)
    if name == "snr":
        return snr
    if name == "snr+1":
        return snr + 1
    if name == "truncated_snr":
        return snr.clamp(min=1.0)
    m = re.fullmatch(r"min_snr_(\d*\.?\d+)", name) if isinstance(name, str) else None
    if m:                                                          # min-SNR-γ: min(SNR, γ) in x0-space
        gamma = float(m.group(1))
        if gamma <= 0:
            raise ValueError(f"name={name!r}: γ must be > 0")
        return snr.clamp(max=gamma)
    if name == "edm":                                              # (σ²+σd²)/(σ·σd)², σd = SIGMA_DATA
        return 1 / SIGMA_DATA ** 2 + snr                           # = 1/σd² + 1/σ² (finite at σ = ∞)
    raise ValueError(f"name={name!r} is invalid; allowed: {WEIGHTINGS} (e.g. 'min_snr_5')")


# ----------------------------------------------------------------------------------------------
# EDM.

class EDMLoss:
    """Karras et al. 2022, eq. 8 and Table 1: ln σ ~ N(P_mean, P_std²), λ(σ) = (σ²+σd²)/(σ·σd)²."""

    def __init__(self,
        P_mean: float = -1.2,           # mean of ln σ during training
        P_std: float = 1.2,             # standard deviation of ln σ during training
        sigma_data: float = SIGMA_DATA, # expected standard deviation of the training data
    ):
        if not P_std > 0:
            raise ValueError(f"P_std={P_std!r} is invalid; allowed: a value > 0")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data={sigma_data!r} is invalid; allowed: a value > 0")
        self.P_mean, self.P_std, self.sigma_data = float(P_mean), float(P_std), float(sigma_data)

    def sample_sigma(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """σ = exp(P_mean + P_std·n), n ~ N(0, 1); float32 [B]."""
        n = torch.randn(batch, generator=generator, device=_device_of(generator, device))
        return (n * self.P_std + self.P_mean).exp().to(device)

    def __call__(self, denoiser, x0: torch.Tensor, generator: torch.Generator | None = None,
                 **cond) -> torch.Tensor:
        """λ(σ)·mean‖D(x0 + σε, σ) − x0‖² per sample (EDM sums over pixels; we average: a constant factor)."""
        B = x0.shape[0]
        sigma = self.sample_sigma(B, generator, x0.device)                       # (B,)
        s = sigma.reshape(-1, *[1] * (x0.ndim - 1))
        weight = (s ** 2 + self.sigma_data ** 2) / (s * self.sigma_data) ** 2
        eps = torch.randn(x0.shape, generator=generator, device=_device_of(generator, x0.device),
                          dtype=x0.dtype).to(x0.device)
        D = denoiser(x0 + s * eps, sigma, **cond)                                 # (B, C, H, W)
        return _mean_flat(weight * (D - x0) ** 2)


class BlurLoss:
    """Relay Diffusion's stage-2 loss (Teng et al. 2024, pdlib.blur eqs. 7.1–7.4): t ~ U(t_min, 1),
    x_t = blur(x0, σ_B(t)) + σ(t)·(ε + s_b·ε_block), and λ(σ)·mean‖D(x_t, σ) − x0‖² with EDM's
    λ(σ) = (σ²+σd²)/(σ·σd)² capped at max_weight. D is EDM-preconditioned and sees only σ: the
    blur level is a function of σ."""

    def __init__(self, blur, s_block: float = 0.15, sigma_data: float = SIGMA_DATA,
                 t_min: float = 1e-3, max_weight: float = 1e5):
        from pdlib._checks import check, is_num
        check(is_num(s_block) and s_block >= 0, "s_block", s_block, "a number >= 0")
        check(is_num(sigma_data) and sigma_data > 0, "sigma_data", sigma_data, "a number > 0")
        check(is_num(t_min) and 0 < t_min < 1, "t_min", t_min, "a number in (0, 1)")
        check(is_num(max_weight) and max_weight > 0, "max_weight", max_weight, "a number > 0")
        self.blur, self.s_block, self.sigma_data = blur, float(s_block), float(sigma_data)
        self.t_min, self.max_weight = float(t_min), float(max_weight)

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None):
        """(x_t, σ) of eq. 7.4 for images x0 (B, C, H, W) at times t (B,)."""
        from pdlib.blur import block_noise
        dev = _device_of(generator, x0.device)
        sigma = self.blur.sigma(t).to(dtype=x0.dtype, device=x0.device)               # (B,)
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        if self.s_block > 0:
            noise = noise + self.s_block * block_noise(x0.shape, self.blur.up_scale, generator,
                                                       dev, x0.dtype)
        blurred = self.blur.blur(x0, self.blur.blur_sigma(t).to(x0.device))
        return blurred + sigma.reshape(-1, 1, 1, 1) * noise.to(x0.device), sigma

    def __call__(self, denoiser, x0: torch.Tensor, generator: torch.Generator | None = None,
                 **cond) -> torch.Tensor:
        B = x0.shape[0]
        u = torch.rand(B, generator=generator, device=_device_of(generator, x0.device),
                       dtype=torch.float64).to(x0.device)
        t = self.t_min + (1 - self.t_min) * u
        x_t, sigma = self.noisy(x0, t, generator)
        s = sigma.reshape(-1, 1, 1, 1)
        weight = ((s ** 2 + self.sigma_data ** 2) / (s * self.sigma_data) ** 2).clamp_max(self.max_weight)
        D = denoiser(x_t, sigma, **cond)
        return _mean_flat(weight * (D - x0) ** 2)


class TileLoss:
    """Arakawa et al. 2023: the loss of chosen tiles of whole images. The WHOLE image is noised
    (one σ or t per image), each chosen tile is denoised from its own noisy pixels, its position
    and (with `gcc`) the whole noisy image average-pooled to the tile size, scaled as the net's
    image input (so a VP net sees pooled x_t). `kind='vp'`: the release's ε-prediction with an L1
    (or L2) loss on the network's target (a `VPPrecond`, t ~ U{0..T−1}); `kind='edm'`: EDM's
    λ(σ)-weighted x0 loss (an `EDMPrecond`). Returns one loss per tile, image-major."""

    def __init__(self,
        grid: int,                      # N of the N×N tiles
        kind: str = "vp",               # 'vp' (ε/x0/v target, schedule) or 'edm'
        gcc: bool = True,               # append the pooled whole noisy image as extra channels
        position: bool = True,          # pass each tile's index to the net
        schedule: VPSchedule | None = None,   # kind='vp': the training schedule
        prediction: str = "eps",        # kind='vp': the network's target
        norm: str = "l1",               # kind='vp': 'l1' (the release) or 'l2' on the target
        P_mean: float = -1.2,           # kind='edm': ln σ ~ N(P_mean, P_std²)
        P_std: float = 1.2,
        sigma_data: float = SIGMA_DATA, # kind='edm'
    ):
        if kind not in ("vp", "edm"):
            raise ValueError(f"kind={kind!r} is invalid; allowed: 'vp' or 'edm'")
        if kind == "vp" and not isinstance(schedule, VPSchedule):
            raise ValueError(f"schedule={schedule!r} is invalid; allowed: a pdlib.schedules.VPSchedule (kind='vp')")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} is invalid; allowed: {PREDICTIONS}")
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm={norm!r} is invalid; allowed: 'l1' or 'l2'")
        self.grid, self.kind, self.gcc, self.position = int(grid), kind, bool(gcc), bool(position)
        self.schedule, self.prediction, self.norm = schedule, prediction, norm
        self.edm = EDMLoss(P_mean, P_std, sigma_data) if kind == "edm" else None
        self.t_sampler = uniform_t(schedule.T) if kind == "vp" else None

    def _pick(self, x: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        """The chosen tiles of whole images: x [m, C, H, W], tiles int64 [m, k] -> [m·k, C, h, w]."""
        from pdlib.patching import to_tiles
        t = to_tiles(x, self.grid)                                            # (m, N², C, h, w)
        m, k = tiles.shape
        return t[torch.arange(m, device=x.device)[:, None], tiles].reshape(m * k, *t.shape[2:])

    def _cond(self, noisy, scale, tiles, class_labels):
        from pdlib.patching import global_content
        k = tiles.shape[1]
        cond = {}
        if class_labels is not None:
            cond["class_labels"] = class_labels.repeat_interleave(k, 0)
        if self.gcc:
            g = global_content(noisy, self.grid) * scale.reshape(-1, 1, 1, 1).to(noisy.dtype)
            cond["extra"] = g.repeat_interleave(k, 0)                         # (m·k, C, h, w)
        if self.position:
            cond["position"] = tiles.reshape(-1)
        return cond

    def __call__(self, precond, x0: torch.Tensor, generator: torch.Generator | None = None,
                 tiles: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-tile losses [m·k] of the tiles `tiles` (int64 [m, k]; None = every tile) of x0 [m, C, H, W]."""
        m = x0.shape[0]
        N2 = self.grid ** 2
        if tiles is None:
            tiles = torch.arange(N2, device=x0.device).expand(m, N2)
        if tiles.ndim != 2 or tiles.shape[0] != m or bool((tiles < 0).any()) or bool((tiles >= N2).any()):
            raise ValueError(f"tiles has shape {tuple(tiles.shape)}; allowed: int64 [{m}, k] in [0, {N2})")
        k = tiles.shape[1]
        dev = _device_of(generator, x0.device)
        if self.kind == "edm":
            sigma = self.edm.sample_sigma(m, generator, x0.device)              # (m,)
            s = sigma.reshape(-1, 1, 1, 1)
            weight = (s ** 2 + self.edm.sigma_data ** 2) / (s * self.edm.sigma_data) ** 2
            eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
            y = x0 + s * eps                                                    # whole noisy images
            cond = self._cond(y, precond.input_scale(sigma.to(torch.float64)), tiles, class_labels)
            D = precond(self._pick(y, tiles), sigma.repeat_interleave(k), **cond)
            return _mean_flat(weight.repeat_interleave(k, 0) * (D - self._pick(x0, tiles)) ** 2)
        if not hasattr(precond, "predict"):
            raise ValueError(f"TileLoss(kind='vp') needs a VPPrecond (with .predict); got {type(precond).__name__}")
        t = self.t_sampler(m, generator).to(x0.device)                           # (m,)
        abar = self.schedule.alphas_cumprod.to(x0.device)[t].reshape(-1, 1, 1, 1).to(x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps                          # whole images
        cond = self._cond(x_t, torch.ones(m, dtype=x0.dtype, device=x0.device), tiles, class_labels)
        t_orig = self.schedule.timesteps.to(x0.device)[t].repeat_interleave(k)
        pred, _ = precond.predict(self._pick(x_t, tiles), t_orig, **cond)
        target = prediction_target(self._pick(x0, tiles), self._pick(eps, tiles),
                                   abar.repeat_interleave(k, 0), self.prediction)
        err = (target - pred.to(x0.dtype))
        return _mean_flat(err.abs() if self.norm == "l1" else err ** 2)


# ----------------------------------------------------------------------------------------------
# Timestep samplers: callable(B, generator) -> int64 [B] step indices of the schedule.

def uniform_t(T: int):
    """t ~ U{0, …, T−1} (Ho et al. 2020, Algorithm 1)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T={T!r} is invalid; allowed: an integer >= 1")

    def sample(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, T, (batch,), generator=generator, device=_device_of(generator, "cpu"))
    return sample


def uniform_t_in_snr_interval(schedule: VPSchedule, snr_hi: float, snr_lo: float):
    """t uniform over the steps with snr_hi > SNR_t >= snr_lo (Luhman & Luhman's `uniform_split_k`)."""
    if not snr_hi > snr_lo or snr_lo < 0:
        raise ValueError(f"(snr_hi, snr_lo)=({snr_hi!r}, {snr_lo!r}) is invalid; allowed: "
                         f"snr_hi > snr_lo >= 0 (snr_hi may be inf)")
    snr = schedule.snr
    allowed = ((snr < snr_hi) & (snr >= snr_lo)).nonzero().reshape(-1)    # (K,) step indices
    if allowed.numel() == 0:
        raise ValueError(f"no step has {snr_hi} > SNR >= {snr_lo} (SNR ranges over "
                         f"[{snr.min().item():.4g}, {snr.max().item():.4g}]); allowed: an interval "
                         f"that contains at least one step")

    def sample(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        dev = _device_of(generator, "cpu")
        k = torch.randint(0, allowed.numel(), (batch,), generator=generator, device=dev)
        return allowed.to(dev)[k]
    sample.allowed = allowed
    return sample


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance: label dropout (Ho & Salimans 2022).

def drop_labels(labels: torch.Tensor, p: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by `null_label` with probability p (independently); returns a new tensor."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p!r} is invalid; allowed: 0 <= p <= 1")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels has dtype {labels.dtype}; allowed: integer labels")
    u = torch.rand(labels.shape, generator=generator, device=_device_of(generator, labels.device))
    return torch.where(u.to(labels.device) < p, torch.full_like(labels, null_label), labels)


# ----------------------------------------------------------------------------------------------
# Variational bound terms (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, §3.1), in bits per dim.

def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(μ1, e^{logvar1}) ‖ N(μ2, e^{logvar2})) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp()
                  + (mean1 - mean2) ** 2 * (-logvar2).exp())


def _log_sub_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(e^a − e^b) for a >= b, without cancellation. The clamp keeps it finite when a ≈ b: it must
    be representable (1 − 1e-15 rounds to 1 in float32, and a −inf here, even in the branch a
    torch.where discards, turns every gradient of the batch into NaN)."""
    return a + torch.log1p(-torch.exp(b - a).clamp(max=1 - torch.finfo(a.dtype).eps))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        bins: int = 256) -> torch.Tensor:
    """log P(x) of data in [−1, 1] on `bins` levels under N(mean, e^{2·log_scale}); edge bins open (Ho et al. 2020, eq. 13)."""
    half = 1.0 / (bins - 1)                                        # half a bin width, 2/(bins−1)/2
    inv_s = (-log_scale).exp()
    upper = (x - mean + half) * inv_s                              # standardized bin edges
    lower = (x - mean - half) * inv_s
    log_ndtr = torch.special.log_ndtr
    # log(Φ(upper) − Φ(lower)), on the tail where it does not cancel
    inner = torch.where(lower > 0, _log_sub_exp(log_ndtr(-lower), log_ndtr(-upper)),
                        _log_sub_exp(log_ndtr(upper), log_ndtr(lower)))
    edge = 1 - half
    return torch.where(x < -edge, log_ndtr(upper), torch.where(x > edge, log_ndtr(-lower), inner))


def vb_terms_bpd(schedule: VPSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 x0_hat: torch.Tensor, var_values: torch.Tensor) -> torch.Tensor:
    """L_t (bits/dim, [B]): KL(q(x_{t−1}|x_t,x0) ‖ p(x_{t−1}|x_t)) for t > 0, −log p(x0|x1) for t = 0."""
    sh = (-1, *[1] * (x0.ndim - 1))
    abar = schedule.alphas_cumprod.to(x0.device)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    betas = schedule.betas.to(x0.device)
    post_var = schedule.posterior_variance.to(x0.device)           # β̃_t
    post_logvar = torch.cat([post_var[1:2], post_var[1:]]).log()   # clipped at t = 0 (β̃_0 = 0)
    c0 = betas * abar_prev.sqrt() / (1 - abar)                     # posterior mean coefficient on x0
    ct = (1 - betas).sqrt() * (1 - abar_prev) / (1 - abar)         # … and on x_t

    def g(v):
        return v[t].reshape(sh).to(x0.dtype)
    true_mean = g(c0) * x0 + g(ct) * x_t
    model_mean = g(c0) * x0_hat + g(ct) * x_t
    frac = (var_values + 1) / 2                                    # [−1, 1] → [0, 1]
    model_logvar = frac * g(betas.log()) + (1 - frac) * g(post_logvar)
    kl = _mean_flat(normal_kl(true_mean, g(post_logvar), model_mean, model_logvar)) / math.log(2.0)
    first = (t.to(x0.device) == 0).nonzero().squeeze(1)           # the decoder term only where t = 0
    if len(first) == 0:
        return kl
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x0[first], model_mean[first],
                                                          0.5 * model_logvar[first])) / math.log(2.0)
    return kl.index_put((first,), nll)


# ----------------------------------------------------------------------------------------------
# VP loss.

class VPLoss:
    """DDPM/ADM/Luhman loss: mean λ_t(x0 − x̂0)² (or native-target MSE for 'none'), + λ_vlb·T·L_t with learn_sigma."""

    def __init__(self,
        schedule: VPSchedule,           # the training schedule (T steps; t is drawn among them)
        prediction: str = "eps",        # what the network predicts: 'eps', 'x0' or 'v'
        weighting: str = "none",        # 'none'/'eps': plain MSE on the target; else x0-space λ_t
        learn_sigma: bool = False,      # add the VLB term (hybrid loss, Nichol & Dhariwal 2021)
        t_sampler=None,                 # callable(B, generator) -> int64 [B]; default U{0..T−1}
        lambda_vlb: float = 1e-3,       # hybrid weight: L = L_simple + λ_vlb·T·L_t (= ADM's vb·T/1000)
    ):
        if not isinstance(schedule, VPSchedule):
            raise ValueError(f"schedule={schedule!r} is invalid; allowed: a pdlib.schedules.VPSchedule")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} is invalid; allowed: {PREDICTIONS}")
        loss_weight(weighting, torch.tensor([0.5]))                # validates the name
        if not lambda_vlb >= 0:
            raise ValueError(f"lambda_vlb={lambda_vlb!r} is invalid; allowed: a value >= 0")
        self.schedule, self.prediction, self.weighting = schedule, prediction, weighting
        self.learn_sigma, self.lambda_vlb = bool(learn_sigma), float(lambda_vlb)
        self.t_sampler = t_sampler if t_sampler is not None else uniform_t(schedule.T)

    def __call__(self, precond, x0: torch.Tensor, generator: torch.Generator | None = None,
                 class_labels: torch.Tensor | None = None, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss [B] for a `VPPrecond` (its raw `.predict` output is used, not D)."""
        if not hasattr(precond, "predict"):
            raise ValueError(f"VPLoss needs a VPPrecond (with .predict); got {type(precond).__name__}")
        for attr in ("prediction", "learn_sigma"):
            if hasattr(precond, attr) and getattr(precond, attr) != getattr(self, attr):
                raise ValueError(f"precond.{attr}={getattr(precond, attr)!r} but the loss has "
                                 f"{attr}={getattr(self, attr)!r}; allowed: the same value")
        B = x0.shape[0]
        t = self.t_sampler(B, generator).to(x0.device)                           # (B,) step index
        sh = (-1, *[1] * (x0.ndim - 1))
        abar = self.schedule.alphas_cumprod.to(x0.device)[t].reshape(sh).to(x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=_device_of(generator, x0.device),
                          dtype=x0.dtype).to(x0.device)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps                          # (B, C, H, W)
        t_orig = self.schedule.timesteps.to(x0.device)[t]
        pred, values = precond.predict(x_t, t_orig, class_labels, extra)
        pred = pred.to(x0.dtype)
        if self.weighting in ("none", "eps"):
            loss = _mean_flat((prediction_target(x0, eps, abar, self.prediction) - pred) ** 2)
        else:
            x0_hat = x0_from_prediction(pred, x_t, abar, self.prediction)
            lam = loss_weight(self.weighting, abar.reshape(-1)).reshape(sh)
            loss = _mean_flat(lam * (x0 - x0_hat) ** 2)
        if self.learn_sigma:
            x0_hat = x0_from_prediction(pred.detach(), x_t, abar, self.prediction)  # mean: no gradient
            vb = vb_terms_bpd(self.schedule, x0, x_t, t, x0_hat, values.to(x0.dtype))
            loss = loss + self.lambda_vlb * self.schedule.T * vb
        return loss
