"""Networks F(x_in, noise_labels, class_labels=None) -> out (see ARCHITECTURE.md) and the one preset registry.

Three families share the contract: the ADM U-Net (`unet.py`, presets `UNET_PRESETS`), DiT
(`dit.py`, presets `DIT_PRESETS`) and the fixed-point DiT of FPDM (`fixed_point.py`, presets
`FPDM_PRESETS`). `net_preset(name, **overrides)` builds a preset of any family; all accept the common keyword arguments in_channels, resolution, num_classes, learn_sigma,
extra_in_channels, out_channels, patch_size and dropout, and have `size_multiple`: the inputs'
H and W must be multiples of it (a U-Net's patch_size·2^(levels−1), a DiT's patch_size).
"""

from __future__ import annotations

from torch import nn

from .dit import DIT_PAPER_CONFIG, DIT_PAPER_PARAMS, DIT_PRESETS, DiT, dit_preset
from .fixed_point import FPDM_PRESETS, FixedPointDiT, fpdm_preset
from .layers import constructor_arguments
from .unet import UNET_PRESETS, UNet, count_params, unet_preset

__all__ = ["UNet", "unet_preset", "UNET_PRESETS", "count_params",
           "DiT", "dit_preset", "DIT_PRESETS", "DIT_PAPER_CONFIG", "DIT_PAPER_PARAMS",
           "FixedPointDiT", "fpdm_preset", "FPDM_PRESETS",
           "NET_PRESETS", "NET_FAMILIES", "net_preset", "preset_family", "preset_defaults",
           "net_arguments", "size_multiple"]

# The builder of each family.
NET_FAMILIES = {"unet": unet_preset, "dit": dit_preset, "fpdm": fpdm_preset}
_CLASSES = {"unet": UNet, "dit": DiT, "fpdm": FixedPointDiT}

# Every preset name -> (family, its configuration). The names of the two families do not overlap.
NET_PRESETS: dict[str, tuple[str, dict]] = {
    **{name: ("unet", cfg) for name, cfg in UNET_PRESETS.items()},
    **{name: ("dit", cfg) for name, cfg in DIT_PRESETS.items()},
    **{name: ("fpdm", cfg) for name, cfg in FPDM_PRESETS.items()},
}
assert len(NET_PRESETS) == len(UNET_PRESETS) + len(DIT_PRESETS) + len(FPDM_PRESETS), "preset names collide"


def preset_family(name: str) -> str:
    """'unet', 'dit' or 'fpdm': the family of the preset `name`."""
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
    return constructor_arguments(_CLASSES[preset_family(name)])


def size_multiple(name: str, **overrides) -> int:
    """`size_multiple` of the preset `name` with overrides (what H and W of its inputs must be
    multiples of), read from the net built on the meta device (no weights allocated)."""
    import torch
    try:
        with torch.device("meta"):
            return int(net_preset(name, **overrides).size_multiple)
    except (RuntimeError, NotImplementedError):         # a part that cannot be built on meta
        return int(net_preset(name, **overrides).size_multiple)
