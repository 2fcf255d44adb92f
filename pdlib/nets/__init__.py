"""Networks F(x_in, noise_labels, class_labels=None) -> out (see ARCHITECTURE.md)."""

from .unet import UNET_PRESETS, UNet, count_params, unet_preset

__all__ = ["UNet", "unet_preset", "UNET_PRESETS", "count_params"]
