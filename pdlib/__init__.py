"""pdlib: one small diffusion core for patch-based and fixed-point diffusion methods.

The one interface between networks and samplers is a denoiser ``D(x, sigma, **cond)`` in
σ-space (see ARCHITECTURE.md). Public names are imported lazily, so ``import pdlib`` stays fast
and a notebook pays only for the modules it uses.
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    # schedules: noise levels
    "VPSchedule": "schedules", "vp_schedule": "schedules", "respace": "schedules",
    "zero_terminal_snr": "schedules", "edm_sigmas": "schedules", "sampling_sigmas": "schedules",
    # preconditioning: networks → denoisers
    "EDMPrecond": "precond", "VPPrecond": "precond",
    # losses
    "EDMLoss": "losses", "VPLoss": "losses", "loss_weight": "losses",
    # samplers
    "edm_sample": "samplers", "euler_sample": "samplers", "ddim_sample": "samplers",
    "ddpm_sample": "samplers", "prior_sample": "samplers",
    # denoiser wrappers
    "CFGDenoiser": "denoisers", "DynamicThreshold": "denoisers", "ClipDenoiser": "denoisers",
    "NFECounter": "denoisers", "SNRSplitDenoiser": "denoisers",
    # the exact denoiser of a finite data set
    "ideal_denoiser": "ideal",
    # networks, data, training
    "UNet": "nets", "unet_preset": "nets",
    "load_dataset": "data",
    "TrainConfig": "config", "train": "train", "train_split": "train",
    "load_method": "pretrained", "build_method": "methods",
    "DiT": "nets", "net_preset": "nets",
}
_SUBMODULES = {"schedules", "precond", "losses", "samplers", "denoisers", "ideal", "nets", "patching", "data",
               "train", "checkpoint", "methods", "metrics", "viz", "book",
               "evaluation", "spectra", "config", "pretrained", "errors"}

__all__ = sorted(_PUBLIC) + sorted(_SUBMODULES)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(f"pdlib.{_PUBLIC[name]}"), name)
    elif name in _SUBMODULES:
        value = import_module(f"pdlib.{name}")
    else:
        raise AttributeError(f"module 'pdlib' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
