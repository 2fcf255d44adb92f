"""EDM (Karras et al. 2022): EDMPrecond + EDMLoss, Heun (Algorithm 1) or Euler over the ρ grid."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pdlib.methods.base import Method, MethodOptions, register
from pdlib.precond import SIGMA_DATA

__all__ = ["EDMOptions", "EDMMethod"]


@dataclass(frozen=True)
class EDMOptions(MethodOptions):
    """Options of the EDM method (Karras et al. 2022, Table 1)."""
    name: str = "edm"                       # the method
    sigma_data: float = SIGMA_DATA          # expected standard deviation of the data (0.5)
    P_mean: float = -1.2                    # training: ln σ ~ N(P_mean, P_std²)
    P_std: float = 1.2                      # training: standard deviation of ln σ
    sigma_min: float = 0.002                # sampling: smallest σ of the ρ grid
    sigma_max: float = 80.0                 # sampling: largest σ of the ρ grid
    rho: float = 7.0                        # sampling: ρ of the grid (σ_max^(1/ρ) … σ_min^(1/ρ), linear)

    def validate(self) -> None:
        from pdlib._checks import check, is_num
        for key in ("sigma_data", "P_std", "sigma_min", "sigma_max", "rho"):
            check(is_num(getattr(self, key)) and getattr(self, key) > 0, f"method.{key}",
                  getattr(self, key), "a finite number > 0")
        check(is_num(self.P_mean), "method.P_mean", self.P_mean, "a finite number")
        check(self.sigma_max > self.sigma_min, "method.sigma_max", self.sigma_max,
              f"a value > method.sigma_min={self.sigma_min}")


@register("edm", EDMOptions)
class EDMMethod(Method):
    """EDM: D = c_skip·x + c_out·F(c_in·x, c_noise); λ(σ)-weighted x0 loss; Heun sampling."""

    samplers = ("heun", "euler")

    def net_kwargs(self):
        return {**super().net_kwargs(), "learn_sigma": False}

    def build_denoiser(self, net):
        from pdlib.precond import EDMPrecond
        return EDMPrecond(net, sigma_data=self.opts.sigma_data)

    def build_loss(self):
        from pdlib.losses import EDMLoss
        o = self.opts
        return EDMLoss(P_mean=o.P_mean, P_std=o.P_std, sigma_data=o.sigma_data)

    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0,
               device=None, callback=None, sampler: str = "heun", **kwargs):
        """EDM Algorithm 1 (Heun, 2N−1 evaluations) or Euler over edm_sigmas(steps)."""
        return self._sample_canvas(n, self.img_shape, None, generator, steps, class_labels,
                                   guidance, device, callback, sampler, **kwargs)

    def _sample_canvas(self, n, shape, extra, generator, steps, class_labels, guidance, device,
                       callback, sampler, **kwargs):
        """sample() on a canvas of `shape` (C, H, W), with `extra` input channels (E, H, W) shared
        by the n images (or None): what a method with coordinate channels samples with."""
        from pdlib import samplers
        from pdlib.schedules import edm_sigmas
        fns = {"heun": samplers.edm_sample, "euler": samplers.euler_sample}
        if sampler not in fns:
            raise ValueError(f"sampler={sampler!r} is invalid; allowed: {sorted(fns)}")
        D, cond, device = self._sample_setup(n, generator, class_labels, guidance, device)
        if extra is not None:
            cond["extra"] = extra.to(device).expand(n, *extra.shape)         # (n, E, H, W)
        steps = steps or self.default_sample_steps
        o = self.opts
        sigmas = edm_sigmas(steps, o.sigma_min, o.sigma_max, o.rho).to(device)
        x = self._noise(n, sigmas, generator, device, vp=False, shape=shape)
        with torch.no_grad():
            x = fns[sampler](D, x, sigmas, generator=generator, callback=callback, cond=cond, **kwargs)
        return x.float().clamp(-1, 1)
