"""SNR splitting (Luhman & Luhman 2022, §3.4): k models, each trained on one SNR interval, composed at sampling.

Boundaries [∞, s1, …, sK, 0]; model k is trained only on the steps t with
boundary[k] > SNR_t ≥ boundary[k+1] (the original's `--schedule_sampler uniform_split_k`) and, at
sampling, serves the σ whose SNR = 1/σ² falls in that interval (`pdlib.samplers.SNRSplitDenoiser`).
Model 0 is the high-SNR (low-noise) model. With the linear T=1000 schedule the paper's split at
SNR 0.25 sends t < 396 to model 0. The original trains the low-SNR model starting from the
high-SNR model's weights (`warm_start=True` here).

The SNR interval lives in the method name, `"patched-snr:inf>0.25"`, so a checkpoint's saved config
alone rebuilds the method (`load_split_method`); `register_split_method` registers such a name.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from pdlib.methods import METHODS, VPMethod, register

__all__ = ["split_method_name", "parse_split_method_name", "register_split_method",
           "snr_intervals", "train_split", "SplitResult",
           "load_split_method", "split_denoiser", "SplitMethod", "x0_mse_by_t"]

_NAME_RE = re.compile(r"(?P<base>[a-z0-9_]+)-snr:(?P<hi>inf|[0-9.eE+-]+)>(?P<lo>[0-9.eE+-]+)")


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:g}"


def split_method_name(snr_hi: float, snr_lo: float, base: str = "patched") -> str:
    """The registered name of `base` trained on snr_hi > SNR ≥ snr_lo, e.g. 'patched-snr:inf>0.25'."""
    snr_hi, snr_lo = float(snr_hi), float(snr_lo)
    if not (snr_hi > snr_lo >= 0) or math.isnan(snr_hi):
        raise ValueError(f"(snr_hi, snr_lo)=({snr_hi!r}, {snr_lo!r}) is invalid; allowed: "
                         f"snr_hi > snr_lo >= 0 (snr_hi may be inf)")
    return f"{base}-snr:{_fmt(snr_hi)}>{_fmt(snr_lo)}"


def parse_split_method_name(name: str) -> tuple[str, float, float] | None:
    """(base, snr_hi, snr_lo) of a split-method name, or None if `name` is not one."""
    m = _NAME_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        return None
    return m["base"], float(m["hi"]), float(m["lo"])


class _SNRIntervalMixin:
    """Overrides VPMethod.t_sampler: t uniform over the steps with snr_hi > SNR_t ≥ snr_lo."""

    snr_hi: float = math.inf
    snr_lo: float = 0.0

    def t_sampler(self):
        from pdlib.losses import uniform_t_in_snr_interval
        return uniform_t_in_snr_interval(self.schedule, self.snr_hi, self.snr_lo)


def register_split_method(snr_hi: float, snr_lo: float, base: str = "patched") -> str:
    """Register (once) the method `base` restricted to snr_hi > SNR ≥ snr_lo; returns its name."""
    name = split_method_name(snr_hi, snr_lo, base)
    if name in METHODS:
        return name
    base_cls = METHODS.get(base)
    if base_cls is None or not issubclass(base_cls, VPMethod):
        allowed = sorted(k for k, c in METHODS.items() if issubclass(c, VPMethod) and "-snr:" not in k)
        raise ValueError(f"base={base!r} is invalid; allowed: a VP method {allowed}")
    cls = type(f"{base_cls.__name__}SNR", (_SNRIntervalMixin, base_cls),
               {"snr_hi": float(snr_hi), "snr_lo": float(snr_lo),
                "__doc__": f"{base_cls.__name__} trained on {_fmt(snr_hi)} > SNR ≥ {_fmt(snr_lo)} "
                           f"(Luhman & Luhman 2022, SNR splitting)."})
    register(name)(cls)
    return name


def ensure_registered(name: str) -> bool:
    """Register a split-method name if it is one (for loading checkpoints); True if `name` is known."""
    parsed = parse_split_method_name(name)
    if parsed is not None and name not in METHODS:
        base, hi, lo = parsed
        register_split_method(hi, lo, base)
    return name in METHODS


def snr_intervals(snr_boundaries: Sequence[float]) -> list[tuple[float, float]]:
    """[(∞, s1), (s1, s2), …, (sK, 0)] from the inner boundaries s1 > … > sK > 0."""
    b = [float(v) for v in snr_boundaries]
    if not b or any(v <= 0 or math.isinf(v) for v in b) or any(b[k + 1] >= b[k] for k in range(len(b) - 1)):
        raise ValueError(f"snr_boundaries={b} is invalid; allowed: a non-empty, strictly decreasing "
                         f"list of finite values > 0")
    edges = [math.inf, *b, 0.0]
    return list(zip(edges[:-1], edges[1:]))


# ----------------------------------------------------------------------------------------------
# Training: one run per interval through the one loop, optionally warm-started.

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

    def composite(self) -> "SplitMethod":
        return SplitMethod(self.methods, self.snr_boundaries)


def train_split(cfg, snr_boundaries: Sequence[float], steps: int | Sequence[int] | None = None,
                warm_start: bool = True, progress: bool = True, callback=None) -> SplitResult:
    """Train k = len(snr_boundaries)+1 models, model j on its SNR interval, in order 0, 1, …;
    with warm_start, model j+1 starts from model j's raw weights (TrainConfig.init_from; Luhman &
    Luhman's low-SNR model).
    Runs go to cfg.out_dir/model{j}; steps: per model (an int, a list, or None = cfg.steps)."""
    from pdlib.checkpoint import LATEST
    from pdlib.train import train
    if cfg.out_dir is None:
        raise ValueError("cfg.out_dir=None: split runs need a folder; allowed: a path")
    base = parse_split_method_name(cfg.method)
    base = cfg.method if base is None else base[0]
    intervals = snr_intervals(snr_boundaries)
    if steps is None:
        steps = [cfg.steps] * len(intervals)
    elif isinstance(steps, int):
        steps = [steps] * len(intervals)
    steps = list(steps)
    if len(steps) != len(intervals) or any(not isinstance(s, int) or s < 0 for s in steps):
        raise ValueError(f"steps={steps!r} is invalid; allowed: an int >= 0 or {len(intervals)} of them")
    results, ckpts = [], []
    for j, ((hi, lo), n) in enumerate(zip(intervals, steps)):
        name = register_split_method(hi, lo, base)
        init = str(ckpts[-1]) if warm_start and j > 0 else cfg.init_from
        cfg_j = cfg.replace(method=name, steps=n, kimg=None, init_from=init,
                            out_dir=str(Path(cfg.out_dir) / f"model{j}"))
        results.append(train(cfg_j, progress=progress, callback=callback))
        ckpts.append(Path(cfg_j.out_dir) / LATEST)
    return SplitResult(tuple(float(v) for v in snr_boundaries), results, ckpts)


def load_split_method(path: str | Path, ema: bool = True, device="cpu"):
    """`pdlib.methods.load_method` for checkpoints of split methods (registers the name first)."""
    from pdlib.checkpoint import load_checkpoint
    from pdlib.methods import load_method
    name = json.loads(load_checkpoint(path, map_location="cpu")["config"])["method"]
    ensure_registered(name)
    return load_method(path, ema=ema, device=device)


# ----------------------------------------------------------------------------------------------
# Sampling: the composite denoiser.

def split_denoiser(methods: Sequence, snr_boundaries: Sequence[float]):
    """SNRSplitDenoiser over the methods' denoisers (methods: Method objects or checkpoint paths)."""
    from pdlib.samplers import SNRSplitDenoiser
    ms = [load_split_method(m) if isinstance(m, (str, Path)) else m for m in methods]
    return SNRSplitDenoiser([m.denoiser for m in ms], snr_boundaries)


class SplitMethod(VPMethod):
    """k trained VP methods as one: `.denoiser` is their SNRSplitDenoiser, `.sample` is VPMethod's."""

    def __init__(self,
        methods: Sequence,              # Method objects or checkpoint paths, model 0 = highest SNR
        snr_boundaries: Sequence[float],  # inner boundaries s1 > … > sK (SNR = 1/σ²)
    ):
        ms = [load_split_method(m) if isinstance(m, (str, Path)) else m for m in methods]
        snr_intervals(snr_boundaries)                                  # validates the boundaries
        if len(ms) != len(snr_boundaries) + 1:
            raise ValueError(f"{len(ms)} methods for {len(snr_boundaries)} boundaries; allowed: "
                             f"len(methods) = len(snr_boundaries) + 1")
        first = ms[0]
        for j, m in enumerate(ms[1:], 1):
            if not isinstance(m, VPMethod):
                raise ValueError(f"methods[{j}] is a {type(m).__name__}; allowed: VP methods")
            if (m.img_shape, m.class_cond, m.num_classes) != (first.img_shape, first.class_cond, first.num_classes):
                raise ValueError(f"methods[{j}] has img_shape={m.img_shape}, class_cond={m.class_cond}; "
                                 f"allowed: the same as methods[0] ({first.img_shape}, {first.class_cond})")
            if not torch.equal(m.schedule.alphas_cumprod, first.schedule.alphas_cumprod):
                raise ValueError(f"methods[{j}] uses another noise schedule; allowed: one schedule for all")
        self.methods = ms
        self.snr_boundaries = tuple(float(v) for v in snr_boundaries)
        self.cfg, self.schedule = first.cfg, first.schedule
        self.img_channels, self.resolution = first.img_channels, first.resolution
        self.class_cond, self.num_classes = first.class_cond, first.num_classes
        self.null_label, self.label_dropout = first.null_label, 0.0
        self.net, self.loss_fn = None, None
        self.denoiser = split_denoiser(ms, self.snr_boundaries)

    def loss(self, *args, **kwargs):
        raise NotImplementedError("a SplitMethod is for sampling; train its models with train_split")

    def __repr__(self) -> str:
        return (f"SplitMethod(k={len(self.methods)}, snr_boundaries={self.snr_boundaries}, "
                f"methods={[m.name for m in self.methods]})")


# ----------------------------------------------------------------------------------------------
# Evaluation by noise level: where does each model (or weighting) help?

@torch.no_grad()
def x0_mse_by_t(denoiser, x0: torch.Tensor, schedule, ts: Sequence[int],
                generator: torch.Generator | None = None, class_labels: torch.Tensor | None = None,
                batch_size: int = 256) -> torch.Tensor:
    """Held-out E‖D(x0 + σ_t ε, σ_t) − x0‖² (mean over pixels and images) at each step t in ts; float64 [len(ts)]."""
    sig = schedule.sigmas
    out = []
    for t in ts:
        if not 0 <= int(t) < schedule.T:
            raise ValueError(f"ts contains {t!r}; allowed: step indices in [0, {schedule.T})")
        total = 0.0
        for i in range(0, len(x0), batch_size):
            xb = x0[i:i + batch_size]                                                 # (b, C, H, W)
            eps = torch.randn(xb.shape, generator=generator,
                              device=generator.device if generator is not None else xb.device).to(xb.device)
            sigma = torch.full((len(xb),), float(sig[int(t)]), device=xb.device)
            cond = {} if class_labels is None else {"class_labels": class_labels[i:i + batch_size]}
            D = denoiser(xb + sigma.reshape(-1, 1, 1, 1) * eps, sigma, **cond)
            total += ((D.float() - xb) ** 2).sum().item()
        out.append(total / x0.numel())
    return torch.tensor(out, dtype=torch.float64)

