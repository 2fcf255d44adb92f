"""Patch Diffusion (Wang et al. 2023, arXiv 2304.12526): EDM trained on random patches that carry
their pixel coordinates as two extra input channels; sampled at full resolution with the full grid.

Training (the paper and its release):
- Each batch draws ONE patch side s from `patch_sizes` (default R/4, R/2, R for resolution R) with
  probabilities ((1−p)·2/5, (1−p)·3/5, p), p = `real_p` (or `patch_probs` given explicitly), or, with
  `progressive`, by training fraction (smallest first, each size for its probability's share).
- A step at patch side s holds k = min((R/s)², max_batch_multiplier) times the batch's images, one
  independent uniformly placed s×s crop each (no padding): about the pixels of a full-size batch
  whatever s, so every step costs about the same and a small-patch step sees k times the images
  (`batch_multiplier`, computed for any R; the release's table had no entry for an 8-pixel patch
  at R = 32 and gave ×8 where its image counter assumed ×4).
- Coordinate channels x = column, y = row of each pixel in the FULL image, (pos/(R−1) − 0.5)·2
  (`pdlib.patching.coord_grid`), enter the net after the c_in scaling (EDMPrecond's `extra`), so the
  net has C + 2 inputs and C outputs; `coords=False` is the ablation without them (C inputs).
- EDM's loss and preconditioning; the loss of an image is the mean over its crops, and the loop
  divides the sum by the images (`Batch.n_images`): a batch of many small patches weighs per image
  what a batch of whole images weighs. Label dropout for guidance is the base Method's.

More images per step (`distinct_images`, the default): after begin_step, `step_multiplier()` tells
pdlib.train that a step at patch side s draws k = min((R/s)², max_batch_multiplier) times
optim.batch_size images (the step's batch plus BatchStream.extra's, reproducible by step); each
gives ONE crop, so the step holds about the pixels of a full-size step and costs about as much, but
sees k times the images. The loop counts them (kimg, images/s) and the EMA half-life in images
follows them. With `distinct_images=False`, the k crops come from each of the step's m images
instead: the same pixels, m images per step (the ablation the chapter measures).

One size per step: pdlib.train calls `begin_step(step, n_steps, generator)` with a generator of the
step (the same on every rank and round), which fixes the size for all the step's micro-batches and
gives `progressive` its clock. Called without it (prepare_batch alone, in a test or a notebook),
the size is drawn per call from the given generator, and `progressive` is refused with a one-line
error.

Sampling: `sample(n, ...)` is EDM's (Heun by default) at R×R with the full grid; `resolution=` a
larger canvas whose grid continues (pos/(R−1) − 0.5)·2 beyond [−1, 1], `offset=` (rows, columns)
shifts the grid (out-painting), as the release allows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pdlib._checks import check, is_int, is_num
from pdlib.methods.base import Batch, register
from pdlib.methods.edm import EDMMethod, EDMOptions

__all__ = ["PatchDiffusionOptions", "PatchDiffusionMethod", "default_patch_sizes",
           "patch_probabilities", "batch_multiplier", "draw_patch_size", "progressive_patch_size"]


@dataclass(frozen=True)
class PatchDiffusionOptions(EDMOptions):
    """Options of Patch Diffusion (Wang et al. 2023): EDM's, plus how the patches are drawn."""
    name: str = "patch_diffusion"                   # the method
    real_p: float = 0.5                             # P(a step trains on whole images): the paper's p; the smaller sizes share 1 − p as 2:3 (the release)
    patch_sizes: tuple[int, ...] | None = None      # patch sides in pixels, increasing, each dividing data.resolution; None = (R/4, R/2, R), those the net accepts (filled when training)
    patch_probs: tuple[float, ...] | None = None    # P(each patch size) given explicitly (sums to 1; needs patch_sizes); None = from real_p
    max_batch_multiplier: int = 16                  # cap on the crops per image at patch side s, (R/s)² (16 leaves the defaults uncapped)
    distinct_images: bool = True                    # a small-patch step draws k = (R/s)² times the images, one crop each (the release); False = k crops of each of the step's images
    coords: bool = True                             # 2 coordinate input channels (x, y of each pixel in the full image); False = the ablation without them
    progressive: bool = False                       # patch size by training fraction (smallest first, each for its probability's share) instead of random

    def validate(self) -> None:
        super().validate()
        check(is_num(self.real_p) and 0 <= self.real_p <= 1, "method.real_p", self.real_p,
              "a number in [0, 1] (the probability of a full-size step)")
        s = self.patch_sizes
        if s is not None:
            ok = isinstance(s, tuple) and len(s) >= 1 and all(is_int(v) and v >= 1 for v in s)
            check(ok and all(a < b for a, b in zip(s, s[1:])), "method.patch_sizes", s,
                  "None or a tuple of increasing ints >= 1 (patch sides in pixels)")
        p = self.patch_probs
        if p is not None:
            check(s is not None, "method.patch_probs", p,
                  "None unless method.patch_sizes is given (one probability per size)")
            ok = isinstance(p, tuple) and len(p) == len(s) and all(is_num(v) and v >= 0 for v in p)
            check(ok and abs(sum(p) - 1) <= 1e-6, "method.patch_probs", p,
                  f"None or {len(s)} numbers >= 0 (one per patch size {s}) summing to 1")
        check(is_int(self.max_batch_multiplier) and self.max_batch_multiplier >= 1,
              "method.max_batch_multiplier", self.max_batch_multiplier, "an int >= 1")
        for key in ("distinct_images", "coords", "progressive"):
            check(isinstance(getattr(self, key), bool), f"method.{key}", getattr(self, key), "True or False")


# ----------------------------------------------------------------------------------------------
# The patch sizes, their probabilities, the multiplier and the draw (pure functions).

def default_patch_sizes(resolution: int, size_multiple: int = 1) -> tuple[int, ...]:
    """(R/4, R/2, R) (Wang et al. 2023; the release's default), keeping the integer sizes that are multiples of the
    net's `size_multiple` (R itself always)."""
    R = resolution
    below = [R // d for d in (4, 2) if R % d == 0 and (R // d) % size_multiple == 0]
    return tuple(sorted(set(below) | {R}))


def patch_probabilities(patch_sizes: tuple[int, ...], resolution: int, real_p: float) -> tuple[float, ...]:
    """P(each patch size) from real_p = p (Wang et al. 2023; the release): p for the full size
    R; the sizes below R share 1 − p, as 2/5 and 3/5 for two sizes (smaller first), all of it for one."""
    sizes = tuple(patch_sizes)
    check(sizes[-1] == resolution, "method.patch_sizes", sizes,
          f"sizes ending in data.resolution={resolution} while method.patch_probs is None "
          f"(real_p is the probability of the full size)")
    below = len(sizes) - 1
    check(below <= 2, "method.patch_probs", None, f"{len(sizes)} probabilities summing to 1 for "
          f"the patch_sizes {sizes} (real_p sets them for up to 3 sizes)")
    if below == 0:
        return (1.0,)
    shares = (1.0,) if below == 1 else (0.4, 0.6)
    return tuple((1.0 - real_p) * w for w in shares) + (float(real_p),)


def batch_multiplier(resolution: int, patch_size: int, cap: int) -> int:
    """Crops per image at patch side s: (R/s)², so a batch holds the pixels of its whole images
    (the release's table ratio is replaced by the formula, for any R), capped at `cap`."""
    check(is_int(patch_size) and 1 <= patch_size <= resolution and resolution % patch_size == 0,
          "patch_size", patch_size, f"a divisor of the resolution {resolution}")
    check(is_int(cap) and cap >= 1, "max_batch_multiplier", cap, "an int >= 1")
    return min((resolution // patch_size) ** 2, cap)


def draw_patch_size(patch_sizes, patch_probs, generator: torch.Generator | None = None) -> int:
    """One patch size with probabilities patch_probs, drawn with `generator` (one uniform number)."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = float(torch.rand((), generator=generator, device=dev))
    return _first_above(patch_sizes, patch_probs, u)


def progressive_patch_size(patch_sizes, patch_probs, fraction: float) -> int:
    """The patch size at this fraction of training (`progressive`): the sizes in increasing order,
    each for its probability's share of the run (release's `--progressive`)."""
    return _first_above(patch_sizes, patch_probs, float(fraction))


def _first_above(sizes, probs, u: float) -> int:
    """The first size whose cumulative probability exceeds u (the last likely one at u ≥ Σ)."""
    c = 0.0
    for s, p in zip(sizes, probs):
        c += p
        if u < c and p > 0:
            return int(s)
    return int(next(s for s, p in zip(reversed(sizes), reversed(probs)) if p > 0))


# ----------------------------------------------------------------------------------------------
# The method.

@register("patch_diffusion", PatchDiffusionOptions)
class PatchDiffusionMethod(EDMMethod):
    """EDM on random patches plus coordinate channels; full-grid (or larger-canvas) sampling."""

    def __init__(self, cfg):
        super().__init__(cfg)
        o, R = self.opts, self.resolution
        M = int(getattr(self.net, "size_multiple", 1))
        self.patch_sizes = tuple(o.patch_sizes) if o.patch_sizes is not None else default_patch_sizes(R, M)
        fit = [d for d in range(M, R + 1, M) if R % d == 0]
        check(all(s % M == 0 for s in self.patch_sizes), "method.patch_sizes", self.patch_sizes,
              f"sizes net {cfg.net.preset!r} accepts: divisors of {R} that are multiples of its "
              f"size_multiple {M}, {fit}")
        self.patch_probs = tuple(o.patch_probs) if o.patch_probs is not None else \
            patch_probabilities(self.patch_sizes, R, o.real_p)
        self.progress: float | None = None          # training fraction (begin_step), for `progressive`
        self.step_size: int | None = None           # the patch size begin_step fixed for its step

    @classmethod
    def resolve(cls, cfg):
        """Fill patch_sizes: (R/4, R/2, R) as far as the net accepts them (its size_multiple)."""
        cfg = super().resolve(cfg)
        if cfg.method.patch_sizes is None:
            from pdlib.nets import size_multiple
            R = cfg.data.resolution
            M = size_multiple(cfg.net.preset, **{**cfg.net.overrides, "resolution": R})
            cfg = cfg.replace(patch_sizes=default_patch_sizes(R, M))
        return cfg

    @classmethod
    def validate(cls, cfg) -> None:
        """The patch sizes against data.resolution (once it is known)."""
        R, o = cfg.data.resolution, cfg.method
        if R is None or o.patch_sizes is None:
            return
        from pdlib.patching import _divisors
        for s in o.patch_sizes:
            check(s <= R and R % s == 0, "method.patch_sizes", o.patch_sizes,
                  f"divisors of data.resolution={R} (at most {R}): {_divisors(R)}")
        if o.patch_probs is None:
            patch_probabilities(o.patch_sizes, R, o.real_p)

    def net_kwargs(self):
        return {**super().net_kwargs(), "extra_in_channels": 2 if self.opts.coords else 0}

    # -- training ----------------------------------------------------------------------------------
    def begin_step(self, step: int, n_steps: int, generator: torch.Generator | None = None) -> None:
        """Record the training fraction step/n_steps (the progressive schedule's clock) and fix the
        patch size of the step: the progressive schedule's, or drawn with the step's generator
        (None: each micro-batch draws its own with the loop's generator)."""
        self.progress = step / max(int(n_steps), 1)
        self.step_size = None
        if self.opts.progressive or generator is not None:
            self.step_size = self.step_patch_size(generator)

    def step_multiplier(self) -> int:
        """Images this step draws per batch image (pdlib.train asks after begin_step): k at a
        small patch size with distinct_images, else 1."""
        if self.opts.distinct_images and self.step_size is not None:
            return self.multiplier(self.step_size)
        return 1

    def crops_per_image(self, patch_size: int) -> int:
        """Crops each image of prepare_batch gives: 1 with distinct_images (the loop drew k times
        the images), else the multiplier k."""
        return 1 if self.opts.distinct_images else self.multiplier(patch_size)

    def multiplier(self, patch_size: int) -> int:
        """Crops per image at this patch side: min((R/s)², max_batch_multiplier)."""
        return batch_multiplier(self.resolution, patch_size, self.opts.max_batch_multiplier)

    def step_patch_size(self, generator: torch.Generator | None = None) -> int:
        """The patch side of a batch: drawn with generator, or the progressive schedule's (one size:
        no draw, so patch_sizes=(R,) with coords=False is EDM, random numbers included)."""
        if len(self.patch_sizes) == 1:
            return self.patch_sizes[0]
        if not self.opts.progressive:
            return draw_patch_size(self.patch_sizes, self.patch_probs, generator)
        if self.progress is None:
            raise ValueError("method.progressive=True needs the training progress: call "
                             "method.begin_step(step, n_steps) before each step (pdlib.train does); "
                             "allowed: progressive=False, or a loop that calls begin_step")
        return progressive_patch_size(self.patch_sizes, self.patch_probs, self.progress)

    def prepare_batch(self, images, labels, generator=None, patch_size: int | None = None) -> Batch:
        """m images → c·m crops of one patch side s, c = crops_per_image(s) (1 with distinct_images,
        whose loop gives k times the images; k without), with their coordinate channels in
        cond['extra'] and their image's (dropped) label; n_images = m. s is `patch_size` if given,
        else the size begin_step fixed for the step, else drawn with `generator`."""
        b = super().prepare_batch(images, labels, generator)         # label dropout, per image
        R = self.resolution
        s = patch_size or self.step_size or self.step_patch_size(generator)
        check(s in self.patch_sizes, "patch_size", s, f"one of method.patch_sizes {self.patch_sizes}")
        k = self.crops_per_image(s)
        if s == R:                                                    # whole images, k = 1
            x0 = images
            top = left = torch.zeros(len(images), dtype=torch.long, device=images.device)
        else:
            from pdlib.patching import random_crops
            x0, top, left = random_crops(images, s, n=k, generator=generator)   # (k·m, C, s, s)
        cond = {key: v.repeat_interleave(k, 0) for key, v in b.cond.items()}    # per crop
        if self.opts.coords:
            from pdlib.patching import coord_grid
            cond["extra"] = coord_grid(R, s, s, top, left).to(x0.dtype)         # (k·m, 2, s, s)
        return Batch(x0=x0, cond=cond, n_images=b.n_images)

    def loss(self, batch, generator=None, denoiser=None):
        """Per-crop EDM losses, each divided by its image's k crops, so that their sum over
        batch.n_images (the loop's normaliser) is the mean over images of each image's mean loss."""
        k, rest = divmod(len(batch.x0), batch.n_images)
        if rest or k < 1:
            raise ValueError(f"batch holds {len(batch.x0)} crops of {batch.n_images} images; allowed: "
                             "the same number of crops of each image (a Batch of prepare_batch)")
        return super().loss(batch, generator, denoiser) / k

    # -- sampling ----------------------------------------------------------------------------------
    def sample(self, n, generator=None, steps=None, class_labels=None, guidance=1.0, device=None,
               callback=None, sampler: str = "heun", resolution: int | None = None,
               offset: tuple[int, int] = (0, 0), **kwargs):
        """n images (n, C, H, H), H = `resolution` (default R), by EDM's Heun (or Euler) sampler
        with the coordinate grid of training continued over the canvas and shifted by `offset`
        (rows, columns) in pixels: R and (0, 0) give the full image's grid, [−1, 1]."""
        R, M = self.resolution, int(getattr(self.net, "size_multiple", 1))
        H = R if resolution is None else resolution
        check(is_int(H) and H >= M and H % M == 0, "resolution", H,
              f"None (= {R}) or a canvas side that is a multiple of the net's size_multiple {M}")
        ok = isinstance(offset, (tuple, list)) and len(offset) == 2 and all(is_int(v) for v in offset)
        check(ok, "offset", offset, "(rows, columns): two ints, the grid's shift in pixels")
        extra = None
        if self.opts.coords:
            from pdlib.patching import coord_grid
            extra = coord_grid(R, H, H, int(offset[0]), int(offset[1]))            # (2, H, H)
        return self._sample_canvas(n, (self.img_channels, H, H), extra, generator, steps, class_labels,
                                   guidance, device, callback, sampler, **kwargs)
