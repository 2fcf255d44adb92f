"""Networks F(x_in, noise_labels, class_labels=None) -> out (see ARCHITECTURE.md) and the one preset registry.

Two families share the contract: the ADM U-Net (`unet.py`, presets `UNET_PRESETS`) and DiT
(`dit.py`, presets `DIT_PRESETS`). `net_preset(name, **overrides)` builds a preset of either family;
both accept the common keyword arguments in_channels, resolution, num_classes, learn_sigma,
extra_in_channels, out_channels, patch_size and dropout, and have `size_multiple`: the inputs'
H and W must be multiples of it (a U-Net's patch_size·2^(levels−1), a DiT's patch_size).
"""

from __future__ import annotations

from torch import nn

from .dit import DIT_PAPER_CONFIG, DIT_PAPER_PARAMS, DIT_PRESETS, DiT, dit_preset
from .unet import UNET_PRESETS, UNet, count_params, unet_preset

__all__ = ["UNet", "unet_preset", "UNET_PRESETS", "count_params",
           "DiT", "dit_preset", "DIT_PRESETS", "DIT_PAPER_CONFIG", "DIT_PAPER_PARAMS",
           "NET_PRESETS", "NET_FAMILIES", "net_preset", "preset_family", "preset_defaults",
           "net_arguments", "size_multiple"]

# The builder of each family.
NET_FAMILIES = {"unet": unet_preset, "dit": dit_preset}

# Every preset name -> (family, its configuration). The names of the two families do not overlap.
NET_PRESETS: dict[str, tuple[str, dict]] = {
    **{name: ("unet", cfg) for name, cfg in UNET_PRESETS.items()},
    **{name: ("dit", cfg) for name, cfg in DIT_PRESETS.items()},
}
assert len(NET_PRESETS) == len(UNET_PRESETS) + len(DIT_PRESETS), "U-Net and DiT preset names collide"


def preset_family(name: str) -> str:
    """'unet' or 'dit': the family of the preset `name`."""
    if name not in NET_PRESETS:
        raise ValueError(f"preset={name!r} is unknown; allowed: {sorted(NET_PRESETS)}")
    return NET_PRESETS[name][0]


def net_preset(name: str, **overrides) -> nn.Module:
    """Build the preset `name` of either family (`unet_preset` or `dit_preset`), with constructor overrides."""
    return NET_FAMILIES[preset_family(name)](name, **overrides)


def preset_defaults(name: str) -> dict:
    """The constructor arguments the preset `name` sets (a copy)."""
    preset_family(name)
    return dict(NET_PRESETS[name][1])


def net_arguments(name: str) -> set[str]:
    """The constructor arguments a preset of `name`'s family accepts (what net overrides may set)."""
    import inspect
    cls = {"unet": UNet, "dit": DiT}[preset_family(name)]
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def size_multiple(name: str, **overrides) -> int:
    """`size_multiple` of the preset `name` with overrides (what H and W of its inputs must be
    multiples of), read from the net built on the meta device (no weights allocated)."""
    import torch
    try:
        with torch.device("meta"):
            return int(net_preset(name, **overrides).size_multiple)
    except (RuntimeError, NotImplementedError):         # a part that cannot be built on meta
        return int(net_preset(name, **overrides).size_multiple)
