"""Training an SNR split (Luhman & Luhman 2022, §3.4): one run of the one loop per SNR interval,
model j with method.snr_interval = (boundary[j], boundary[j+1]); with warm_start, model j+1
starts from model j's raw weights (run.init_from: the paper's low-SNR model). Compose the trained
models for sampling with `pdlib.methods.SplitMethod`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pdlib.checkpoint import LATEST
from pdlib.methods import SplitMethod, VPOptions, snr_intervals
from pdlib.train.loop import train

__all__ = ["train_split", "SplitResult"]


@dataclass
class SplitResult:
    """What train_split returns: one TrainResult per interval (model 0 = highest SNR)."""
    snr_boundaries: tuple[float, ...]   # inner boundaries s1 > … > sK
    results: list                       # pdlib.train.TrainResult, one per model
    checkpoints: list                   # latest.pt of each model's run folder

    @property
    def methods(self) -> list:
        """The EMA methods, in interval order."""
        return [r.ema for r in self.results]

    def composite(self) -> SplitMethod:
        return SplitMethod(self.methods, self.snr_boundaries)


def train_split(cfg, snr_boundaries: Sequence[float], steps: int | Sequence[int] | None = None,
                warm_start: bool = True, progress: bool = True, callback=None) -> SplitResult:
    """Train k = len(snr_boundaries)+1 models of cfg's VP method, model j on its SNR interval, in
    order 0, 1, …; runs go to run.out_dir/model{j}; steps per model (an int, a list, or None =
    run.steps)."""
    if cfg.run.out_dir is None:
        raise ValueError("run.out_dir=None: split runs need a folder; allowed: a path")
    if not isinstance(cfg.method, VPOptions):
        raise ValueError(f"method.name={cfg.method.name!r}: SNR splitting needs a VP method "
                         "(options with snr_interval, e.g. 'vp' or 'patched')")
    intervals = snr_intervals(snr_boundaries)
    if steps is None:
        steps = [cfg.run.steps] * len(intervals)
    elif isinstance(steps, int):
        steps = [steps] * len(intervals)
    steps = list(steps)
    if len(steps) != len(intervals) or any(not isinstance(s, int) or s < 0 for s in steps):
        raise ValueError(f"steps={steps!r} is invalid; allowed: an int >= 0 or {len(intervals)} of them")
    results, ckpts = [], []
    for j, ((hi, lo), n) in enumerate(zip(intervals, steps)):
        init = str(ckpts[-1]) if warm_start and j > 0 else cfg.run.init_from
        cfg_j = cfg.replace(method=dataclasses.replace(cfg.method, snr_interval=(hi, lo)),
                            run=dataclasses.replace(cfg.run, steps=n, kimg=None, init_from=init,
                                                    out_dir=str(Path(cfg.run.out_dir) / f"model{j}")))
        results.append(train(cfg_j, progress=progress, callback=callback))
        ckpts.append(Path(cfg_j.run.out_dir) / LATEST)
    return SplitResult(tuple(float(v) for v in snr_boundaries), results, ckpts)
