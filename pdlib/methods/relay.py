"""Relay Diffusion (Teng et al. 2024), stage 2: EDM on the blurring process of pdlib.blur, sampled
from upsampled low-resolution images instead of pure noise.

Stage 1 is any model at resolution R/s (normally an `edm` run at the low resolution). Stage 2
(this method, at resolution R) is trained with `BlurLoss`: inputs blurred in the DCT of s×s blocks
and noised with white plus block noise, the clean image as target. `sample()` is the whole relay:
stage 1 (the `stage1` model, or `low_res` images from anywhere) → nearest-neighbour upsampling by
s → block-noised to `truncation_sigma` → `pdlib.samplers.relay_sample` down to σ = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pdlib.methods.base import register
from pdlib.methods.edm import EDMMethod, EDMOptions

__all__ = ["RelayOptions", "RelayMethod"]


@dataclass(frozen=True)
class RelayOptions(EDMOptions):
    """Options of Relay Diffusion's stage 2 (defaults: the release's ImageNet stage 2)."""
    name: str = "relay"                     # the method
    up_scale: int = 4                       # s: stage 2's resolution over stage 1's (the DCT block side)
    blur_sigma_max: float = 3.0             # σ_B,max: blur level at t = 1 (CelebA-HQ: 2)
    prob_length: float = 0.93               # L: t = 1 is the L quantile of EDM's log-normal σ
    blur_m: float = 0.001                   # m: the floor of the DCT attenuation α
    s_block: float = 0.15                   # weight of block noise, in training and sampling
    t_min: float = 1e-3                     # training: t ~ U(t_min, 1)
    max_weight: float = 1e5                 # training: cap of EDM's λ(σ) (the release: 1e5)
    truncation_sigma: float = 0.9           # sampling: stage 2 starts at this σ (≤ σ(1))
    s_noise: float = 0.2                    # sampling: fraction of fresh noise per step (0 = the ODE)
    stage1: str | None = None               # sampling: stage-1 model, a committed name or a checkpoint/export path
    stage1_steps: int = 18                  # sampling: Heun steps of the stage-1 model

    def validate(self) -> None:
        super().validate()
        from pdlib._checks import check, is_int, is_num
        check(is_int(self.up_scale) and self.up_scale >= 2, "method.up_scale", self.up_scale,
              "an int >= 2")
        for key in ("prob_length", "t_min"):                  # fractions in (0, 1)
            v = getattr(self, key)
            check(is_num(v) and 0 < v < 1, f"method.{key}", v, "a number in (0, 1)")
        for key in ("blur_m", "s_noise"):                      # fractions in [0, 1)
            v = getattr(self, key)
            check(is_num(v) and 0 <= v < 1, f"method.{key}", v, "a number in [0, 1)")
        for key in ("blur_sigma_max", "s_block"):
            check(is_num(getattr(self, key)) and getattr(self, key) >= 0, f"method.{key}",
                  getattr(self, key), "a finite number >= 0")
        check(is_num(self.max_weight) and self.max_weight > 0, "method.max_weight",
              self.max_weight, "a finite number > 0")
        top = self.schedule().sigma_max
        check(is_num(self.truncation_sigma) and self.sigma_min < self.truncation_sigma <= top,
              "method.truncation_sigma", self.truncation_sigma,
              f"a value in (sigma_min={self.sigma_min}, {top:.4g}], the noise levels stage 2 is "
              f"trained at (σ(1) = exp(P_mean + P_std·Φ⁻¹(prob_length)))")
        check(self.stage1 is None or (isinstance(self.stage1, str) and self.stage1 != ""),
              "method.stage1", self.stage1, "None, a committed model's name or a checkpoint path")
        check(is_int(self.stage1_steps) and self.stage1_steps >= 1, "method.stage1_steps",
              self.stage1_steps, "an int >= 1")

    def schedule(self):
        """The BlurSchedule of these options."""
        from pdlib.blur import BlurSchedule
        return BlurSchedule(up_scale=self.up_scale, blur_sigma_max=self.blur_sigma_max,
                            P_mean=self.P_mean, P_std=self.P_std, prob_length=self.prob_length,
                            blur_m=self.blur_m)


@register("relay", RelayOptions)
class RelayMethod(EDMMethod):
    """Relay stage 2: EDMPrecond + BlurLoss; sample() relays from stage 1 with relay_sample."""

    samplers = ("heun", "euler")

    def __init__(self, cfg):
        self.blur = cfg.method.schedule()                   # build_loss needs it
        super().__init__(cfg)
        self.samples_alone = self.opts.stage1 is not None
        self._stage1 = {}                                    # loaded stage-1 models by name/path

    @classmethod
    def validate(cls, cfg) -> None:
        super().validate(cfg)
        s, R = cfg.method.up_scale, cfg.data.resolution
        if R is not None and R % s:
            raise ValueError(f"method.up_scale={s!r} does not divide data.resolution={R}; allowed: "
                             f"a divisor of {R} (stage 1 samples at data.resolution / up_scale)")

    def build_loss(self):
        from pdlib.losses import BlurLoss
        o = self.opts
        return BlurLoss(self.blur, s_block=o.s_block,
                        sigma_data=o.sigma_data, t_min=o.t_min, max_weight=o.max_weight)

    @property
    def low_shape(self) -> tuple[int, int, int]:
        """(C, R/s, R/s): the shape of a stage-1 image."""
        s = self.opts.up_scale
        return (self.img_channels, self.resolution // s, self.resolution // s)

    def stage1_model(self, stage1: str | None = None):
        """The stage-1 Method (loaded once): a committed model's name or a checkpoint path."""
        from pdlib import pretrained as P
        name = stage1 if stage1 is not None else self.opts.stage1
        if name is None:
            raise ValueError("stage1=None and method.stage1=None: stage 2 continues from "
                             "low-resolution images; allowed: low_res=(n, C, R/s, R/s) images, or "
                             "stage1= a committed model's name or a checkpoint path")
        if name not in self._stage1:
            m = P.pretrained(name) if name in P.available() else P.load_method(name)
            if (m.img_channels, m.resolution, m.resolution) not in (self.low_shape, self.img_shape):
                raise ValueError(f"stage1={name!r} samples {m.img_channels}×{m.resolution}×"
                                 f"{m.resolution} images; allowed: a model of shape "
                                 f"{'×'.join(map(str, self.low_shape))} (resolution/up_scale), or "
                                 f"{'×'.join(map(str, self.img_shape))} (its samples are block-averaged)")
            self._stage1[name] = m
        return self._stage1[name]

    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0,
               device=None, callback=None, sampler: str = "heun", low_res=None,
               stage1: str | None = None, stage1_steps: int | None = None,
               truncation_sigma: float | None = None, s_noise: float | None = None,
               s_block: float | None = None, **kwargs):
        """The relay: `low_res` (n, C, R/s, R/s) in [-1, 1], or n samples of the stage-1 model
        (stage1_steps steps of its default sampler, the same labels and guidance; a model at
        resolution R has its samples block-averaged to R/s first), upsampled and relayed by
        `steps` stage-2 steps on the ρ-grid from truncation_sigma to sigma_min (NFE 2·steps − 1
        with 'heun'). None takes the method's options. The release instead keeps the part of
        its full EDM grid (80 … 0.008) below the truncation σ; a grid of its own from the
        truncation σ spends every step where stage 2 works."""
        from pdlib._checks import check, is_num
        from pdlib.samplers import relay_sample, relay_start
        from pdlib.schedules import edm_sigmas
        if sampler not in self.samplers:
            raise ValueError(f"sampler={sampler!r} is invalid for method 'relay'; allowed: "
                             f"{list(self.samplers)}")
        o = self.opts
        top = self.blur.sigma_max
        sig0 = o.truncation_sigma if truncation_sigma is None else truncation_sigma
        check(is_num(sig0) and o.sigma_min < sig0 <= top, "truncation_sigma", sig0,
              f"a value in (sigma_min={o.sigma_min}, {top:.4g}], the noise levels stage 2 is trained at")
        s_noise = o.s_noise if s_noise is None else s_noise
        s_block = o.s_block if s_block is None else s_block
        D, cond, device = self._sample_setup(n, generator, class_labels, guidance, device)
        if low_res is None:
            m1 = self.stage1_model(stage1)
            m1.to(device)
            low_res = m1.sample(n, generator=generator, steps=stage1_steps or o.stage1_steps,
                                class_labels=cond.get("class_labels") if m1.class_cond else None,
                                guidance=guidance if m1.class_cond else 1.0, device=device)
            if m1.resolution == self.resolution:                    # a full-resolution base model
                from pdlib.blur import downsample
                low_res = downsample(low_res, o.up_scale)
        self.check_low_res(low_res, n)
        steps = steps or self.default_sample_steps
        sigmas = edm_sigmas(steps, o.sigma_min, sig0, o.rho).to(device)
        x = relay_start(low_res.to(device), sig0, o.up_scale, s_block, generator)
        with torch.no_grad():
            x = relay_sample(D, x, sigmas, blur=self.blur, s_noise=s_noise, s_block=s_block,
                             heun=sampler == "heun", cond=cond, generator=generator,
                             callback=callback, **kwargs)
        return x.float().clamp(-1, 1)

    def check_low_res(self, low_res, n: int) -> None:
        """ValueError unless low_res is a float tensor (n, C, R/s, R/s)."""
        want = (n, *self.low_shape)
        if (not isinstance(low_res, torch.Tensor) or not low_res.is_floating_point()
                or tuple(low_res.shape) != want):
            raise ValueError(f"low_res has shape {tuple(getattr(low_res, 'shape', ()))}; allowed: "
                             f"a float tensor {want} (n stage-1 images at resolution/up_scale)")
