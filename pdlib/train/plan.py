"""What the loop does when: the learning rate and EMA decay of each step, the step count, the
micro-batch size, counter-based seeds and the reproducible order of the data batches."""
from __future__ import annotations

import hashlib
import math

import torch

__all__ = ["lr_at", "ema_beta", "total_steps", "micro_batch_size", "derive_seed", "BatchStream"]


def lr_at(cfg, step: int) -> float:
    """Learning rate of step `step` (0-based): linear warm-up lr·min(1, (step+1)/warmup_steps)."""
    o = cfg.optim
    if o.warmup_steps <= 0:
        return o.lr
    return o.lr * min(1.0, (step + 1) / o.warmup_steps)


def ema_beta(cfg, step: int, n_images: int | None = None, seen: int | None = None) -> float:
    """EMA decay after step `step` (0-based), Karras et al. 2022: β = 0.5^(n/h) with n = the step's
    images (default batch_size) and h = half-life in images, ramped up as h ≤ ema_rampup·seen, seen
    = images before this step (default step·batch_size)."""
    o = cfg.optim
    h = float(o.ema_half_life_images)
    if h <= 0:
        return 0.0
    n = o.batch_size if n_images is None else n_images
    if o.ema_rampup is not None:
        h = min(h, (step * o.batch_size if seen is None else seen) * o.ema_rampup)
    return 0.5 ** (n / max(h, 1e-8))


def total_steps(cfg) -> int:
    """Optimizer steps of the run: run.steps, or ⌈kimg·1000/batch_size⌉ when run.kimg is set."""
    if cfg.run.kimg is not None:
        return math.ceil(cfg.run.kimg * 1000 / cfg.optim.batch_size)
    return cfg.run.steps


def micro_batch_size(cfg, world: int) -> int:
    """Images per rank per accumulation round: batch_size / (world · grad_accum), exactly."""
    o = cfg.optim
    if o.batch_size % (world * o.grad_accum):
        raise ValueError(f"optim.batch_size={o.batch_size} is not divisible by world_size·grad_accum "
                         f"= {world}·{o.grad_accum}; allowed: a multiple of {world * o.grad_accum} "
                         "(batch_size is the global batch per step)")
    return o.batch_size // (world * o.grad_accum)


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed that is a pure function of (seed, keys): counter-based randomness."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class BatchStream:
    """Global batches in a reproducible order, random access: batch k of the run is batch
    k mod ⌊N/B⌋ of epoch k div ⌊N/B⌋, whose order is randperm(N) seeded by (seed, 'data', epoch)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int, seed: int):
        self.images, self.labels = images, labels       # (N, C, H, W), (N,)
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = len(images) // batch_size       # drop_last
        if self.per_epoch < 1:
            raise ValueError(f"optim.batch_size={batch_size} is larger than the data set "
                             f"({len(images)} images); allowed: batch_size <= {len(images)}")
        self._epoch, self._perm = None, None

    def position(self, k: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global batch k."""
        return divmod(k, self.per_epoch)

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        epoch, i = self.position(k)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
            self._epoch, self._perm = epoch, torch.randperm(len(self.images), generator=g)
        idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        return self.images[idx], (None if self.labels is None else self.labels[idx])

    def extra(self, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n more images for global batch k (a method's step_multiplier > 1): the first n of a
        permutation seeded by (seed, 'extra', k) (uniform draws with replacement when n exceeds
        the data set); random access by step, so a resumed run draws the same ones."""
        N = len(self.images)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "extra", k))
        idx = torch.randperm(N, generator=g)[:n] if n <= N else torch.randint(N, (n,), generator=g)
        return self.images[idx], (None if self.labels is None else self.labels[idx])
