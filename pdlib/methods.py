"""Methods: the network F, its denoiser D, the loss and the sampler of one training recipe.

A method is a class in this module registered under a name (`@register("name")`); a new method
(SNR splitting, Patch Diffusion, …) adds a class, usually a subclass that overrides one of
`build_net`, `build_denoiser`, `build_loss`, `defaults` or `sample`. Everything a method needs
comes from the config (a `pdlib.train.TrainConfig`, or any object with the same fields), so a
checkpoint's saved config alone rebuilds it: `load_method(path)`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["METHODS", "Method", "EDMMethod", "VPMethod", "PatchedMethod", "register",
           "build_method", "method_defaults", "load_method"]

METHODS: dict[str, type["Method"]] = {}


def register(name: str):
    """Class decorator: make a Method subclass available to build_method under `name`."""
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def _cfg_get(cfg, key: str, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


class Method:
    """A diffusion method: net F, denoiser D(x, σ, **cond), loss_fn(D, x0, generator, **cond) -> [B], sample()."""

    name: str = "base"
    default_sample_steps: int = 18          # sampler steps when sample(steps=None)
    threshold_guided: bool = False          # sample(guidance != 1): dynamic thresholding of x̂0 too

    def __init__(self, cfg):
        cfg = copy.copy(cfg)
        for key, value in self.defaults(cfg).items():   # fill the method's defaults (None fields)
            if _cfg_get(cfg, key) is None:
                cfg = _replace(cfg, **{key: value})
        for key in ("img_channels", "resolution"):
            if _cfg_get(cfg, key) is None:
                raise ValueError(f"{key}=None: a method needs the data shape; allowed: an int "
                                 "(train() fills it from the data set)")
        self.cfg = cfg
        self.img_channels = int(cfg.img_channels)                     # C
        self.resolution = int(cfg.resolution)                         # H = W
        self.class_cond = bool(cfg.class_cond)
        if self.class_cond and not cfg.num_classes:
            raise ValueError(f"class_cond=True but num_classes={cfg.num_classes!r}; allowed: "
                             "class_cond=False, or data with labels")
        self.num_classes = int(cfg.num_classes) if self.class_cond else None
        self.null_label = self.num_classes                            # the extra embedding row
        self.label_dropout = float(cfg.label_dropout or 0.0) if self.class_cond else 0.0
        self.net = self.build_net()
        self.denoiser = self.build_denoiser(self.net)
        self.loss_fn = self.build_loss()

    # -- what a subclass overrides -------------------------------------------------------------
    @classmethod
    def defaults(cls, cfg) -> dict[str, Any]:
        """Values for the config fields this method fills when they are None."""
        return {"label_dropout": 0.1 if _cfg_get(cfg, "class_cond") else 0.0}

    @classmethod
    def validate(cls, cfg) -> None:
        """Raise ValueError for config fields that make no sense for this method."""

    def net_kwargs(self) -> dict[str, Any]:
        """Overrides of the U-Net preset derived from the config and the data."""
        kw = dict(in_channels=self.img_channels, resolution=self.resolution,
                  num_classes=self.num_classes)
        for key in ("patch_size", "dropout", "learn_sigma", "pos_emb"):
            value = _cfg_get(self.cfg, key)
            if value is not None:
                kw[key] = value
        return kw

    def build_net(self) -> nn.Module:
        from pdlib.nets.unet import unet_preset
        return unet_preset(self.cfg.preset, **self.net_kwargs())

    def build_denoiser(self, net: nn.Module) -> nn.Module:
        raise NotImplementedError

    def build_loss(self):
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None, steps: int | None = None,
               class_labels: torch.Tensor | None = None, guidance: float = 1.0,
               device=None, callback=None, **kwargs) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1] from noise drawn with generator."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    @property
    def img_shape(self) -> tuple[int, int, int]:
        return (self.img_channels, self.resolution, self.resolution)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device) -> "Method":
        self.denoiser.to(device)
        return self

    def parameters(self):
        return self.denoiser.parameters()

    def state_dict(self) -> dict:
        return self.denoiser.state_dict()

    def load_state_dict(self, state: dict, strict: bool = True):
        return self.denoiser.load_state_dict(state, strict=strict)

    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None, denoiser: nn.Module | None = None) -> torch.Tensor:
        """Per-sample losses [B] of clean images x0 (B, C, H, W); labels are dropped to the null
        label with probability label_dropout (classifier-free guidance, Ho & Salimans 2022)."""
        D = self.denoiser if denoiser is None else denoiser
        cond = {}
        if self.class_cond:
            if labels is None:
                raise ValueError("labels=None but the method is class-conditional; allowed: int64 [B]")
            if self.label_dropout > 0:
                from pdlib.losses import drop_labels
                labels = drop_labels(labels, self.label_dropout, self.null_label, generator)
            cond["class_labels"] = labels
        return self.loss_fn(D, x0, generator=generator, **cond)

    def _sample_setup(self, n, generator, class_labels, guidance, device):
        """(denoiser, cond, device): class labels default to 0, 1, …, K−1, 0, …; CFG wraps D."""
        if device is None:
            device = self.device
        device = torch.device(device)
        D = self.denoiser
        cond = {}
        if self.class_cond:
            if class_labels is None:
                class_labels = torch.arange(n) % self.num_classes
            cond["class_labels"] = torch.as_tensor(class_labels, dtype=torch.int64, device=device)
            if guidance != 1.0:
                from pdlib.samplers import CFGDenoiser, DynamicThreshold
                D = CFGDenoiser(D, guidance, self.null_label)
                if self.threshold_guided:
                    D = DynamicThreshold(D)
        elif guidance != 1.0:
            raise ValueError(f"guidance={guidance!r} needs a class-conditional method; allowed: 1.0")
        return D, cond, device

    def _noise(self, n, sigmas, generator, device, vp: bool) -> torch.Tensor:
        """Starting state at σ0 (float64): σ0·ε (EDM) or √(1+σ0²)·ε (VP, x_T ~ N(0, I))."""
        from pdlib.samplers import prior_sample
        return prior_sample((n, *self.img_shape), sigmas, generator=generator, vp=vp,
                            device=device, dtype=torch.float64)

    def __repr__(self) -> str:
        nparams = sum(p.numel() for p in self.parameters())
        return (f"{type(self).__name__}(name={self.name!r}, preset={self.cfg.preset!r}, "
                f"img_shape={self.img_shape}, class_cond={self.class_cond}, params={nparams:,})")


def _replace(cfg, **changes):
    if isinstance(cfg, dict):
        return {**cfg, **changes}
    from dataclasses import replace
    return replace(cfg, **changes)


# ----------------------------------------------------------------------------------------------
# EDM (Karras et al. 2022).

@register("edm")
class EDMMethod(Method):
    """EDM: EDMPrecond + EDMLoss (ln σ ~ N(−1.2, 1.2²)), EDM Heun sampler over the ρ=7 grid."""

    sigma_data = 0.5            # expected standard deviation of the data (Karras et al., Table 1)
    sigma_min, sigma_max, rho = 0.002, 80.0, 7.0

    @classmethod
    def validate(cls, cfg) -> None:
        for key, allowed in (("prediction", None), ("weighting", None), ("learn_sigma", (None, False))):
            value = _cfg_get(cfg, key)
            ok = value is None if allowed is None else value in allowed
            if not ok:
                raise ValueError(f"{key}={value!r} does not apply to method='edm' (EDMPrecond "
                                 f"predicts D directly); allowed: None, or method='vp'/'patched'")

    def net_kwargs(self):
        return {**super().net_kwargs(), "learn_sigma": False}

    def build_denoiser(self, net):
        from pdlib.precond import EDMPrecond
        return EDMPrecond(net, sigma_data=self.sigma_data)

    def build_loss(self):
        from pdlib.losses import EDMLoss
        return EDMLoss(sigma_data=self.sigma_data)

    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0,
               device=None, callback=None, sampler: str = "heun", **kwargs):
        """EDM Algorithm 1 (Heun, 2N−1 evaluations) or Euler over edm_sigmas(steps)."""
        from pdlib import samplers
        from pdlib.schedules import edm_sigmas
        D, cond, device = self._sample_setup(n, generator, class_labels, guidance, device)
        steps = steps or self.default_sample_steps
        sigmas = edm_sigmas(steps, self.sigma_min, self.sigma_max, self.rho).to(device)
        x = self._noise(n, sigmas, generator, device, vp=False)
        fn = {"heun": samplers.edm_sample, "euler": getattr(samplers, "euler_sample", None)}.get(sampler)
        if fn is None:
            raise ValueError(f"sampler={sampler!r}: allowed 'heun', 'euler'")
        with torch.no_grad():
            x = fn(D, x, sigmas, generator=generator, callback=callback, cond=cond, **kwargs)
        return x.float().clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# VP: DDPM / improved DDPM / ADM (Ho et al. 2020; Nichol & Dhariwal 2021).

@register("vp")
class VPMethod(Method):
    """DDPM/ADM: VPPrecond (ε, x0 or v) + VPLoss (weighting, hybrid VLB); DDIM/DDPM/EDM-Heun sampling."""

    default_sample_steps = 50

    @classmethod
    def defaults(cls, cfg):
        return {**super().defaults(cfg), "prediction": "eps", "weighting": "none"}

    def build_schedule(self):
        from pdlib.schedules import vp_schedule
        return vp_schedule(self.cfg.schedule, int(self.cfg.diffusion_steps))

    def build_denoiser(self, net):
        from pdlib.precond import VPPrecond
        self.schedule = self.build_schedule()
        return VPPrecond(net, self.schedule, prediction=self.cfg.prediction,
                         learn_sigma=bool(net.learn_sigma))

    def build_loss(self):
        from pdlib.losses import VPLoss
        return VPLoss(self.schedule, prediction=self.cfg.prediction, weighting=self.cfg.weighting,
                      learn_sigma=bool(self.net.learn_sigma), t_sampler=self.t_sampler())

    def t_sampler(self):
        """Training timesteps: None = uniform over all T (SNR splitting overrides this)."""
        return None

    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0,
               device=None, callback=None, sampler: str = "ddim", **kwargs):
        """DDIM (η=0 default), DDPM ancestral, or EDM Heun over the σ's of the schedule respaced to `steps`."""
        from pdlib import samplers
        from pdlib.schedules import respace, sampling_sigmas
        D, cond, device = self._sample_setup(n, generator, class_labels, guidance, device)
        steps = steps or self.default_sample_steps
        sigmas = sampling_sigmas(respace(self.schedule, str(steps))).to(device)
        fns = {"ddim": samplers.ddim_sample, "ddpm": samplers.ddpm_sample,
               "heun": samplers.edm_sample, "edm": samplers.edm_sample}
        if sampler not in fns:
            raise ValueError(f"sampler={sampler!r}: allowed {sorted(fns)}")
        x = self._noise(n, sigmas, generator, device, vp=True)
        with torch.no_grad():
            x = fns[sampler](D, x, sigmas, generator=generator, callback=callback, cond=cond, **kwargs)
        return x.float().clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# Patched U-Net (Luhman & Luhman 2022).

@register("patched")
class PatchedMethod(VPMethod):
    """Luhman & Luhman: a VP method whose U-Net runs on the P× space-to-depth grid with a sin-cos
    position embedding; x0-prediction with λ = √SNR by default. SNR splitting: a subclass that
    overrides `t_sampler` (per-model SNR interval) and `sample` (model by SNR)."""

    threshold_guided = True     # Luhman & Luhman's sampler: dynamic thresholding of x̂0 under guidance

    @classmethod
    def defaults(cls, cfg):
        from pdlib.nets.unet import UNET_PRESETS
        preset_p = UNET_PRESETS.get(_cfg_get(cfg, "preset"), {}).get("patch_size", 2)
        return {**super().defaults(cfg), "prediction": "x0", "weighting": "sqrt_snr",
                "patch_size": preset_p}

    def net_kwargs(self):
        return {**super().net_kwargs(), "pos_emb": "sincos"}


# ----------------------------------------------------------------------------------------------

def method_defaults(cfg) -> dict[str, Any]:
    """The values a config's method fills for its None fields (to save a fully explicit config)."""
    cls = _method_class(_cfg_get(cfg, "method"))
    return {k: v for k, v in cls.defaults(cfg).items() if _cfg_get(cfg, k) is None}


def is_known(name) -> bool:
    """True if `name` is a registered method. Derived names, such as the SNR-split methods of
    pdlib.splitting ('patched-snr:inf>0.25'), are registered on first use, so their checkpoints
    load without importing pdlib.splitting first."""
    if isinstance(name, str) and name not in METHODS and "-snr:" in name:
        from pdlib.splitting import ensure_registered
        ensure_registered(name)
    return name in METHODS


def _method_class(name) -> type[Method]:
    if not is_known(name):
        raise ValueError(f"method={name!r} is unknown; allowed: {sorted(METHODS)}")
    return METHODS[name]


def build_method(cfg) -> Method:
    """The Method named by cfg.method, built from the config alone (data shape fields filled)."""
    cls = _method_class(_cfg_get(cfg, "method"))
    cls.validate(cfg)
    return cls(cfg)


def load_method(path, ema: bool = True, device="cpu") -> Method:
    """Rebuild a Method from a training checkpoint (its EMA weights by default), in eval mode."""
    import json

    from pdlib.checkpoint import load_checkpoint
    from pdlib.train import TrainConfig
    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = TrainConfig.from_dict(json.loads(ckpt["config"]))
    method = build_method(cfg)
    method.load_state_dict(ckpt["ema" if ema else "model"])
    method.to(device)
    method.denoiser.eval()
    return method
