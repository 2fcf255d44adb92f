"""Methods: one file each, a frozen options dataclass plus a `Method` subclass (see base.py).

    edm.py       EDM (Karras et al. 2022)
    vp.py        DDPM / ADM, with SNR splitting as the `snr_interval` option
    patched.py   patching the U-Net (Luhman & Luhman 2022)
    patch_diffusion.py   Patch Diffusion: EDM on random patches with coordinates (Wang et al. 2023)
    tiled.py     patch-by-patch generation: tiles with position and global content (Arakawa et al. 2023)
    fixed_point.py   FPDM: a fixed-point DiT, stochastic k1/k2 training, solvers, reuse, reallocation (Bai & Melas-Kyriazi 2024)
    relay.py     Relay Diffusion's stage 2: blurring diffusion in the block DCT, relayed from stage 1 (Teng et al. 2024)
    split.py     SplitMethod: SNR-split models composed for sampling

`build_method(cfg)` builds the method of a `pdlib.config.TrainConfig` (resolved against its data
set); `pdlib.pretrained.load_method(path)` rebuilds one from a checkpoint or exported weights.
"""
from pdlib.methods.base import METHODS, Batch, Method, MethodOptions, method_class, register
from pdlib.methods.edm import EDMMethod, EDMOptions
from pdlib.methods.vp import VPMethod, VPOptions
from pdlib.methods.patched import PatchedMethod, PatchedOptions
from pdlib.methods.patch_diffusion import PatchDiffusionMethod, PatchDiffusionOptions
from pdlib.methods.tiled import TiledMethod, TiledOptions
from pdlib.methods.fixed_point import FPDMMethod, FPDMOptions
from pdlib.methods.relay import RelayMethod, RelayOptions
from pdlib.methods.split import SplitMethod, snr_intervals

__all__ = ["METHODS", "Batch", "Method", "MethodOptions", "method_class", "register",
           "EDMMethod", "EDMOptions", "VPMethod", "VPOptions", "PatchedMethod", "PatchedOptions",
           "PatchDiffusionMethod", "PatchDiffusionOptions", "TiledMethod", "TiledOptions", "FPDMMethod", "FPDMOptions",
           "RelayMethod", "RelayOptions",
           "SplitMethod", "snr_intervals", "build_method"]


def build_method(cfg) -> Method:
    """The method of a TrainConfig, built from the config alone (its data shape must be filled:
    train() and pdlib.config.resolve_config do that); the method's own defaults are filled first."""
    cls = method_class(cfg.method.name)
    cfg = cls.resolve(cfg)
    cls.validate(cfg)
    return cls(cfg)
