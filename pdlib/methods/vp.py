"""VP diffusion: DDPM / improved DDPM / ADM (Ho et al. 2020; Nichol & Dhariwal 2021), with SNR
splitting (Luhman & Luhman 2022, §3.4) as an option: `snr_interval` trains one model of a split
on the steps t with hi > SNR_t ≥ lo (`pdlib.methods.split.SplitMethod` composes the models)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pdlib.methods.base import Method, MethodOptions, register

__all__ = ["VPOptions", "VPMethod"]

PREDICTIONS = ("eps", "x0", "v")


@dataclass(frozen=True)
class VPOptions(MethodOptions):
    """Options of a VP (DDPM-style) method."""
    name: str = "vp"                        # the method
    prediction: str = "eps"                 # network target: 'eps' | 'x0' | 'v'
    weighting: str = "none"                 # loss weighting λ_t (pdlib.losses.WEIGHTINGS; 'none' = MSE on the target)
    schedule: str = "linear"                # noise schedule: 'linear', 'linearX' (e.g. 'linear0.025') or 'cosine'
    diffusion_steps: int = 1000             # T of the schedule
    zero_snr: bool = False                  # rescale the schedule to zero terminal SNR, ᾱ_T = 0 (Lin et al. 2024)
    learn_sigma: bool | None = None         # also learn the reverse variance (hybrid VLB loss); None = the net preset's
    snr_interval: tuple[float, float] | None = None   # SNR splitting: train only on hi > SNR_t >= lo (hi may be inf); None = every t

    def validate(self) -> None:
        from pdlib._checks import check
        check(self.prediction in PREDICTIONS, "method.prediction", self.prediction, f"one of {PREDICTIONS}")
        from pdlib.losses import WEIGHTINGS, loss_weight
        try:
            loss_weight(self.weighting, torch.tensor([0.5]))
        except (ValueError, TypeError):
            raise ValueError(f"method.weighting={self.weighting!r} is invalid; allowed: one of "
                             f"{WEIGHTINGS}") from None
        check_vp_schedule(self.schedule, self.diffusion_steps)
        check(self.zero_snr in (True, False), "method.zero_snr", self.zero_snr, "True or False")
        check(not (self.zero_snr and self.prediction == "eps"), "method.prediction", self.prediction,
              "'v' or 'x0' with zero_snr=True (ε cannot be predicted from pure noise at ᾱ_T = 0)")
        check(self.learn_sigma in (None, True, False), "method.learn_sigma", self.learn_sigma,
              "None, True or False")
        if self.snr_interval is not None:
            ok = (isinstance(self.snr_interval, tuple) and len(self.snr_interval) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.snr_interval))
            ok = ok and not math.isnan(self.snr_interval[0]) and self.snr_interval[0] > self.snr_interval[1] >= 0
            check(ok, "method.snr_interval", self.snr_interval,
                  "None or (hi, lo) with hi > lo >= 0 (hi may be inf)")


def check_vp_schedule(schedule, diffusion_steps) -> None:
    """method.diffusion_steps an int >= 2 and method.schedule a name vp_schedule knows (one-line
    ValueErrors naming them); the VP options of every method that has them."""
    from pdlib._checks import check, is_int
    from pdlib.schedules import vp_schedule
    check(is_int(diffusion_steps) and diffusion_steps >= 2, "method.diffusion_steps",
          diffusion_steps, "an int >= 2")
    try:
        vp_schedule(schedule, int(diffusion_steps))
    except (ValueError, TypeError):
        raise ValueError(f"method.schedule={schedule!r} is invalid; allowed: 'linear', "
                         "'linearX' (e.g. 'linear0.025') or 'cosine'") from None


@register("vp", VPOptions)
class VPMethod(Method):
    """DDPM/ADM: VPPrecond (ε, x0 or v) + VPLoss (weighting, hybrid VLB); DDIM/DDPM/EDM-Heun sampling."""

    default_sample_steps = 50
    samplers = ("ddim", "ddpm", "heun", "edm")

    @classmethod
    def resolve(cls, cfg):
        cfg = super().resolve(cfg)
        if cfg.method.learn_sigma is None:
            from pdlib.nets import preset_defaults
            cfg = cfg.replace(learn_sigma=bool(preset_defaults(cfg.net.preset).get("learn_sigma", False)))
        return cfg

    def net_kwargs(self):
        kw = super().net_kwargs()
        if self.opts.learn_sigma is not None:
            kw["learn_sigma"] = bool(self.opts.learn_sigma)
        return kw

    def build_schedule(self):
        from pdlib.schedules import vp_schedule, zero_terminal_snr
        schedule = vp_schedule(self.opts.schedule, int(self.opts.diffusion_steps))
        return zero_terminal_snr(schedule) if self.opts.zero_snr else schedule

    def build_denoiser(self, net):
        from pdlib.precond import VPPrecond
        self.schedule = self.build_schedule()
        return VPPrecond(net, self.schedule, prediction=self.opts.prediction,
                         learn_sigma=bool(net.learn_sigma))

    def build_loss(self):
        from pdlib.losses import VPLoss
        return VPLoss(self.schedule, prediction=self.opts.prediction, weighting=self.opts.weighting,
                      learn_sigma=bool(self.net.learn_sigma), t_sampler=self.t_sampler())

    def t_sampler(self):
        """Training timesteps: uniform over all T, or over the SNR interval of a split model."""
        if self.opts.snr_interval is None:
            return None
        from pdlib.losses import uniform_t_in_snr_interval
        hi, lo = self.opts.snr_interval
        return uniform_t_in_snr_interval(self.schedule, float(hi), float(lo))

    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0,
               device=None, callback=None, sampler: str = "ddim", **kwargs):
        """DDIM (η=0 default), DDPM ancestral, or EDM Heun over the σ's of the schedule respaced to `steps`."""
        from pdlib import samplers
        from pdlib.schedules import respace, sampling_sigmas
        fns = {"ddim": samplers.ddim_sample, "ddpm": samplers.ddpm_sample,
               "heun": samplers.edm_sample, "edm": samplers.edm_sample}
        if sampler not in fns:
            raise ValueError(f"sampler={sampler!r} is invalid; allowed: {sorted(fns)}")
        D, cond, device = self._sample_setup(n, generator, class_labels, guidance, device)
        steps = steps or self.default_sample_steps
        sigmas = sampling_sigmas(respace(self.schedule, str(steps))).to(device)
        x = self._noise(n, sigmas, generator, device, vp=True)
        with torch.no_grad():
            x = fns[sampler](D, x, sigmas, generator=generator, callback=callback, cond=cond, **kwargs)
        return x.float().clamp(-1, 1)
