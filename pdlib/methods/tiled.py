"""Patch-by-patch generation (Arakawa et al. 2023, arXiv 2304.07087): one network denoises one
tile of an N×N grid at a time, told where the tile is and what the whole image looks like.

- The image is cut into N×N non-overlapping tiles (`pdlib.patching.to_tiles`: index i·N + j,
  row-major, any H × W that N divides). The net sees one tile (H/N × W/N), so the memory of one
  network run shrinks with the tile: sampling runs `chunk` tiles of each image at a time
  (`pdlib.denoisers.TiledDenoiser`); chunk = N² is the release's layout (all tiles stacked into
  the batch of one run), which saves no memory.
- Position conditioning (`position`): the tile index as one-hot(N²) → MLP, added to the time
  embedding that drives every ResBlock's scale and shift (`pdlib.nets.layers.PositionEmbedding`).
- Global Content Conditioning (`gcc`): the whole current noisy image, average-pooled by N to the
  tile size, as C extra input channels of every tile; recomputed at every sampler step. In
  training the whole image is noised and each chosen tile sees its pooled version.
- Training (`pdlib.losses.TileLoss`): `tiles_per_image` distinct random tiles of each image
  (the release: one), ε-prediction on the cosine schedule with an L1 loss as in the release
  (`precond='vp'`), or EDM's preconditioning and loss (`precond='edm'`, EDM's Table 1 defaults).
  The loss of an image is the mean over its tiles, and the loop divides by the images.
- Sampling: the whole image through the tiled denoiser D(x, σ, **cond), so every sampler of
  pdlib works unchanged: DDIM (default), DDPM or EDM's Heun for 'vp', with x̂0 clipped to
  [−1, 1] as the release's samplers do; Heun (default) or Euler for 'edm'. `size=(H, W)` samples another canvas that N divides (non-square included).

With N = 1, position=False and gcc=False the method is the plain untiled model of the same net.
The tile net is built for the whole image (its `resolution` is R, which fixes the levels that
get attention), so every grid trains the same architecture, with the same parameters, on
smaller inputs (the nets are fully convolutional; a DiT's position embedding follows the tile).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pdlib._checks import check, is_int
from pdlib.methods.base import Batch, Method, MethodOptions, register

__all__ = ["TiledOptions", "TiledMethod", "PRECONDS"]

PRECONDS = ("vp", "edm")


@dataclass(frozen=True)
class TiledOptions(MethodOptions):
    """Options of patch-by-patch generation (Arakawa et al. 2023)."""
    name: str = "tiled"                     # the method
    grid: int = 2                           # N: the image is cut into N×N tiles (the paper's "patch divider"; 1 = untiled)
    position: bool = True                   # condition each tile on its index i·N + j (one-hot → embedding)
    gcc: bool = True                        # Global Content Conditioning: the whole noisy image pooled to the tile size as C extra channels
    tiles_per_image: int = 1                # distinct random tiles of each image per training step (1 … N²; the release: 1)
    chunk: int = 1                          # sampling: tiles of each image per network run (1 = least memory; N² = the release's batched layout)
    precond: str = "vp"                     # 'vp': ε-prediction on a VP schedule (the release); 'edm': EDM's preconditioning and loss
    prediction: str = "eps"                 # precond='vp': the network's target, 'eps' | 'x0' | 'v'
    schedule: str = "cosine"                # precond='vp': noise schedule ('cosine' as the release, 'linear', 'linearX')
    diffusion_steps: int = 1000             # precond='vp': T of the schedule
    loss: str = "l1"                        # precond='vp': 'l1' (the release) or 'l2' on the target

    def validate(self) -> None:
        check(is_int(self.grid) and self.grid >= 1, "method.grid", self.grid,
              "an int N >= 1 (the image is cut into N×N tiles; 1, 2, 4, 8, ...)")
        for key in ("position", "gcc"):
            check(isinstance(getattr(self, key), bool), f"method.{key}", getattr(self, key), "True or False")
        n2 = self.grid ** 2 if is_int(self.grid) else None
        check(is_int(self.tiles_per_image) and 1 <= self.tiles_per_image <= (n2 or 1),
              "method.tiles_per_image", self.tiles_per_image, f"an int in [1, N² = {n2}]")
        check(is_int(self.chunk) and self.chunk >= 1, "method.chunk", self.chunk,
              f"an int >= 1 (tiles per network run; N² = {n2} runs all tiles at once)")
        check(self.precond in PRECONDS, "method.precond", self.precond, f"one of {PRECONDS}")
        from pdlib.precond import PREDICTIONS
        check(self.prediction in PREDICTIONS, "method.prediction", self.prediction, f"one of {PREDICTIONS}")
        check(self.loss in ("l1", "l2"), "method.loss", self.loss, "'l1' or 'l2'")
        from pdlib.methods.vp import check_vp_schedule
        check_vp_schedule(self.schedule, self.diffusion_steps)


def _tile_check(grid: int, height: int, width: int, multiple: int, name: str = "method.grid") -> None:
    """N must divide H and W, and the tile (H/N × W/N) must be a size the net accepts."""
    from pdlib.patching import _divisors
    ok = [d for d in _divisors(min(height, width))
          if height % d == 0 and width % d == 0 and (height // d) % multiple == 0
          and (width // d) % multiple == 0]
    good = is_int(grid) and grid >= 1 and height % grid == 0 and width % grid == 0 \
        and (height // grid) % multiple == 0 and (width // grid) % multiple == 0
    check(good, name, grid, f"an N dividing the {height}x{width} image into tiles whose sides are "
          f"multiples of the net's size_multiple {multiple}: one of {ok}")


@register("tiled", TiledOptions)
class TiledMethod(Method):
    """Arakawa et al. 2023: a tile net with position and global-content conditioning; whole-image
    sampling through `TiledDenoiser`, one chunk of tiles per network run."""

    @classmethod
    def validate(cls, cfg) -> None:
        """The grid against data.resolution and the net's size_multiple (once they are known)."""
        R = cfg.data.resolution
        if R is None:
            return
        from pdlib.nets import size_multiple
        M = size_multiple(cfg.net.preset, **{**cfg.net.overrides, "resolution": R})
        _tile_check(cfg.method.grid, R, R, M)

    def __init__(self, cfg):
        super().__init__(cfg)
        o = self.opts
        self.samplers = ("ddim", "ddpm", "heun") if o.precond == "vp" else ("heun", "euler")
        self.default_sample_steps = 50 if o.precond == "vp" else 18

    def net_kwargs(self):
        o = self.opts
        return {**super().net_kwargs(), "learn_sigma": False,
                "extra_in_channels": self.img_channels if o.gcc else 0,
                "num_positions": o.grid ** 2 if o.position else None}

    def build_denoiser(self, net):
        from pdlib.denoisers import TiledDenoiser
        from pdlib.precond import EDMPrecond, VPPrecond
        o = self.opts
        if o.precond == "vp":
            from pdlib.schedules import vp_schedule
            self.schedule = vp_schedule(o.schedule, int(o.diffusion_steps))
            tile = VPPrecond(net, self.schedule, prediction=o.prediction)
        else:
            self.schedule = None
            tile = EDMPrecond(net)
        self.tiled = TiledDenoiser(tile, o.grid, gcc=o.gcc, position=o.position, chunk=o.chunk)
        return self.tiled

    def build_loss(self):
        from pdlib.losses import TileLoss
        o = self.opts
        return TileLoss(o.grid, kind=o.precond, gcc=o.gcc, position=o.position, schedule=self.schedule,
                        prediction=o.prediction, norm=o.loss)

    @property
    def tile_denoiser(self):
        """The denoiser of one tile (VPPrecond or EDMPrecond around the net)."""
        return self.tiled.denoiser

    # -- training ----------------------------------------------------------------------------------
    def draw_tiles(self, m: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """int64 [m, k]: k = tiles_per_image distinct tile indices of each of m images, uniformly
        drawn (all N² in order, without random numbers, when k = N²)."""
        N2, k = self.opts.grid ** 2, self.opts.tiles_per_image
        if k == N2:
            return torch.arange(N2, device=device).expand(m, N2).contiguous()
        dev = generator.device if generator is not None else torch.device(device or "cpu")
        order = torch.rand((m, N2), generator=generator, device=dev).argsort(dim=1)
        return order[:, :k].to(device or dev)

    def prepare_batch(self, images, labels, generator=None) -> Batch:
        """m whole images (the loss noises them whole) plus the tiles to train on, cond['tiles']
        int64 [m, k]; labels dropped per image for guidance; n_images = m."""
        b = super().prepare_batch(images, labels, generator)
        b.cond["tiles"] = self.draw_tiles(len(images), generator, images.device)
        return b

    def loss(self, batch, generator=None, denoiser=None):
        """Per-tile losses divided by the tiles of their image: summed over batch.n_images, the
        mean over images of each image's mean tile loss."""
        from pdlib.denoisers import TiledDenoiser
        D = self.denoiser if denoiser is None else denoiser
        if not isinstance(D, TiledDenoiser):
            raise ValueError(f"denoiser={type(D).__name__}: allowed the method's TiledDenoiser "
                             "(its tile denoiser is what the loss trains)")
        cond = dict(batch.cond)
        tiles = cond.pop("tiles", None)
        k = self.opts.grid ** 2 if tiles is None else tiles.shape[1]
        return self.loss_fn(D.denoiser, batch.x0, generator=generator, tiles=tiles, **cond) / k

    # -- sampling ----------------------------------------------------------------------------------
    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0, device=None,
               callback=None, sampler: str | None = None, size: tuple[int, int] | None = None,
               chunk: int | None = None, clip: bool | None = None, **kwargs):
        """n images (n, C, H, W), (H, W) = `size` (default R×R, any sides the grid divides), denoised
        tile by tile (`chunk` tiles of each image per network run; default method.chunk) by DDIM
        (default), DDPM or Heun ('vp'), or Heun (default) or Euler ('edm'). `clip`: x̂0 clipped
        to [−1, 1] at every step; None = for 'vp' (the release's samplers clip: an ε-prediction's
        x̂0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ explodes where the cosine schedule's ᾱ is near 0), not for 'edm'."""
        from pdlib import samplers as S
        o, R = self.opts, self.resolution
        H, W = (R, R) if size is None else (size if isinstance(size, (tuple, list)) and len(size) == 2
                                            else (None, None))
        check(is_int(H) and is_int(W) and H >= 1 and W >= 1, "size", size, "None or (H, W): two ints")
        M = int(getattr(self.net, "size_multiple", 1))
        check(H % o.grid == 0 and W % o.grid == 0 and (H // o.grid) % M == 0
              and (W // o.grid) % M == 0, "size", (H, W),
              f"None or (H, W) that method.grid={o.grid} divides into tiles whose sides are "
              f"multiples of the net's size_multiple {M}: H and W multiples of {o.grid * M}")
        sampler = sampler or self.samplers[0]
        check(sampler in self.samplers, "sampler", sampler, f"one of {list(self.samplers)}")
        check(clip in (None, True, False), "clip", clip, "None (= precond 'vp'), True or False")
        D, cond, device = self._sample_setup(n, generator, class_labels, guidance, device)
        if (o.precond == "vp") if clip is None else clip:
            from pdlib.denoisers import ClipDenoiser
            D = ClipDenoiser(D)
        tiled = self.tiled                  # (self.denoiser may wrap it: an NFE counter, guidance)
        if chunk is not None:
            check(is_int(chunk) and chunk >= 1, "chunk", chunk, "None or an int >= 1")
            tiled.chunk, saved = int(chunk), tiled.chunk
        steps = steps or self.default_sample_steps
        shape = (self.img_channels, int(H), int(W))
        try:
            if o.precond == "vp":
                from pdlib.schedules import respace, sampling_sigmas
                sigmas = sampling_sigmas(respace(self.schedule, str(steps))).to(device)
                fn = {"ddim": S.ddim_sample, "ddpm": S.ddpm_sample, "heun": S.edm_sample}[sampler]
                x = self._noise(n, sigmas, generator, device, vp=True, shape=shape)
            else:
                from pdlib.schedules import edm_sigmas
                sigmas = edm_sigmas(steps).to(device)
                fn = {"heun": S.edm_sample, "euler": S.euler_sample}[sampler]
                x = self._noise(n, sigmas, generator, device, vp=False, shape=shape)
            with torch.no_grad():
                x = fn(D, x, sigmas, generator=generator, callback=callback, cond=cond, **kwargs)
        finally:
            if chunk is not None:
                tiled.chunk = saved
        return x.float().clamp(-1, 1)
