"""ADM U-Net (Dhariwal & Nichol 2021) with Luhman & Luhman's space-to-depth patching, written anew.

Network F(x_in, noise_labels, class_labels=None) -> out, per ARCHITECTURE.md:
- x_in: [B, in_channels + extra_in_channels, H, W]. The first `in_channels` are the (noisy, scaled)
  image; the `extra_in_channels` that follow are conditioning inputs (coordinate channels of Patch
  Diffusion, global content of Arakawa et al., ...). They are patched with the image.
- noise_labels: [B] float (c_noise = ln(σ)/4 for EDM nets, t as a float in [0, 1000) for VP nets;
  see `layers.timestep_embedding` for why one embedding serves both).
- class_labels: int64 [B] in [0, num_classes]; the value `num_classes` is the null label (CFG).
  None with a class-conditional net means "unconditional" (every label = null).
- positions: int64 [B] in [0, num_positions), the tile index of patch-by-patch generation
  (Arakawa et al. 2023), embedded and added to the time embedding; only with `num_positions`.
- out: [B, out_channels, H, W] with out_channels = in_channels (or the given `out_channels`),
  doubled when learn_sigma (the second half is ADM's variance interpolation v).

Patching (Luhman & Luhman 2022, §3): space-to-depth [B, C, H, W] -> [B, C·P², H/P, W/P], the usual
3×3 input conv, the whole U-Net at H/P (attention resolutions count on that patched grid), an output
conv to out_channels·P² and depth-to-space back to [B, out_channels, H, W]. A fixed 2-D sin-cos
position embedding is added after the first conv (default on when P > 1).

The net is fully convolutional: inputs of another size than `resolution` are accepted as long as
H and W are divisible by P·2^(levels−1) (Patch Diffusion trains on crops of the full image);
`resolution` fixes which levels get attention.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..patching import _divisors, depth_to_space, sincos_2d, space_to_depth
from .layers import (AttentionBlock, Downsample, GroupNorm, PositionEmbedding, ResBlock, Upsample,
                     build_preset, check_net_inputs, check_positions, timestep_embedding)

__all__ = ["UNet", "unet_preset", "UNET_PRESETS", "count_params"]


class _EmbedSequential(nn.ModuleList):
    """A list of blocks applied in order, each called as block(x, emb) (ADM `TimestepEmbedSequential`)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x, emb)
        return x


def _level_channels(model_channels: int, mult: float) -> int:
    """Channels of a level: model_channels·mult, rounded to a multiple of 8 when that is not an integer."""
    c = model_channels * mult
    if abs(c - round(c)) < 1e-9:
        return int(round(c))
    return max(8, 8 * round(c / 8))


def _heads(channels: int, num_heads: int | None, head_channels: int) -> int:
    if num_heads is not None:
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide the attention width {channels}; "
                             f"allowed: a divisor of {channels}, or num_heads=None with head_channels")
        return num_heads
    n = max(1, channels // head_channels)
    while channels % n:
        n -= 1
    return n


class UNet(nn.Module):
    """ADM U-Net with space-to-depth patching (Luhman & Luhman 2022), `F(x_in, noise_labels, class_labels)`."""

    def __init__(self,
        in_channels:            int = 3,            # Image channels C.
        out_channels:           int | None = None,  # Predicted image channels (default C); ×2 with learn_sigma.
        resolution:             int = 32,           # Nominal image resolution H = W (in pixels).
        model_channels:         int = 64,           # Base width; level k has model_channels·channel_mult[k].
        channel_mult:           Sequence[float] = (1, 2, 2),  # Per-level multipliers (fractional ones are rounded).
        num_res_blocks:         int = 2,            # ResBlocks per level in the encoder (+1 in the decoder).
        attention_resolutions:  Sequence[int] = (16,),  # Grid sizes (of the PATCHED grid) with self-attention.
        num_heads:              int | None = None,  # Fixed head count, or None to use head_channels.
        head_channels:          int = 64,           # Channels per head when num_heads is None.
        dropout:                float = 0.0,        # Dropout in every ResBlock.
        num_classes:            int | None = None,  # Class-conditional with num_classes labels (+1 null row).
        extra_in_channels:      int = 0,            # Conditioning input channels appended to the image.
        patch_size:             int = 1,            # Space-to-depth factor P (Luhman & Luhman).
        learn_sigma:            bool = False,       # Also output ADM's variance interpolation (2× channels).
        pos_emb:                str | None = None,  # 'sincos' | 'none'; None: 'sincos' when P > 1 else 'none'.
        use_scale_shift_norm:   bool = True,        # FiLM conditioning in the ResBlocks.
        resblock_updown:        bool = True,        # Resample with ResBlocks (else strided conv / upsample conv).
        mid_attention:          bool = True,        # Self-attention in the middle block (ADM: always).
        num_positions:          int | None = None,  # Tile-position conditioning with this many positions (N²; Arakawa et al.).
    ):
        super().__init__()
        self._check_args(in_channels, out_channels, resolution, model_channels, channel_mult,
                         num_res_blocks, dropout, num_classes, extra_in_channels, patch_size, pos_emb)
        levels = len(channel_mult)
        self.in_channels = in_channels
        self.extra_in_channels = extra_in_channels
        self.out_channels = (out_channels or in_channels) * (2 if learn_sigma else 1)
        self.resolution = resolution
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.model_channels = model_channels
        self.channel_mult = tuple(channel_mult)
        self.grid = resolution // patch_size                     # patched resolution
        self.size_multiple = patch_size * 2 ** (levels - 1)      # H, W must be multiples of this
        self.pos_emb = pos_emb if pos_emb is not None else ("sincos" if patch_size > 1 else "none")
        chans = [_level_channels(model_channels, m) for m in channel_mult]
        self.level_channels = tuple(chans)
        emb_ch = 4 * model_channels

        # Embeddings: sinusoid(noise label) -> MLP; class table with a null row at index num_classes.
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.label_embed = nn.Embedding(num_classes + 1, emb_ch) if num_classes is not None else None

        # Input: space-to-depth (in forward), 3×3 conv, fixed position embedding.
        ch = chans[0]
        self.conv_in = nn.Conv2d((in_channels + extra_in_channels) * patch_size ** 2, ch, 3, padding=1)
        if self.pos_emb == "sincos":
            if ch % 4:
                raise ValueError(f"pos_emb='sincos' needs first-level channels divisible by 4, got {ch}; "
                                 f"allowed: model_channels·channel_mult[0] a multiple of 4, or pos_emb='none'")
            self.register_buffer("pos", sincos_2d(ch, self.grid, self.grid)[None], persistent=False)
        else:
            self.pos = None

        def res_block(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(cin, cout, emb_ch, dropout=dropout, use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attention(c: int) -> AttentionBlock:
            return AttentionBlock(c, _heads(c, num_heads, head_channels))

        # Encoder.
        self.attention_levels = tuple(k for k in range(levels) if self.grid // 2 ** k in attention_resolutions)
        self.enc = nn.ModuleList()
        skips = [ch]
        for level in range(levels):
            for _ in range(num_res_blocks):
                blocks = [res_block(ch, chans[level])]
                ch = chans[level]
                if level in self.attention_levels:
                    blocks.append(attention(ch))
                self.enc.append(_EmbedSequential(blocks))
                skips.append(ch)
            if level != levels - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch)
                self.enc.append(_EmbedSequential([down]))
                skips.append(ch)

        # Middle.
        self.mid = _EmbedSequential([res_block(ch, ch)] + ([attention(ch)] if mid_attention else [])
                                    + [res_block(ch, ch)])

        # Decoder: num_res_blocks + 1 blocks per level, each eating one skip connection.
        self.dec = nn.ModuleList()
        for level in reversed(range(levels)):
            for i in range(num_res_blocks + 1):
                blocks = [res_block(ch + skips.pop(), chans[level])]
                ch = chans[level]
                if level in self.attention_levels:
                    blocks.append(attention(ch))
                if level and i == num_res_blocks:
                    blocks.append(res_block(ch, ch, up=True) if resblock_updown else Upsample(ch))
                self.dec.append(_EmbedSequential(blocks))

        # Output: GN-SiLU-conv to out_channels·P², then depth-to-space (in forward).
        self.norm_out = GroupNorm(ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels * patch_size ** 2, 3, padding=1)
        # Tile position (built last, so the other weights draw the same random numbers with or without it).
        self.num_positions = num_positions
        self.position_embed = PositionEmbedding(num_positions, emb_ch) if num_positions is not None else None
        self._zero_init()

    @staticmethod
    def _check_args(in_channels, out_channels, resolution, model_channels, channel_mult, num_res_blocks,
                    dropout, num_classes, extra_in_channels, patch_size, pos_emb) -> None:
        def positive_int(name, v):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}={v!r} is invalid; allowed: a positive integer")
        for name, v in (("in_channels", in_channels), ("resolution", resolution),
                        ("model_channels", model_channels), ("num_res_blocks", num_res_blocks),
                        ("patch_size", patch_size)):
            positive_int(name, v)
        if out_channels is not None:
            positive_int("out_channels", out_channels)
        if num_classes is not None:
            positive_int("num_classes", num_classes)
        if not isinstance(extra_in_channels, int) or extra_in_channels < 0:
            raise ValueError(f"extra_in_channels={extra_in_channels!r} is invalid; allowed: an integer >= 0")
        if len(channel_mult) == 0 or any(not (m > 0) for m in channel_mult):
            raise ValueError(f"channel_mult={tuple(channel_mult)!r} is invalid; allowed: a non-empty "
                             f"sequence of positive numbers")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid; allowed: 0 <= dropout < 1")
        if pos_emb not in (None, "none", "sincos"):
            raise ValueError(f"pos_emb={pos_emb!r} is invalid; allowed: None, 'none', 'sincos'")
        factor = 2 ** (len(channel_mult) - 1)
        allowed = [p for p in _divisors(resolution) if (resolution // p) % factor == 0]
        if resolution % patch_size:
            raise ValueError(f"patch_size={patch_size} does not divide resolution={resolution}; "
                             f"allowed: divisors {allowed} (patched resolution divisible by "
                             f"2^(len(channel_mult)-1)={factor})")
        grid = resolution // patch_size
        if grid % factor:
            fix = f"patch_size in {allowed}" if allowed else \
                f"no patch size (resolution must be a multiple of {factor})"
            raise ValueError(f"patched resolution resolution/patch_size={resolution}/{patch_size}={grid} "
                             f"is not divisible by 2^(len(channel_mult)-1)={factor} for "
                             f"channel_mult={tuple(channel_mult)}; allowed: {fix}, or fewer levels")

    def _zero_init(self) -> None:
        """The one place of zero initialisation: every residual branch's last layer and the output conv."""
        for m in self.modules():
            if isinstance(m, (ResBlock, AttentionBlock)):
                nn.init.zeros_(m.out_proj.weight)
                nn.init.zeros_(m.out_proj.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _check_inputs(self, x_in, noise_labels, class_labels):
        return check_net_inputs(self, x_in, noise_labels, class_labels, self.size_multiple, "patch_size·2^(levels-1)")

    def forward(self, x_in: torch.Tensor, noise_labels: torch.Tensor,
                class_labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """F(x_in, noise_labels, class_labels, positions) -> [B, out_channels, H, W] (ARCHITECTURE.md, Networks)."""
        noise_labels = self._check_inputs(x_in, noise_labels, class_labels)
        positions = check_positions(self, positions, x_in.shape[0])
        emb = self.time_embed(timestep_embedding(noise_labels, self.model_channels))   # (B, 4·mc)
        if positions is not None:
            emb = emb + self.position_embed(positions).to(emb.dtype)
        if self.label_embed is not None:
            if class_labels is None:                                                   # unconditional = null
                class_labels = torch.full_like(noise_labels, self.num_classes, dtype=torch.long)
            emb = emb + self.label_embed(class_labels).to(emb.dtype)

        h = self.conv_in(space_to_depth(x_in, self.patch_size))  # (B, ch0, H/P, W/P)
        if self.pos is not None:
            pos = self.pos if self.pos.shape[-2:] == h.shape[-2:] else \
                sincos_2d(self.pos.shape[1], h.shape[-2], h.shape[-1], device=h.device)[None]
            h = h + pos.to(h.dtype)
        skips = [h]
        for block in self.enc:
            h = block(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for block in self.dec:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.conv_out(F.silu(self.norm_out(h)))              # (B, out·P², H/P, W/P)
        return depth_to_space(h, self.patch_size)                # (B, out, H, W)


# ----------------------------------------------------------------------------------------------
# Presets (DiT-style named registry).

UNET_PRESETS: dict[str, dict] = {
    # Unit tests: < 100k parameters, no attention.
    "tiny": dict(resolution=32, model_channels=16, channel_mult=(1, 1), num_res_blocks=1,
                 attention_resolutions=(), mid_attention=False, head_channels=32),
    # CPU chapters: ~1.4M parameters, trains in minutes at 32×32 on 2 cores.
    "small": dict(resolution=32, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                  attention_resolutions=(8,), head_channels=32),
    # GPU: ADM/DDPM CIFAR-10 scale (~43M parameters).
    "base": dict(resolution=32, model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                 attention_resolutions=(16,), head_channels=64, dropout=0.1),
    # Luhman & Luhman's LSUN/FFHQ configs (256², learn_sigma, 64 head channels), scaled down to 64²
    # with a quarter of the widths (128/256/256 -> 32/64/64; 5-8M parameters) and the same levels but
    # one for P=2; the patched grid is 32, 16, 8 for P = 2, 4, 8 (the paper's is 128, 64, 32).
    "luhman-p2": dict(resolution=64, patch_size=2, model_channels=32, channel_mult=(1, 2, 2, 4),
                      num_res_blocks=2, attention_resolutions=(16, 8), head_channels=64, learn_sigma=True),
    "luhman-p4": dict(resolution=64, patch_size=4, model_channels=64, channel_mult=(1, 1, 2, 2),
                      num_res_blocks=2, attention_resolutions=(8, 4), head_channels=64, learn_sigma=True),
    "luhman-p8": dict(resolution=64, patch_size=8, model_channels=64, channel_mult=(1, 1.5, 2),
                      num_res_blocks=2, attention_resolutions=(4, 2), head_channels=64, learn_sigma=True),
}


def unet_preset(name: str, **overrides) -> UNet:
    """Build a named U-Net preset (`UNET_PRESETS`), with any constructor argument overridden."""
    return build_preset(UNet, UNET_PRESETS, name, overrides, "U-Net")


def count_params(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `net` (only those with requires_grad when trainable_only)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
