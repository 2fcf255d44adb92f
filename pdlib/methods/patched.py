"""Patching the U-Net (Luhman & Luhman 2022): a VP method whose U-Net runs on the P× space-to-depth
grid with a fixed sin-cos position embedding; x0-prediction with λ = √SNR by default, and dynamic
thresholding of x̂0 under guidance (their sampler). With a DiT the patching is the DiT's own."""
from __future__ import annotations

from dataclasses import dataclass

from pdlib.methods.base import register
from pdlib.methods.vp import VPMethod, VPOptions

__all__ = ["PatchedOptions", "PatchedMethod"]


@dataclass(frozen=True)
class PatchedOptions(VPOptions):
    """Options of the patched method: VP options with Luhman & Luhman's defaults."""
    name: str = "patched"                   # the method
    prediction: str = "x0"                  # network target: 'eps' | 'x0' | 'v' (the paper: x0)
    weighting: str = "sqrt_snr"             # loss weighting λ_t (the paper: √SNR)


@register("patched", PatchedOptions)
class PatchedMethod(VPMethod):
    """VPMethod on a patched U-Net (P = net.overrides['patch_size'], default the preset's or 2)."""

    threshold_guided = True

    @classmethod
    def resolve(cls, cfg):
        cfg = super().resolve(cfg)
        from pdlib.nets import preset_defaults, preset_family
        if preset_family(cfg.net.preset) == "unet" and cfg.net.overrides.get("patch_size") is None:
            p = preset_defaults(cfg.net.preset).get("patch_size", 2)
            cfg = cfg.replace(net=cfg.net.with_overrides(patch_size=p))
        return cfg

    def net_kwargs(self):
        from pdlib.nets import preset_family
        kw = super().net_kwargs()
        if preset_family(self.cfg.net.preset) == "unet":
            kw["pos_emb"] = "sincos"
        return kw
