"""Preconditioners: wrap a network F(x_in, noise_labels, class_labels) into a denoiser D(x, σ, **cond).

`EDMPrecond` is Karras et al. 2022 (Table 1, "Ours"); `VPPrecond` adapts a discrete-time DDPM-style
network that predicts ε, x0 or v from the VP state x_t and its ORIGINAL integer timestep t.
The pure functions below convert between the three parameterizations; the losses reuse them.

Dtypes: the preconditioning coefficients are computed in float64 from σ; the network runs in its
own parameter dtype (float32 usually); the skip connection and the output are in the dtype of `x`,
so a float64 sampler keeps float64 precision everywhere but inside F.
"""

from __future__ import annotations

import torch
from torch import nn

from pdlib.schedules import VPSchedule

__all__ = [
    "EDMPrecond", "VPPrecond", "PREDICTIONS", "x0_from_prediction", "eps_from_x0",
    "prediction_target", "sigma_batch", "SIGMA_DATA",
]

PREDICTIONS = ("eps", "x0", "v")

# σ_data, the expected standard deviation of the training data (Karras et al. 2022, Table 1): the
# default of EDMPrecond, EDMLoss and the 'edm' weighting, so that they can only agree.
SIGMA_DATA = 0.5


# ----------------------------------------------------------------------------------------------
# Parameterizations (Ho et al. 2020 ε; x0 "xstart"; Salimans & Ho 2022 v = √ᾱ·ε − √(1−ᾱ)·x0).
# `alpha_bar` broadcasts against the images, e.g. shape [B, 1, 1, 1].

def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is invalid; allowed: {PREDICTIONS}")


def x0_from_prediction(pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor,
                       prediction: str) -> torch.Tensor:
    """x̂0 from a network output: ε → (x_t − √(1−ᾱ)ε̂)/√ᾱ; x0 → itself; v → √ᾱ·x_t − √(1−ᾱ)·v̂."""
    _check_prediction(prediction)
    if prediction == "x0":
        return pred
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction == "eps":
        return (x_t - b * pred) / a
    return a * x_t - b * pred


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε̂ = (x_t − √ᾱ·x̂0)/√(1−ᾱ) (Ho et al. 2020, eq. 4 solved for ε)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def prediction_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor,
                      prediction: str) -> torch.Tensor:
    """The regression target of a parameterization: ε, x0, or v = √ᾱ·ε − √(1−ᾱ)·x0."""
    _check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


# ----------------------------------------------------------------------------------------------
# Shared helpers.

def sigma_batch(sigma, batch: int, device) -> torch.Tensor:
    """σ as a float64 tensor [B] on `device`, from a float, a 0-d or 1-element tensor, or a [B] tensor.

    The one place σ is normalised: the preconditioners, the samplers and the denoiser wrappers
    all call it. A Python number is checked in Python, so no device synchronisation happens.
    """
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        v = float(sigma)
        if not v >= 0:                                                   # also rejects NaN
            raise ValueError(f"sigma={v!r} is invalid; allowed: >= 0 and not NaN")
        return torch.full((batch,), v, dtype=torch.float64, device=device)
    s = sigma if isinstance(sigma, torch.Tensor) else torch.as_tensor(sigma, dtype=torch.float64)
    s = s.to(device)
    if s.is_complex() or s.dtype == torch.bool:
        raise ValueError(f"sigma has dtype {s.dtype}; allowed: a real float or tensor")
    s = s.to(torch.float64)
    if s.ndim == 0:
        s = s.expand(batch)
    s = s.reshape(-1)
    if s.numel() == 1 and batch != 1:
        s = s.expand(batch)
    if s.numel() != batch:
        raise ValueError(f"sigma has {s.numel()} entries; allowed: a scalar or one per sample "
                         f"(batch size {batch})")
    if bool((s < 0).any()) or bool(s.isnan().any()):
        raise ValueError("sigma must be >= 0 and not NaN")
    return s


def _net_dtype(net: nn.Module, default: torch.dtype) -> torch.dtype:
    for p in net.parameters() if isinstance(net, nn.Module) else ():
        if p.is_floating_point():
            return p.dtype
    return default


def _net_input(x_in: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    if extra is None:
        return x_in
    if extra.ndim != x_in.ndim or extra.shape[0] != x_in.shape[0] or extra.shape[2:] != x_in.shape[2:]:
        raise ValueError(f"extra has shape {tuple(extra.shape)}; allowed: [B, E, H, W] matching "
                         f"x {tuple(x_in.shape)} in B, H and W")
    return torch.cat([x_in, extra.to(x_in.dtype)], dim=1)      # (B, C + E, H, W)


def _net_call(net, x_in, noise_labels, class_labels, position):
    """F(x_in, noise_labels, class_labels), plus positions= only when given (tiles of Arakawa et al.)."""
    if position is None:
        return net(x_in, noise_labels, class_labels)
    return net(x_in, noise_labels, class_labels, positions=position)


def _check_x(x: torch.Tensor, where: str = "") -> None:
    """x must be a float tensor [B, C, ...] (the samplers pass `where`, e.g. 'at noise level sigmas[0]')."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"x has shape {tuple(getattr(x, 'shape', ()))}; allowed: a float tensor "
                         f"[B, C, ...]{' ' + where if where else ''}")


# ----------------------------------------------------------------------------------------------
# EDM.

class EDMPrecond(nn.Module):
    """Karras et al. 2022, eq. 7 and Table 1: D(x, σ) = c_skip·x + c_out·F(c_in·x, c_noise)."""

    def __init__(self,
        net: nn.Module,                 # F(x_in, noise_labels, class_labels) -> [B, C, H, W]
        sigma_data: float = SIGMA_DATA, # expected standard deviation of the training data
    ):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data={sigma_data!r} is invalid; allowed: a value > 0")
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_skip, c_out, c_in, c_noise) for σ (float64 in, float64 out)."""
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """The factor c_in(σ) the net's image input carries: what conditioning built from x (the
        global content of a tile) is multiplied by to enter the net on the same scale."""
        return 1 / (sigma ** 2 + self.sigma_data ** 2).sqrt()

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                extra: torch.Tensor | None = None, position: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) at noise σ; `extra` channels are appended AFTER the c_in scaling;
        `position` (int64 [B]) is the tile index, for a net with num_positions."""
        _check_x(x)
        s = sigma_batch(sigma, x.shape[0], x.device)                     # (B,) float64
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, *[1] * (x.ndim - 1)) for c in self.coefficients(s))
        dtype = _net_dtype(self.net, x.dtype)
        x_in = _net_input((c_in * x).to(dtype), extra)                   # (B, C + E, H, W)
        F_x = _net_call(self.net, x_in, c_noise.reshape(-1).to(dtype), class_labels, position)
        if F_x.shape != x.shape:
            raise ValueError(f"net output has shape {tuple(F_x.shape)}; allowed: {tuple(x.shape)} "
                             f"(same as x)")
        return (c_skip.to(x.dtype) * x + c_out.to(x.dtype) * F_x.to(x.dtype))


# ----------------------------------------------------------------------------------------------
# VP (DDPM / ADM / Luhman / FPDM networks).

class VPPrecond(nn.Module):
    """A discrete-time VP network in σ-space: x_t = x/√(1+σ²), t = schedule.sigma_to_t(σ), output → x̂0."""

    def __init__(self,
        net: nn.Module,                 # F(x_t [+ extra], t, class_labels) -> C (or 2C) channels
        schedule: VPSchedule,           # the TRAINING schedule; maps σ to the original t
        prediction: str = "eps",        # what F predicts: 'eps', 'x0' or 'v'
        learn_sigma: bool = False,      # F also outputs C channels of variance interpolation v ∈ [−1, 1]
    ):
        super().__init__()
        _check_prediction(prediction)
        if not isinstance(schedule, VPSchedule):
            raise ValueError(f"schedule={schedule!r} is invalid; allowed: a pdlib.schedules.VPSchedule")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.learn_sigma = bool(learn_sigma)

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """The factor √ᾱ = 1/√(1+σ²) from σ-space x to the VP state x_t the net sees: what
        conditioning built from x (a tile's global content) is multiplied by."""
        return 1 / (1 + sigma ** 2).sqrt()

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
                extra: torch.Tensor | None = None,
                position: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw network output on the VP state: (prediction [B, C, ...], variance values in [−1, 1] or None)."""
        _check_x(x_t)
        C = x_t.shape[1]
        dtype = _net_dtype(self.net, x_t.dtype)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).to(dtype)
        out = _net_call(self.net, _net_input(x_t.to(dtype), extra), t, class_labels, position)
        expected = (x_t.shape[0], 2 * C if self.learn_sigma else C, *x_t.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(f"net output has shape {tuple(out.shape)}; allowed: {expected} "
                             f"(learn_sigma={self.learn_sigma})")
        if self.learn_sigma:
            return out[:, :C], out[:, C:]
        return out, None

    def _x0_and_values(self, x, sigma, class_labels, extra, position=None):
        _check_x(x)
        s = sigma_batch(sigma, x.shape[0], x.device)                     # (B,) float64
        abar = (1 / (1 + s ** 2)).reshape(-1, *[1] * (x.ndim - 1))       # (B, 1, 1, 1)
        x_t = x * abar.sqrt().to(x.dtype)                                # VP state
        pred, values = self.predict(x_t, self.schedule.sigma_to_t(s), class_labels, extra, position)
        x0 = x0_from_prediction(pred.to(x.dtype), x_t, abar.to(x.dtype), self.prediction)
        return x0, values

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                extra: torch.Tensor | None = None, position: torch.Tensor | None = None) -> torch.Tensor:
        """x̂0 = D(x, σ): x (B, C, H, W) in σ-space."""
        return self._x0_and_values(x, sigma, class_labels, extra, position)[0]

    def forward_with_variance(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                              extra: torch.Tensor | None = None,
                              position: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0, v) with v = (out+1)/2 ∈ [0, 1]: log σ² = v·log β + (1−v)·log β̃ (Nichol & Dhariwal 2021, eq. 15)."""
        if not self.learn_sigma:
            raise ValueError("forward_with_variance needs learn_sigma=True; allowed: a VPPrecond "
                             "built with learn_sigma=True")
        x0, values = self._x0_and_values(x, sigma, class_labels, extra, position)
        return x0, ((values.to(x.dtype) + 1) / 2)
