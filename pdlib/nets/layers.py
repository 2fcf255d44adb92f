"""Building blocks of the ADM U-Net (Dhariwal & Nichol 2021, `guided_diffusion/unet.py`), written anew."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "timestep_embedding", "num_groups", "GroupNorm", "ResBlock", "AttentionBlock",
    "Downsample", "Upsample", "PositionEmbedding",
]


def timestep_embedding(noise_labels: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoid of the noise label (ADM `timestep_embedding`): [B] -> [B, dim], computed in fp32.

    Frequencies ω_k = max_period^(-k/(dim/2)), k = 0 … dim/2 − 1, span 1 … 1/max_period, so the
    same embedding serves VP nets fed t ∈ [0, 1000) (ADM) and EDM nets fed c_noise = ln(σ)/4 ∈ ~[−2, 2]
    (as NVlabs/edm's `DhariwalUNet` does): for t the low frequencies resolve the whole range; for
    c_noise the highest ~dim/8 frequencies oscillate and the rest act as linear features.
    """
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, device=noise_labels.device,
                                                           dtype=torch.float32) / half)
    phase = noise_labels.float()[:, None] * omega[None, :]       # (B, dim/2)
    emb = torch.cat([phase.cos(), phase.sin()], dim=1)           # (B, dim - dim % 2)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """GroupNorm group count: the largest divisor of `channels` ≤ min(max_groups, channels / min_channels_per_group)."""
    limit = max(1, min(max_groups, channels // min_channels_per_group))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def GroupNorm(channels: int) -> nn.GroupNorm:
    """GroupNorm with a group count that divides `channels` (32 groups for ≥128 channels, fewer below)."""
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-5)


class Downsample(nn.Module):
    """ADM `Downsample`: strided 3×3 conv (or 2×2 average pooling when `use_conv` is False)."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(x)                                        # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """ADM `Upsample`: nearest-neighbour ×2 followed by a 3×3 conv."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class ResBlock(nn.Module):
    """ADM residual block: GN-SiLU-(up/down)-conv, + embedding (scale-shift: GN(h)·(1+s)+b), GN-SiLU-dropout-conv."""

    def __init__(self,
        in_channels:            int,                # Input channels.
        out_channels:           int,                # Output channels.
        emb_channels:           int,                # Width of the timestep/class embedding.
        dropout:                float = 0.0,        # Dropout probability before the last conv.
        use_scale_shift_norm:   bool = True,        # FiLM (scale and shift) instead of an added bias.
        up:                     bool = False,       # Nearest ×2 upsampling inside the block.
        down:                   bool = False,       # 2×2 average-pool downsampling inside the block.
    ):
        super().__init__()
        if up and down:
            raise ValueError("up=True and down=True; allowed: at most one of them")
        self.use_scale_shift_norm = use_scale_shift_norm
        self.up, self.down = up, down
        self.norm_in = GroupNorm(in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels * (2 if use_scale_shift_norm else 1))
        self.norm_out = GroupNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Conv2d(out_channels, out_channels, 3, padding=1)     # zero-initialised by the U-Net
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm_in(x))                              # (B, Cin, H, W)
        if self.up or self.down:
            h, x = self._resample(h), self._resample(x)
        h = self.conv_in(h)                                      # (B, Cout, H', W')
        e = self.emb_proj(F.silu(emb))[:, :, None, None]         # (B, Cout or 2·Cout, 1, 1)
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = (self.norm_out(h) * (scale + 1)).add_(shift)
        else:
            h = self.norm_out(h + e)
        h = self.out_proj(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """ADM self-attention over the H·W positions (QKV order of ADM's `QKVAttention`), via scaled_dot_product_attention."""

    def __init__(self,
        channels:       int,                # Channels C.
        num_heads:      int,                # Heads; must divide C.
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide channels={channels}; "
                             f"allowed: a divisor of {channels}")
        self.num_heads = num_heads
        self.norm = GroupNorm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out_proj = nn.Conv2d(channels, channels, 1)         # zero-initialised by the U-Net

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        n, d = self.num_heads, C // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(B, 3, n, d, H * W)  # (B, 3, heads, d, L)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                # each (B, heads, L, d), strided views
        h = F.scaled_dot_product_attention(q, k, v)              # (B, heads, L, d)
        h = h.transpose(-1, -2).reshape(B, C, H, W)              # (B, C, H, W)
        return x + self.out_proj(h)


class PositionEmbedding(nn.Module):
    """Arakawa et al. 2023: a tile's position k ∈ [0, N²) as one-hot(N²) → Linear → GELU → Linear,
    ADDED to the time embedding. The release concatenates GELU(Linear(one-hot)) with the time
    features and applies one Linear(2·dim, 4·dim); a Linear of a concatenation is the sum of two
    Linears, so the sum here spans the same functions."""

    def __init__(self,
        num_positions:  int,                # N², the tiles of the grid
        channels:       int,                # width of the embedding it is added to
    ):
        super().__init__()
        if not isinstance(num_positions, int) or isinstance(num_positions, bool) or num_positions < 1:
            raise ValueError(f"num_positions={num_positions!r} is invalid; allowed: an int >= 1 (N²)")
        self.num_positions = num_positions
        self.proj = nn.Sequential(nn.Linear(num_positions, channels), nn.GELU(),
                                  nn.Linear(channels, channels))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions int64 [B] -> [B, channels]."""
        one_hot = F.one_hot(positions.long(), self.num_positions)               # (B, N²)
        return self.proj(one_hot.to(self.proj[0].weight.dtype))


def check_positions(net, positions, batch: int):
    """The tile positions of F(..., positions=...) against `net.num_positions`: int [B] in
    [0, num_positions) when the net has position conditioning, None when it has not."""
    n = getattr(net, "num_positions", None)
    if positions is None:
        if n is not None:
            raise ValueError(f"positions=None but the net has num_positions={n}; allowed: the tile "
                             f"index of each input, int64 [{batch}] in [0, {n})")
        return None
    if n is None:
        raise ValueError("positions were given but the net has num_positions=None; allowed: "
                         "positions=None, or build the net with num_positions (N²)")
    ok = (isinstance(positions, torch.Tensor) and positions.shape == (batch,)
          and not positions.dtype.is_floating_point and positions.dtype != torch.bool)
    if not ok or bool((positions < 0).any()) or bool((positions >= n).any()):
        raise ValueError(f"positions={positions!r} is invalid; allowed: int64 [{batch}] in [0, {n})")
    return positions


def check_net_inputs(net, x_in: torch.Tensor, noise_labels, class_labels, multiple: int,
                     multiple_name: str) -> torch.Tensor:
    """Check F(x_in, noise_labels, class_labels)'s inputs against a network's attributes
    (in_channels, extra_in_channels, num_classes, resolution); returns noise_labels as a [B] tensor.
    H and W must be multiples of `multiple` (named `multiple_name` in the message)."""
    if x_in.ndim != 4:
        raise ValueError(f"x_in has shape {tuple(x_in.shape)}; allowed: [B, C, H, W]")
    B, C, H, W = x_in.shape
    want = net.in_channels + net.extra_in_channels
    if C != want:
        raise ValueError(f"x_in has {C} channels; allowed: in_channels + extra_in_channels = "
                         f"{net.in_channels} + {net.extra_in_channels} = {want}")
    if H % multiple or W % multiple:
        raise ValueError(f"x_in has spatial size {H}x{W}; allowed: H and W multiples of "
                         f"{multiple_name} = {multiple} (nominal {net.resolution}x{net.resolution})")
    noise_labels = torch.as_tensor(noise_labels, device=x_in.device)
    if noise_labels.ndim == 0:
        noise_labels = noise_labels.expand(B)
    if noise_labels.shape != (B,):
        raise ValueError(f"noise_labels has shape {tuple(noise_labels.shape)}; allowed: [B] = [{B}] or a scalar")
    if class_labels is not None:
        if net.num_classes is None:
            raise ValueError("class_labels were given but the net has num_classes=None; "
                             "allowed: class_labels=None, or build the net with num_classes")
        if class_labels.shape != (B,) or class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool:
            raise ValueError(f"class_labels has shape {tuple(class_labels.shape)} and dtype "
                             f"{class_labels.dtype}; allowed: integer labels of shape [{B}] in "
                             f"[0, {net.num_classes}] ({net.num_classes} = null label)")
    return noise_labels


def constructor_arguments(cls) -> set[str]:
    """The keyword arguments cls(...) accepts: its signature's, or cls.arguments() for a class that
    forwards **kwargs to another (FixedPointDiT → DiT)."""
    import inspect
    if hasattr(cls, "arguments"):
        return set(cls.arguments())
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def build_preset(cls, presets: dict, name: str, overrides: dict, family: str):
    """cls(**presets[name], **overrides): a named preset with constructor arguments overridden;
    an unknown name or argument is a ValueError listing what is allowed."""
    if name not in presets:
        raise ValueError(f"name={name!r} is not a {family} preset; allowed: {sorted(presets)}")
    allowed = constructor_arguments(cls)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"overrides {unknown} are not {cls.__name__} arguments; allowed: {sorted(allowed)}")
    return cls(**{**presets[name], **overrides})
