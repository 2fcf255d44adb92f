"""SNR splitting at sampling (Luhman & Luhman 2022, §3.4): k VP models, model j trained with
`method.snr_interval` = (boundary[j], boundary[j+1]) over the boundaries [∞, s1, …, sK, 0], serve
the σ whose SNR = 1/σ² falls in their interval. Model 0 is the high-SNR (low-noise) model.
Training is `pdlib.train.train_split` (the low-SNR model warm-starts from the high-SNR one)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from pdlib.methods.vp import VPMethod

__all__ = ["snr_intervals", "SplitMethod"]


def snr_intervals(snr_boundaries: Sequence[float]) -> list[tuple[float, float]]:
    """[(∞, s1), (s1, s2), …, (sK, 0)] from the inner boundaries s1 > … > sK > 0."""
    b = [float(v) for v in snr_boundaries]
    if not b or any(not v > 0 or math.isinf(v) for v in b) or any(b[k + 1] >= b[k] for k in range(len(b) - 1)):
        raise ValueError(f"snr_boundaries={b} is invalid; allowed: a non-empty, strictly decreasing "
                         f"list of finite values > 0")
    edges = [math.inf, *b, 0.0]
    return list(zip(edges[:-1], edges[1:]))


class SplitMethod(VPMethod):
    """k trained VP methods as one: `.denoiser` is their SNRSplitDenoiser, `.sample` is VPMethod's
    (a guided sample is thresholded when the members' method thresholds its guided samples)."""

    samples_alone = True

    def __init__(self,
        methods: Sequence,                  # trained VP Method objects, model 0 = highest SNR
        snr_boundaries: Sequence[float],    # inner boundaries s1 > … > sK (SNR = 1/σ²)
    ):
        from pdlib.denoisers import SNRSplitDenoiser
        ms = list(methods)
        snr_intervals(snr_boundaries)                                  # validates the boundaries
        if len(ms) != len(snr_boundaries) + 1:
            raise ValueError(f"{len(ms)} methods for {len(snr_boundaries)} boundaries; allowed: "
                             f"len(methods) = len(snr_boundaries) + 1")
        first = ms[0]
        for j, m in enumerate(ms):
            if not isinstance(m, VPMethod):
                raise ValueError(f"methods[{j}] is a {type(m).__name__}; allowed: VP methods")
            if (m.img_shape, m.class_cond, m.num_classes) != (first.img_shape, first.class_cond, first.num_classes):
                raise ValueError(f"methods[{j}] has img_shape={m.img_shape}, class_cond={m.class_cond}; "
                                 f"allowed: the same as methods[0] ({first.img_shape}, {first.class_cond})")
            if not torch.equal(m.schedule.alphas_cumprod, first.schedule.alphas_cumprod):
                raise ValueError(f"methods[{j}] uses another noise schedule; allowed: one schedule for all")
            if type(m).threshold_guided != type(first).threshold_guided:
                raise ValueError(f"methods[{j}] is a {m.name!r} method, methods[0] a {first.name!r} "
                                 "one; allowed: members that guide alike")
        self.methods = ms
        self.snr_boundaries = tuple(float(v) for v in snr_boundaries)
        self.threshold_guided = type(first).threshold_guided          # guide like the members
        self.name = first.name
        self.cfg, self.opts, self.schedule = first.cfg, first.opts, first.schedule
        self.img_channels, self.resolution = first.img_channels, first.resolution
        self.class_cond, self.num_classes = first.class_cond, first.num_classes
        self.null_label, self.label_dropout = first.null_label, 0.0
        self.net, self.loss_fn = None, None
        self.denoiser = SNRSplitDenoiser([m.denoiser for m in ms], self.snr_boundaries)

    def loss(self, *args, **kwargs):
        raise NotImplementedError("a SplitMethod is for sampling; train its models with "
                                  "pdlib.train.train_split")

    def __repr__(self) -> str:
        return (f"SplitMethod(k={len(self.methods)}, snr_boundaries={self.snr_boundaries}, "
                f"method={self.name!r})")
