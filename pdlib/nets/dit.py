"""DiT: Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"), written anew.

Network F(x_in, noise_labels, class_labels=None) -> out, the same contract as `pdlib.nets.UNet`
(ARCHITECTURE.md, Networks):
- x_in: [B, in_channels + extra_in_channels, H, W]. The first `in_channels` are the (noisy, scaled)
  image; the `extra_in_channels` that follow are conditioning inputs (coordinate channels of Patch
  Diffusion, ...). They are patch-embedded together with the image.
- noise_labels: [B] float (c_noise = ln(σ)/4 for EDM nets, t as a float in [0, 1000) for VP nets),
  embedded exactly as the U-Net embeds them (`layers.timestep_embedding`, no rescaling).
- class_labels: int64 [B] in [0, num_classes]; the value `num_classes` is the null label (CFG).
  None with a class-conditional net means "unconditional" (every label = null).
- out: [B, out_channels, H, W] with out_channels = in_channels (or the given `out_channels`),
  doubled when learn_sigma.

Architecture (paper §3.2, Fig. 3): patchify with a P×P conv of stride P into T = (H/P)·(W/P) tokens
of width `hidden_size`, plus a FIXED 2-D sin-cos position embedding (a buffer, not learned);
conditioning c = MLP(sinusoid(noise label)) + label embedding; `depth` DiT blocks with adaLN-Zero
(LayerNorm without affine parameters, modulated as x·(1+scale)+shift with (shift, scale, gate) for
the attention and the MLP regressed from c by one Linear of width 6·hidden, residuals gated);
a final adaLN layer (2·hidden modulation) and a Linear to P²·out_channels per token; unpatchify
(depth-to-space) to [B, out_channels, H, W].

adaLN-Zero (paper §3.2): every modulation Linear and the final Linear start at zero, so each block
starts as the identity and a fresh DiT outputs exactly zeros; see `DiT.initialize_weights`.

Sequence length follows the input: inputs of another size than `resolution` (crops in Patch
Diffusion, non-square images) are accepted when H and W are divisible by P; the position embedding
is computed for the actual grid. `resolution` only fixes the cached position buffer.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..patching import _divisors, depth_to_space, sincos_2d
from .layers import PositionEmbedding, build_preset, check_net_inputs, check_positions, timestep_embedding

__all__ = ["DiT", "DiTBlock", "dit_preset", "DIT_PRESETS", "DIT_PAPER_CONFIG", "DIT_PAPER_PARAMS", "modulate"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x·(1+scale)+shift; x (B, T, D), shift and scale (B, D) broadcast over the tokens."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class Attention(nn.Module):
    """Multi-head self-attention over the tokens (fused QKV Linear), via scaled_dot_product_attention."""

    def __init__(self,
        dim:            int,                # Token width D.
        num_heads:      int,                # Heads; must divide D.
        dropout:        float = 0.0,        # Attention-probability dropout and dropout after the projection.
    ):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        n = self.num_heads
        q, k, v = self.qkv(x).reshape(B, T, 3, n, D // n).permute(2, 0, 3, 1, 4)  # each (B, heads, T, d)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        h = h.transpose(1, 2).reshape(B, T, D)                   # (B, T, D)
        return self.proj_drop(self.proj(h))


class Mlp(nn.Module):
    """Transformer MLP: Linear -> GELU (tanh approximation, as DiT) -> dropout -> Linear -> dropout."""

    def __init__(self,
        dim:            int,                # Token width D.
        hidden:         int,                # Hidden width (mlp_ratio·D).
        dropout:        float = 0.0,        # Dropout after the activation and after the output Linear.
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x), approximate="tanh"))))


class DiTBlock(nn.Module):
    """DiT block with adaLN-Zero (paper Fig. 3): x += gate·Attn(modulate(LN(x))); x += gate·MLP(modulate(LN(x)))."""

    def __init__(self,
        dim:            int,                # Token width D (hidden_size).
        num_heads:      int,                # Attention heads.
        mlp_ratio:      float = 4.0,        # MLP hidden width = mlp_ratio·D.
        dropout:        float = 0.0,        # Attention and MLP dropout.
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))  # zero-initialised by the DiT

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)  # each (B, D)
        x = x + gate_a[:, None, :] * self.attn(modulate(self.norm1(x), shift_a, scale_a))   # (B, T, D)
        x = x + gate_m[:, None, :] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))    # (B, T, D)
        return x


class FinalLayer(nn.Module):
    """DiT output: adaLN (shift, scale from c) on LN(x), then a Linear to P²·out_channels per token."""

    def __init__(self,
        dim:            int,                # Token width D.
        patch_size:     int,                # Patch size P.
        out_channels:   int,                # Output channels per pixel.
    ):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)   # zero-initialised by the DiT
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))  # zero-initialised by the DiT

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # each (B, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, P²·out)


class DiT(nn.Module):
    """Diffusion Transformer with adaLN-Zero (Peebles & Xie 2023), `F(x_in, noise_labels, class_labels)`."""

    def __init__(self,
        in_channels:            int = 3,            # Image channels C.
        resolution:             int = 32,           # Nominal image resolution H = W (in pixels).
        patch_size:             int = 2,            # Patch size P; T = (H/P)·(W/P) tokens.
        hidden_size:            int = 384,          # Token width D (multiple of num_heads and of 4).
        depth:                  int = 12,           # Number of DiT blocks N.
        num_heads:              int = 6,            # Attention heads; must divide hidden_size.
        mlp_ratio:              float = 4.0,        # MLP hidden width = mlp_ratio·D.
        num_classes:            int | None = None,  # Class-conditional with num_classes labels (+1 null row).
        learn_sigma:            bool = False,       # Also output the variance interpolation (2× channels).
        extra_in_channels:      int = 0,            # Conditioning input channels appended to the image.
        out_channels:           int | None = None,  # Predicted image channels (default C); ×2 with learn_sigma.
        dropout:                float = 0.0,        # Attention and MLP dropout (DiT: 0; for parity with the U-Net).
        frequency_embedding_size: int = 256,        # Width of the noise-label sinusoid fed to the timestep MLP.
        num_positions:          int | None = None,  # Tile-position conditioning with this many positions (N²; Arakawa et al.).
    ):
        super().__init__()
        self._check_args(in_channels, resolution, patch_size, hidden_size, depth, num_heads, mlp_ratio,
                         num_classes, extra_in_channels, out_channels, dropout, frequency_embedding_size)
        self.in_channels = in_channels
        self.extra_in_channels = extra_in_channels
        self.out_channels = (out_channels or in_channels) * (2 if learn_sigma else 1)
        self.resolution = resolution
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.frequency_embedding_size = frequency_embedding_size
        self.grid = resolution // patch_size                     # nominal token grid side
        self.size_multiple = patch_size                          # H, W must be multiples of this (as UNet.size_multiple)

        # Patchify: a P×P conv with stride P (one Linear per patch) and a fixed 2-D sin-cos position embedding.
        self.x_embedder = nn.Conv2d(in_channels + extra_in_channels, hidden_size, patch_size, stride=patch_size)
        self.register_buffer("pos_embed", self._pos_embed(self.grid, self.grid), persistent=False)

        # Conditioning: sinusoid(noise label) -> Linear-SiLU-Linear; class table with a null row at num_classes.
        self.t_embedder = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                        nn.Linear(hidden_size, hidden_size))
        self.y_embedder = nn.Embedding(num_classes + 1, hidden_size) if num_classes is not None else None

        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, dropout) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.num_positions = num_positions
        self.position_embed = PositionEmbedding(num_positions, hidden_size) if num_positions is not None else None
        self.initialize_weights()

    @staticmethod
    def _check_args(in_channels, resolution, patch_size, hidden_size, depth, num_heads, mlp_ratio,
                    num_classes, extra_in_channels, out_channels, dropout, frequency_embedding_size) -> None:
        def positive_int(name, v):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}={v!r} is invalid; allowed: a positive integer")
        for name, v in (("in_channels", in_channels), ("resolution", resolution), ("patch_size", patch_size),
                        ("hidden_size", hidden_size), ("depth", depth), ("num_heads", num_heads),
                        ("frequency_embedding_size", frequency_embedding_size)):
            positive_int(name, v)
        if out_channels is not None:
            positive_int("out_channels", out_channels)
        if num_classes is not None:
            positive_int("num_classes", num_classes)
        if not isinstance(extra_in_channels, int) or isinstance(extra_in_channels, bool) or extra_in_channels < 0:
            raise ValueError(f"extra_in_channels={extra_in_channels!r} is invalid; allowed: an integer >= 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid; allowed: 0 <= dropout < 1")
        if not mlp_ratio > 0 or int(hidden_size * mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio={mlp_ratio!r} is invalid; allowed: a positive number with "
                             f"int(hidden_size·mlp_ratio) >= 1")
        if resolution % patch_size:
            raise ValueError(f"patch_size={patch_size} does not divide resolution={resolution}; "
                             f"allowed: a divisor of {resolution}, one of {_divisors(resolution)}")
        if hidden_size % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide hidden_size={hidden_size}; "
                             f"allowed: a divisor of {hidden_size}, one of {_divisors(hidden_size)}")
        if hidden_size % 4:
            raise ValueError(f"hidden_size={hidden_size} is invalid; allowed: a multiple of 4 "
                             f"(the 2-D sin-cos position embedding splits it in four)")

    def _pos_embed(self, h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Fixed 2-D sin-cos embedding of an h×w token grid, row-major like the tokens: (1, h·w, D)."""
        return sincos_2d(self.hidden_size, h, w, device=device).flatten(1).T[None]

    def initialize_weights(self) -> None:
        """The one place of initialisation (DiT's): xavier-uniform Linears (and the patch conv, seen as a
        Linear), zero biases, N(0, 0.02) label table and timestep MLP, and ZERO for every adaLN
        modulation and the final Linear (adaLN-Zero), so a fresh DiT outputs exactly zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        for layer in (self.t_embedder[0], self.t_embedder[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + \
                     [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_inputs(self, x_in, noise_labels, class_labels):
        return check_net_inputs(self, x_in, noise_labels, class_labels, self.size_multiple, "patch_size")

    def embed(self, x_in: torch.Tensor, noise_labels: torch.Tensor,
              class_labels: torch.Tensor | None = None, positions: torch.Tensor | None = None):
        """The parts before the blocks: (tokens (B, T, D) with the position embedding, c_t (B, D)
        the timestep embedding, c_y (B, D) the label + tile-position embedding (zeros without
        them), (h, w) the token grid). The blocks see c = c_t + c_y; a fixed-point stack
        (`pdlib.nets.fixed_point`) gives some blocks c_y alone."""
        noise_labels = self._check_inputs(x_in, noise_labels, class_labels)
        positions = check_positions(self, positions, x_in.shape[0])
        h, w = x_in.shape[-2] // self.patch_size, x_in.shape[-1] // self.patch_size
        x = self.x_embedder(x_in).flatten(2).transpose(1, 2)     # (B, T = h·w, D), row-major tokens
        pos = self.pos_embed if (h, w) == (self.grid, self.grid) else self._pos_embed(h, w, x.device)
        x = x + pos.to(x.dtype)                                  # (B, T, D)

        c_t = self.t_embedder(timestep_embedding(noise_labels, self.frequency_embedding_size))  # (B, D)
        c_y = torch.zeros_like(c_t)
        if self.y_embedder is not None:
            if class_labels is None:                             # unconditional = null label
                class_labels = torch.full_like(noise_labels, self.num_classes, dtype=torch.long)
            c_y = c_y + self.y_embedder(class_labels).to(c_t.dtype)
        if positions is not None:
            c_y = c_y + self.position_embed(positions).to(c_t.dtype)
        return x, c_t, c_y, (h, w)

    def unembed(self, x: torch.Tensor, c: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The final adaLN layer and unpatchify: tokens (B, T, D) -> [B, out_channels, H, W]."""
        x = self.final_layer(x, c)                               # (B, T, out·P²), per token (c, i, j)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *hw)       # (B, out·P², h, w)
        return depth_to_space(x, self.patch_size)                # (B, out, H, W)

    def forward(self, x_in: torch.Tensor, noise_labels: torch.Tensor,
                class_labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """F(x_in, noise_labels, class_labels, positions) -> [B, out_channels, H, W] (ARCHITECTURE.md, Networks)."""
        x, c_t, c_y, hw = self.embed(x_in, noise_labels, class_labels, positions)
        c = c_t + c_y
        for block in self.blocks:
            x = block(x, c)                                      # (B, T, D)
        return self.unembed(x, c, hw)


# ----------------------------------------------------------------------------------------------
# Presets (the DiT paper's names, Table 1) and CPU-sized ones.

def _dit_config(hidden_size: int, depth: int, num_heads: int, patch_size: int) -> dict:
    return dict(hidden_size=hidden_size, depth=depth, num_heads=num_heads, patch_size=patch_size, mlp_ratio=4.0)


_DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

DIT_PRESETS: dict[str, dict] = {
    # The paper's 12 models (Table 1), DiT-{S,B,L,XL}/{2,4,8}. Built with the constructor defaults
    # (3-channel 32×32 pixels, unconditional); DiT's own latent configuration is DIT_PAPER_CONFIG.
    **{f"DiT-{size}/{p}": _dit_config(*_DIT_SIZES[size], patch_size=p) for size in _DIT_SIZES for p in (2, 4, 8)},
    # Unit tests: ~52k parameters (3 channels, 32×32), an 8×8 token grid at 32×32.
    "dit-tiny": dict(resolution=32, patch_size=4, hidden_size=32, depth=2, num_heads=2),
    # CPU chapters (32×32 Fashion-MNIST): ~1.87M parameters and ~0.30 GMAC per 32×32 forward, the compute
    # of the U-Net 'small' (1.37M, ~0.30 GMAC). P=2, the paper's best patch size (256 tokens at 32×32, 64
    # on 16×16 Patch-Diffusion crops); patch_size=4 cuts the compute 4× (~0.08 GMAC). 6 blocks of width
    # 128, 4 heads of 32 channels.
    "dit-small": dict(resolution=32, patch_size=2, hidden_size=128, depth=6, num_heads=4),
}

# DiT's own setting for the Table-1 counts: 4-channel 32×32 SD-VAE latents of 256² ImageNet, 1000 classes.
DIT_PAPER_CONFIG: dict = dict(in_channels=4, resolution=32, num_classes=1000, learn_sigma=True)

# Parameter counts published in the DiT paper (Table 1; the same for each patch size of a model).
DIT_PAPER_PARAMS: dict[str, float] = {"S": 33e6, "B": 130e6, "L": 458e6, "XL": 675e6}


def dit_preset(name: str, **overrides) -> DiT:
    """Build a named DiT preset (`DIT_PRESETS`), with any constructor argument overridden."""
    return build_preset(DiT, DIT_PRESETS, name, overrides, "DiT")
