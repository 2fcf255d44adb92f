"""Denoiser wrappers: guidance, thresholding, clipping, NFE counting, SNR splitting and tiles.

Every wrapper is again a denoiser (ARCHITECTURE.md): an `nn.Module` with
`D(x, sigma, **cond) -> x0_hat` that holds the denoiser(s) it wraps, and it passes the learned
variances through: `learn_sigma` is true when what it wraps learns them, and
`forward_with_variance(x, sigma, **cond) -> (x0_hat, v)` applies the same transformation to x̂0
and hands the variance values v of the wrapped denoiser on (Nichol & Dhariwal 2021, eq. 15;
`pdlib.precond.VPPrecond(..., learn_sigma=True)`). So `ddpm_sample(..., variance='auto')` uses
the learned variances however deeply a model is wrapped.

A wrapper writes its transformation once, in `_denoise(call, x, sigma, **cond) -> (x0, v)`, where
`call(denoiser, x, sigma, **cond)` evaluates a wrapped denoiser and returns `(x0, v)` (v None
when only x̂0 was asked for); `DenoiserWrapper` turns that into `forward` and
`forward_with_variance`.
"""

from __future__ import annotations

import torch
from torch import nn

from pdlib.precond import sigma_batch

__all__ = [
    "learns_variance", "DenoiserWrapper", "CFGDenoiser", "DynamicThreshold", "ClipDenoiser",
    "NFECounter", "SNRSplitDenoiser", "TiledDenoiser",
]


def learns_variance(denoiser) -> bool:
    """True when a denoiser learns its variances: `learn_sigma` set and `forward_with_variance`
    there (VPPrecond(..., learn_sigma=True), and any wrapper of denoisers that all learn them)."""
    return bool(getattr(denoiser, "learn_sigma", False)) and hasattr(denoiser, "forward_with_variance")


def _x0_only(denoiser, x, sigma, **cond):
    return denoiser(x, sigma, **cond), None


def _with_variance(denoiser, x, sigma, **cond):
    x0, v = denoiser.forward_with_variance(x, sigma, **cond)
    return x0, v


def _checked(denoiser, name: str):
    if not callable(denoiser):
        raise ValueError(f"{name}={denoiser!r} is invalid; allowed: a denoiser D(x, sigma, **cond)")
    return denoiser


def _per_sample(cond: dict, batch: int, f) -> dict:
    """`cond` with f applied to every tensor that has one row per sample (class_labels, extra, ...)."""
    return {k: (f(v) if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch else v)
            for k, v in cond.items()}


class DenoiserWrapper(nn.Module):
    """Base of the wrappers: holds the wrapped denoiser(s) and passes `learn_sigma` and
    `forward_with_variance` through. A subclass implements `_denoise` once for both paths;
    `DenoiserWrapper(D)` itself is the identity wrapper (it makes a plain callable a module)."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = _checked(denoiser, "denoiser")

    def wrapped(self) -> list:
        """The denoisers this one evaluates (one, except for SNRSplitDenoiser)."""
        return [self.denoiser]

    @property
    def learn_sigma(self) -> bool:
        """True when every wrapped denoiser learns its variances."""
        members = self.wrapped()
        return bool(members) and all(learns_variance(d) for d in members)

    def _denoise(self, call, x, sigma, **cond):
        """(x̂0, v) of this wrapper; `call(denoiser, x, sigma, **cond) -> (x̂0, v or None)`."""
        return call(self.denoiser, x, sigma, **cond)

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        return self._denoise(_x0_only, x, sigma, **cond)[0]

    def forward_with_variance(self, x: torch.Tensor, sigma, **cond) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0, v): this wrapper's x̂0 and the variance values v ∈ [0, 1] of what it wraps."""
        if not self.learn_sigma:
            raise ValueError(f"{type(self).__name__}.forward_with_variance needs wrapped denoisers "
                             f"with learn_sigma=True and forward_with_variance (e.g. "
                             f"VPPrecond(..., learn_sigma=True))")
        return self._denoise(_with_variance, x, sigma, **cond)


class CFGDenoiser(DenoiserWrapper):
    """Classifier-free guidance (Ho & Salimans 2022): D̃ = D_u + w·(D_c − D_u), both in one batched call.

    Guidance on x̂0 equals guidance on ε̂ at the same (x, σ): ε̂ = (x − D)/σ is affine in D, so
    ε̃ = ε_u + w(ε_c − ε_u) gives x − σε̃ = D_u + w(D_c − D_u). w = 1: conditional; w = 0: unconditional.
    The variance values are the conditional half's (as GLIDE and Luhman & Luhman do).
    """

    def __init__(self,
        denoiser,                       # D(x, σ, class_labels=..., **cond)
        scale: float,                   # guidance scale w
        null_label: int,                # the label that means "no class" (num_classes)
    ):
        super().__init__(denoiser)
        self.scale, self.null_label = float(scale), int(null_label)

    def _denoise(self, call, x, sigma, class_labels=None, **cond):
        if class_labels is None:
            raise ValueError("CFGDenoiser needs class_labels; allowed: an int64 tensor [B]")
        B = x.shape[0]
        s = sigma_batch(sigma, B, x.device)                                  # (B,) float64
        labels = torch.cat([class_labels, torch.full_like(class_labels, self.null_label)])
        doubled = _per_sample(cond, B, lambda v: torch.cat([v, v]))
        x0, v = call(self.denoiser, torch.cat([x, x]), torch.cat([s, s]), class_labels=labels, **doubled)
        D_c, D_u = x0.chunk(2)                                               # [conditional; unconditional]
        return D_u + self.scale * (D_c - D_u), (None if v is None else v.chunk(2)[0])


class DynamicThreshold(DenoiserWrapper):
    """Saharia et al. 2022 (Imagen), dynamic thresholding: s = max(1, quantile_p |x̂0|) per sample, x̂0 ← clip(x̂0, ±s)/s."""

    def __init__(self,
        denoiser,                       # D(x, σ, **cond)
        quantile: float = 0.995,        # percentile p of |x̂0| that sets the threshold s
    ):
        super().__init__(denoiser)
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile={quantile!r} is invalid; allowed: 0 < quantile <= 1")
        self.quantile = float(quantile)

    def threshold(self, x0: torch.Tensor) -> torch.Tensor:
        s = torch.quantile(x0.detach().abs().reshape(x0.shape[0], -1).to(torch.float64), self.quantile, dim=1)
        s = s.clamp(min=1.0).to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))    # (B, 1, 1, 1)
        return torch.maximum(torch.minimum(x0, s), -s) / s

    def _denoise(self, call, x, sigma, **cond):
        x0, v = call(self.denoiser, x, sigma, **cond)
        return self.threshold(x0), v


class ClipDenoiser(DenoiserWrapper):
    """x̂0 clipped to [lo, hi] (Ho et al. 2020 / ADM `clip_denoised`)."""

    def __init__(self,
        denoiser,                       # D(x, σ, **cond)
        lo: float = -1.0,               # lower bound of the data range
        hi: float = 1.0,                # upper bound of the data range
    ):
        super().__init__(denoiser)
        if not lo < hi:
            raise ValueError(f"(lo, hi)=({lo!r}, {hi!r}) is invalid; allowed: lo < hi")
        self.lo, self.hi = float(lo), float(hi)

    def _denoise(self, call, x, sigma, **cond):
        x0, v = call(self.denoiser, x, sigma, **cond)
        return x0.clamp(self.lo, self.hi), v


class NFECounter(DenoiserWrapper):
    """Counts network function evaluations: `.nfe` += 1 per (batched) call, and `.rows` += the
    images in it; rows/batch is the NFE per image, which counts a guided step twice when a
    CFGDenoiser outside the counter doubles the batch."""

    def __init__(self, denoiser):
        super().__init__(denoiser)
        self.nfe, self.rows = 0, 0

    def reset(self) -> None:
        self.nfe, self.rows = 0, 0

    def _denoise(self, call, x, sigma, **cond):
        self.nfe += 1
        self.rows += x.shape[0]
        return call(self.denoiser, x, sigma, **cond)


class SNRSplitDenoiser(DenoiserWrapper):
    """Luhman & Luhman's SNR splitting: model k serves boundary[k] > SNR ≥ boundary[k+1], boundaries [∞, s1, …, 0].

    Each sample goes to the model of its σ (SNR = 1/σ²), for x̂0 and for the variance values
    alike; `learn_sigma` is true when every model learns its variances.
    """

    def __init__(self,
        denoisers,                      # [D_0, …, D_K]: D_0 for the highest SNR (lowest noise)
        snr_boundaries,                 # the K inner boundaries s1 > … > sK > 0 (SNR = 1/σ²)
    ):
        nn.Module.__init__(self)                                             # many members, no .denoiser
        denoisers = [_checked(d, f"denoisers[{j}]") for j, d in enumerate(denoisers)]
        b = [float(v) for v in snr_boundaries]
        if len(denoisers) != len(b) + 1:
            raise ValueError(f"{len(denoisers)} denoisers for {len(b)} boundaries; allowed: "
                             f"len(denoisers) = len(snr_boundaries) + 1")
        if any(v <= 0 for v in b) or any(b[k + 1] >= b[k] for k in range(len(b) - 1)):
            raise ValueError(f"snr_boundaries={b} is invalid; allowed: strictly decreasing values > 0")
        self.denoisers = nn.ModuleList([d if isinstance(d, nn.Module) else DenoiserWrapper(d) for d in denoisers])
        self.snr_boundaries = b

    def wrapped(self) -> list:
        return list(self.denoisers)

    def index(self, sigma: torch.Tensor) -> torch.Tensor:
        """Which model serves each σ: the number of boundaries with SNR < boundary."""
        snr = 1 / sigma.to(torch.float64) ** 2
        k = torch.zeros_like(snr, dtype=torch.int64)
        for v in self.snr_boundaries:
            k += (snr < v).to(torch.int64)
        return k

    def _denoise(self, call, x, sigma, **cond):
        B = x.shape[0]
        s = sigma_batch(sigma, B, x.device)                                  # (B,) float64
        k = self.index(s)
        models = k.unique().tolist()
        if len(models) == 1:                                                 # one σ interval (a sampler's step)
            x0, v = call(self.denoisers[models[0]], x, s, **cond)
            return x0.to(x.dtype), v
        x0_out, v_out = torch.empty_like(x), None
        for j in models:
            m = k == j
            x0, v = call(self.denoisers[j], x[m], s[m], **_per_sample(cond, B, lambda v: v[m]))
            x0_out[m] = x0.to(x.dtype)
            if v is not None:
                if v_out is None:
                    v_out = v.new_empty((B, *v.shape[1:]))
                v_out[m] = v
        return x0_out, v_out



class TiledDenoiser(DenoiserWrapper):
    """Patch-by-patch generation (Arakawa et al. 2023): a denoiser of whole images D(x, σ, **cond)
    made of a denoiser of tiles, run on one chunk of tiles at a time.

    x [B, C, H, W] is cut into an N×N grid of tiles (`pdlib.patching.to_tiles`, index i·N + j,
    row-major; any H × W that N divides). Each network run takes `chunk` tiles of every image:
    chunk = 1 holds one tile per image (the least memory), chunk = N² all of them in one batch
    (the release's layout, whose peak memory is the whole image's). A tile gets its position
    (`position=` k, for a net with num_positions = N²) and, with `gcc`, the Global Content
    Conditioning: the whole current x average-pooled to the tile size (`global_content`), scaled
    like the image input of the net (`input_scale(σ)`: √ᾱ for VPPrecond, so the net sees pooled
    x_t; c_in for EDMPrecond), appended as `extra` channels. Recomputed at every call, i.e. at
    every sampler step. The tiles' x̂0 are put back in place (`from_tiles`).
    """

    def __init__(self,
        denoiser,                       # tile denoiser D(x_tile, σ, class_labels=, extra=, position=): a VPPrecond or EDMPrecond
        grid: int,                      # N: the image is cut into N×N tiles
        gcc: bool = True,               # Global Content Conditioning (C extra input channels)
        position: bool = True,          # pass each tile's index k = i·N + j (one-hot in the net)
        chunk: int = 1,                 # tiles of each image per network run (1 … N²; more is clipped to N²)
    ):
        super().__init__(denoiser)
        from pdlib._checks import check, is_int
        check(is_int(grid) and grid >= 1, "grid", grid, "an int N >= 1 (the image is cut into N×N tiles)")
        check(is_int(chunk) and chunk >= 1, "chunk", chunk,
              f"an int >= 1 (tiles per network run; {grid * grid} = all of them at once)")
        for key, v in (("gcc", gcc), ("position", position)):
            check(isinstance(v, bool), key, v, "True or False")
        net = getattr(denoiser, "net", None)
        if gcc:
            C, E = getattr(net, "in_channels", None), getattr(net, "extra_in_channels", None)
            check(C is not None and E == C, "gcc", gcc,
                  f"False, or a tile net with extra_in_channels = in_channels (the C global-content "
                  f"channels); this net has in_channels={C}, extra_in_channels={E}")
            check(hasattr(denoiser, "input_scale"), "gcc", gcc,
                  "False, or a tile denoiser with input_scale(σ) (VPPrecond, EDMPrecond)")
        if position:
            n = getattr(net, "num_positions", None)
            check(n == grid * grid, "position", position,
                  f"False, or a tile net with num_positions = N² = {grid * grid}; this net has "
                  f"num_positions={n}")
        self.grid, self.gcc, self.position, self.chunk = int(grid), gcc, position, int(chunk)

    def _denoise(self, call, x, sigma, **cond):
        from pdlib.patching import check_grid, from_tiles, global_content, to_tiles
        if "extra" in cond or "position" in cond:
            raise ValueError("TiledDenoiser makes the tiles' extra= and position= itself; allowed: "
                             "cond without them (class_labels, ...)")
        if x.ndim != 4:
            raise ValueError(f"x has shape {tuple(x.shape)}; allowed: [B, C, H, W]")
        B, C, H, W = x.shape
        N = self.grid
        h, w = check_grid(N, H, W)
        s = sigma_batch(sigma, B, x.device)                                  # (B,) float64
        tiles = to_tiles(x, N)                                               # (B, N², C, h, w)
        if self.gcc:
            scale = self.denoiser.input_scale(s).to(x.dtype).reshape(B, 1, 1, 1)
            g = global_content(x, N) * scale                                 # (B, C, h, w)
        x0_out, v_out = torch.empty_like(tiles), None
        for start in range(0, N * N, self.chunk):
            c = min(self.chunk, N * N - start)
            rep = lambda v: v.repeat_interleave(c, 0)                        # image-major: b·c + j
            kw = _per_sample(cond, B, rep)
            if self.gcc:
                kw["extra"] = rep(g)
            if self.position:
                kw["position"] = torch.arange(start, start + c, device=x.device).repeat(B)
            x0, v = call(self.denoiser, tiles[:, start:start + c].reshape(B * c, C, h, w),
                         rep(s), **kw)
            x0_out[:, start:start + c] = x0.to(x.dtype).reshape(B, c, C, h, w)
            if v is not None:
                if v_out is None:
                    v_out = v.new_empty((B, N * N, *v.shape[1:]))
                v_out[:, start:start + c] = v.reshape(B, c, *v.shape[1:])
        return from_tiles(x0_out, N), (None if v_out is None else from_tiles(v_out, N))
