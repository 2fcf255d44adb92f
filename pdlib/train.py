"""The one training loop of pdlib: every method, notebooks, papermill, the CLI and torchrun.

    python -m pdlib.train --dataset fashion_mnist --preset small --steps 2000 --out runs/x
    torchrun --standalone --nproc_per_node=2 -m pdlib.train --dataset digits --preset tiny ...

Features: AdamW with linear lr warm-up; EMA by half-life in images with EDM's ramp-up;
gradient accumulation; gradient clipping; nan_to_num on gradients (the steps it had to fix are
counted in the log as nonfinite_grad_steps, with a warning); AMP (bf16, or fp16 with a
GradScaler on CUDA); DistributedDataParallel (gloo on CPU, nccl on CUDA); tqdm; metrics.jsonl;
sample grids of the EMA model; atomic checkpoints with exact resume.

Randomness is counter-based: the data order of epoch e is drawn from a generator seeded by
(seed, e), and micro-batch k of step s draws its noise, σ/t and label dropout from a generator
seeded by (seed, s, k) and reseeds the global RNG (dropout inside the net) from the same key.
Micro-batch k always covers images k·m … (k+1)·m−1 of the step's global batch, whichever rank
or accumulation round computes it. Hence: resuming from a checkpoint replays nothing and is
bit-for-bit exact on CPU, and world=2/accum=1 computes the very same micro-batches as
world=1/accum=2 (equal up to the float order of the gradient sum).
On CUDA the random draws are just as reproducible, but some kernels (atomic adds in convolution
and attention backward passes, nccl all-reduce order) are not deterministic, so a resumed CUDA run
matches to float round-off (~1e-6 relative per step, growing slowly), not bit for bit; call
torch.use_deterministic_algorithms(True) before train() where exactness matters more than speed.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pdlib.checkpoint import (FORMAT, LATEST, CheckpointError, load_checkpoint, rng_state,
                              set_rng_state, write_checkpoint)
from pdlib.methods import METHODS, Method, build_method, is_known, method_defaults

__all__ = ["TrainConfig", "TrainResult", "train", "main", "lr_at", "ema_beta", "derive_seed",
           "BatchStream", "total_steps", "micro_batch_size", "config_parser",
           "config_from_args", "resolve_config"]

AMP_MODES = ("none", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved (fully resolved) with every checkpoint."""
    # --- method and network
    method: str = "edm"                     # training recipe: a key of pdlib.methods.METHODS ('edm', 'vp', 'patched')
    preset: str = "small"                   # U-Net preset of pdlib.nets.unet_preset ('tiny', 'small', 'base', 'luhman-p2/p4/p8')
    patch_size: int | None = None           # space-to-depth factor P of the U-Net; None = the method's/preset's default
    prediction: str | None = None           # VP network target 'eps' | 'x0' | 'v'; None = method default (vp: eps, patched: x0)
    weighting: str | None = None            # VP loss weighting (pdlib.losses.WEIGHTINGS); None = method default (vp: none, patched: sqrt_snr)
    schedule: str = "linear"                # VP noise schedule: 'linear', 'linearX' (e.g. 'linear0.025') or 'cosine'
    diffusion_steps: int = 1000             # T of the VP schedule
    learn_sigma: bool | None = None         # VP: also learn the reverse variance (hybrid VLB loss); None = the preset's
    dropout: float | None = None            # dropout inside the U-Net; None = the preset's
    # --- data
    dataset: str = "fashion_mnist"          # data set of pdlib.data.load_dataset ('fashion_mnist', 'emoji', 'digits')
    resolution: int | None = None           # image side in pixels; None = the data set's default (filled in when training)
    n_data: int | None = None               # train on a random subset of this many images (drawn with seed); None = all
    class_cond: bool = False                # condition the network on the class labels
    label_dropout: float | None = None      # P(label → null label) for classifier-free guidance; None = 0.1 if class_cond
    img_channels: int | None = None         # image channels C; None = from the data set (filled in when training)
    num_classes: int | None = None          # number of classes; None = from the data set (filled in when training)
    # --- optimisation
    batch_size: int = 64                    # GLOBAL images per optimizer step (all ranks × accumulation rounds)
    grad_accum: int = 1                     # accumulation rounds per step; micro-batch = batch_size/(world·grad_accum)
    lr: float = 5e-4                        # AdamW learning rate after warm-up
    weight_decay: float = 0.0               # AdamW decoupled weight decay
    warmup_steps: int = 100                 # linear lr warm-up: lr·min(1, (step+1)/warmup_steps); 0 = none
    grad_clip: float | None = 1.0           # clip the global gradient norm to this; None = no clipping
    ema_half_life_images: float = 500_000   # EMA half-life in images: β = 0.5^(batch_size/half_life); 0 = no EMA (copy)
    ema_rampup: float | None = 0.05         # EDM ramp-up: half-life ≤ ema_rampup·(images seen); None = off
    amp: str = "auto"                       # autocast: 'none' | 'bf16' | 'fp16' (CUDA, GradScaler) | 'auto' (CUDA: bf16 if supported else fp16; CPU: none)
    steps: int = 2000                       # optimizer steps to train (total, counting resumed ones)
    kimg: float | None = None               # train for this many thousand images instead (overrides steps)
    max_minutes: float | None = None        # also stop at the first log line past this many minutes of training (equal wall-clock runs); None = no limit
    init_from: str | None = None            # start a NEW run from this checkpoint's raw weights (model and EMA; fresh optimizer), e.g. the low-SNR model from the high-SNR one; unused when resuming
    seed: int = 0                           # seeds the init, the data order and all noise
    # --- output
    log_every: int = 50                     # steps between metrics.jsonl lines (and progress-bar updates)
    sample_every: int = 500                 # steps between EMA sample grids in out_dir/samples/; 0 = only at the end
    sample_n: int = 36                      # images per sample grid (fixed noise seed)
    sample_steps: int | None = None         # sampler steps for the grids; None = the method's default
    ckpt_every: int = 500                   # steps between checkpoints; 0 = only at the end
    ckpt_keep: int | None = None            # keep only this many numbered checkpoints; None = all
    out_dir: str | None = "runs/default"    # run folder (metrics, samples, checkpoints); None = write nothing
    resume: str = "auto"                    # 'auto': continue from out_dir/latest.pt if present; 'never'; or a checkpoint path
    device: str = "auto"                    # 'auto' (cuda:LOCAL_RANK if available, else cpu), 'cpu', 'cuda', 'cuda:N'
    compile: bool = False                   # torch.compile the network's forward

    def __post_init__(self):
        _validate(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a plain dict (a saved config or a JSON file); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config keys {unknown} are unknown; allowed: {sorted(names)}")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Fields that may differ between a checkpoint's config and the config that resumes it
# (init_from only chooses the weights of a new run: a resumed run takes its checkpoint's).
RESUMABLE_CHANGES = frozenset({"steps", "kimg", "max_minutes", "init_from", "log_every",
                               "sample_every", "sample_n", "sample_steps", "ckpt_every", "ckpt_keep",
                               "out_dir", "resume", "device", "compile", "amp"})


def _check(cond: bool, name: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{name}={value!r} is invalid; allowed: {allowed}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(c: TrainConfig) -> None:
    """Raise ValueError naming the first bad field of a config."""
    from pdlib.data import IMAGE_DATASETS
    from pdlib.nets.unet import UNET_PRESETS
    _check(is_known(c.method), "method", c.method, f"one of {sorted(METHODS)}")
    _check(c.preset in UNET_PRESETS, "preset", c.preset, f"one of {sorted(UNET_PRESETS)}")
    _check(c.dataset in IMAGE_DATASETS, "dataset", c.dataset, f"one of {sorted(IMAGE_DATASETS)}")
    _check(c.prediction in (None, "eps", "x0", "v"), "prediction", c.prediction,
           "None, 'eps', 'x0' or 'v'")
    if c.weighting is not None:
        from pdlib.losses import loss_weight
        try:
            loss_weight(c.weighting, torch.tensor([0.5]))
        except ValueError:
            from pdlib.losses import WEIGHTINGS
            raise ValueError(f"weighting={c.weighting!r} is invalid; allowed: None or one of "
                             f"{WEIGHTINGS}") from None
    for name in ("batch_size", "grad_accum", "log_every", "diffusion_steps", "sample_n"):
        v = getattr(c, name)
        _check(_is_int(v) and v >= 1, name, v, "an int >= 1")
    for name in ("steps", "warmup_steps", "seed", "sample_every", "ckpt_every"):
        v = getattr(c, name)
        _check(_is_int(v) and v >= 0, name, v, "an int >= 0")
    for name in ("patch_size", "resolution", "n_data", "img_channels", "num_classes",
                 "sample_steps", "ckpt_keep"):
        v = getattr(c, name)
        _check(v is None or (_is_int(v) and v >= 1), name, v, "None or an int >= 1")
    _check(c.batch_size % c.grad_accum == 0, "batch_size", c.batch_size,
           f"a multiple of grad_accum={c.grad_accum} (batch_size is the global batch per step)")
    _check(_is_num(c.lr) and c.lr > 0, "lr", c.lr, "a finite float > 0")
    _check(_is_num(c.weight_decay) and c.weight_decay >= 0, "weight_decay", c.weight_decay, ">= 0")
    _check(c.grad_clip is None or (_is_num(c.grad_clip) and c.grad_clip > 0), "grad_clip",
           c.grad_clip, "None or a float > 0")
    _check(_is_num(c.ema_half_life_images) and c.ema_half_life_images >= 0,
           "ema_half_life_images", c.ema_half_life_images, "a float >= 0 (0: no EMA)")
    _check(c.ema_rampup is None or (_is_num(c.ema_rampup) and c.ema_rampup > 0), "ema_rampup",
           c.ema_rampup, "None or a float > 0")
    _check(c.kimg is None or (_is_num(c.kimg) and c.kimg > 0), "kimg", c.kimg, "None or > 0")
    _check(c.max_minutes is None or (_is_num(c.max_minutes) and c.max_minutes > 0), "max_minutes",
           c.max_minutes, "None or a number > 0")
    _check(c.init_from is None or (isinstance(c.init_from, str) and c.init_from != ""), "init_from",
           c.init_from, "None or a checkpoint path")
    _check(c.dropout is None or (_is_num(c.dropout) and 0 <= c.dropout < 1), "dropout", c.dropout,
           "None or a float in [0, 1)")
    _check(c.label_dropout is None or (_is_num(c.label_dropout) and 0 <= c.label_dropout < 1),
           "label_dropout", c.label_dropout, "None or a float in [0, 1)")
    _check(c.amp in AMP_MODES, "amp", c.amp, f"one of {AMP_MODES}")
    _check(isinstance(c.resume, str) and c.resume != "", "resume", c.resume,
           "'auto', 'never' or a checkpoint path")
    _check(isinstance(c.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", c.device) is not None,
           "device", c.device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    for name in ("class_cond", "compile"):
        _check(isinstance(getattr(c, name), bool), name, getattr(c, name), "True or False")
    _check(c.learn_sigma in (None, True, False), "learn_sigma", c.learn_sigma, "None, True or False")
    METHODS[c.method].validate(c)


# ----------------------------------------------------------------------------------------------
# Schedules of the loop: learning rate, EMA, step count, seeds.

def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of step `step` (0-based): linear warm-up lr·min(1, (step+1)/warmup_steps)."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


def ema_beta(cfg: TrainConfig, step: int) -> float:
    """EMA decay after step `step` (0-based), Karras et al. 2022: β = 0.5^(B/h) with B = batch_size
    (global images per step) and h = half-life in images, ramped up as h ≤ ema_rampup·step·B."""
    h = float(cfg.ema_half_life_images)
    if h <= 0:
        return 0.0
    if cfg.ema_rampup is not None:
        h = min(h, step * cfg.batch_size * cfg.ema_rampup)
    return 0.5 ** (cfg.batch_size / max(h, 1e-8))


def total_steps(cfg: TrainConfig) -> int:
    """Optimizer steps of the run: cfg.steps, or ⌈kimg·1000/batch_size⌉ when kimg is set."""
    if cfg.kimg is not None:
        return math.ceil(cfg.kimg * 1000 / cfg.batch_size)
    return cfg.steps


def micro_batch_size(cfg: TrainConfig, world: int) -> int:
    """Images per rank per accumulation round: batch_size / (world · grad_accum), exactly."""
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by world_size·grad_accum = "
                         f"{world}·{cfg.grad_accum}; allowed: a multiple of "
                         f"{world * cfg.grad_accum} (batch_size is the global batch per step)")
    return cfg.batch_size // (world * cfg.grad_accum)


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
            raise ValueError(f"batch_size={batch_size} is larger than the data set "
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


# ----------------------------------------------------------------------------------------------
# Devices, precision, processes.

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False      # we created the process group (and destroy it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def _resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: 'auto' → bf16 on CUDA if supported else fp16 on CUDA; none on CPU."""
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError(f"amp='fp16' on device {device}: fp16 training needs CUDA (GradScaler); "
                         "allowed on CPU: 'bf16' or 'none'")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def _init_dist(cfg: TrainConfig) -> tuple[_Dist, torch.device]:
    """Join the torchrun process group (env RANK/WORLD_SIZE/LOCAL_RANK) if there is one."""
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist(), _resolve_device(cfg.device, 0)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(cfg.device, local)
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owns), device


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


# ----------------------------------------------------------------------------------------------
# The loop.

class _LossModule(nn.Module):
    """Wraps Method.loss as a module's forward, so DistributedDataParallel sees every call of the
    net (VPLoss calls precond.predict, not forward)."""

    def __init__(self, method: Method):
        super().__init__()
        self.denoiser = method.denoiser
        self._method = method

    def forward(self, x0, labels, generator):
        return self._method.loss(x0, labels, generator, denoiser=self.denoiser)


@dataclass
class TrainResult:
    """What train() returns: the trained Method, its EMA copy, the metrics history and the files."""
    step: int                           # optimizer steps done
    config: TrainConfig                 # the resolved config (data shape and method defaults filled)
    method: Method                      # raw weights (train mode off)
    ema: Method                         # EMA weights: sample from this one
    history: list = field(default_factory=list)   # every metrics.jsonl record of the run, resumed steps included
    out_dir: Path | None = None
    checkpoint: Path | None = None      # the last checkpoint written (None: none)
    samples: list = field(default_factory=list)   # paths of the sample grids written

    @property
    def metrics(self) -> dict:
        """The last logged metrics record."""
        return self.history[-1] if self.history else {}


def resolve_config(cfg: TrainConfig, data) -> TrainConfig:
    """Fill the data-dependent fields (resolution, channels, classes) and the method's defaults."""
    cfg = cfg.replace(resolution=data.resolution, img_channels=data.channels,
                      num_classes=data.num_classes or None)
    return cfg.replace(**method_defaults(cfg))


def _check_resume_config(saved: dict, cfg: TrainConfig, path) -> None:
    now = cfg.to_dict()
    diff = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if diff:
        pairs = ", ".join(f"{k}: {saved.get(k)!r} → {now[k]!r}" for k in diff)
        raise ValueError(f"resume: the checkpoint {str(path)!r} was trained with a different "
                         f"config ({pairs}); allowed changes: {sorted(RESUMABLE_CHANGES)}. Use "
                         "resume='never' or another out_dir to start a new run")


def _resume_path(cfg: TrainConfig, resume) -> Path | None:
    mode = cfg.resume if resume is None else ("auto" if resume is True else
                                              "never" if resume is False else str(resume))
    latest = Path(cfg.out_dir) / LATEST if cfg.out_dir is not None else None
    if mode == "never":
        return None
    if mode == "auto":
        if resume is True and (latest is None or not latest.is_file()):
            raise FileNotFoundError(f"resume=True but there is no checkpoint {str(latest)!r}")
        return latest if latest is not None and latest.is_file() else None
    if not Path(mode).is_file():
        raise FileNotFoundError(f"resume={mode!r}: no such checkpoint file")
    return Path(mode)


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (a resumed run rewrites the later ones)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def _init_weights(method: Method, ema: Method, cfg: TrainConfig) -> None:
    """cfg.init_from: load a checkpoint's raw weights into both the model and its EMA."""
    path = Path(cfg.init_from)
    if not path.is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from!r} does not exist; allowed: a training "
                                "checkpoint of the same network (e.g. runs/x/latest.pt)")
    state = load_checkpoint(path, map_location="cpu")
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"init_from={cfg.init_from!r} holds weights of another network than "
                         f"preset={cfg.preset!r}, patch_size={cfg.patch_size!r}, class_cond="
                         f"{cfg.class_cond!r}; allowed: a checkpoint of the same network") from e
    ema.load_state_dict(method.state_dict())


@torch.no_grad()
def _update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """θ_ema ← β·θ_ema + (1−β)·θ; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def train(cfg: TrainConfig, progress: bool = True, callback: Callable | None = None,
          resume: bool | str | None = None) -> TrainResult:
    """Train cfg.method on cfg.dataset; resume: None → cfg.resume; True → out_dir/latest.pt (must
    exist); False → never; a path. callback(record) after every log line with the metrics record
    plus 'method' and 'ema'; returning True stops the run (a checkpoint is written), as does
    cfg.max_minutes. A new run (nothing to resume) starts from cfg.init_from's weights if set."""
    dist_info, device = _init_dist(cfg)
    try:
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):    # the caller's global RNG is left as it was
            return _train(cfg, dist_info, device, progress, callback, resume)
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist
            dist.destroy_process_group()


def _train(cfg, d: _Dist, device, progress, callback, resume) -> TrainResult:
    from pdlib.data import load_dataset
    from tqdm.auto import tqdm

    amp_dtype = _resolve_amp(cfg.amp, device)
    data = load_dataset(cfg.dataset, resolution=cfg.resolution, n=cfg.n_data, seed=cfg.seed)
    cfg = resolve_config(cfg, data)
    m = micro_batch_size(cfg, d.world)                               # images per rank and round
    stream = BatchStream(data.images, data.labels if cfg.class_cond else None, cfg.batch_size, cfg.seed)
    n_steps = total_steps(cfg)

    torch.manual_seed(derive_seed(cfg.seed, "init"))
    method = build_method(cfg).to(device)
    ema = copy.deepcopy(method)
    ema.denoiser.eval().requires_grad_(False)
    opt = torch.optim.AdamW(method.parameters(), lr=lr_at(cfg, 0), betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    out = Path(cfg.out_dir) if cfg.out_dir is not None else None
    step, t_resumed = 0, 0.0
    ckpt_path = _resume_path(cfg, resume)
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, map_location="cpu")
        _check_resume_config(json.loads(state["config"]), cfg, ckpt_path)
        method.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step, t_resumed = int(state["step"]), float(state.get("time", 0.0))
        if tuple(state["data"]["position"].tolist()) != stream.position(step):
            raise CheckpointError(f"checkpoint {str(ckpt_path)!r}: data position "
                                  f"{state['data']['position'].tolist()} does not match step {step}")
    elif cfg.init_from is not None:
        _init_weights(method, ema, cfg)
    writes = out is not None and d.main
    if writes:
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = out / "metrics.jsonl"
        if ckpt_path is not None:
            _trim_metrics(metrics_path, step)
        else:
            metrics_path.write_text("")
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    if cfg.compile:
        method.net.compile()
    loss_module = _LossModule(method)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(loss_module)
    else:
        model = loss_module
    method.denoiser.train()
    params = [p for p in method.parameters() if p.requires_grad]

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    def checkpoint() -> Path | None:
        _barrier(d)
        path = None
        if writes:
            epoch, i = stream.position(step)
            state = {
                "format": FORMAT, "config": json.dumps(cfg.to_dict()), "step": step,
                "model": method.state_dict(), "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "rng": rng_state(),
                "data": {"position": torch.tensor([epoch, i]), "images_seen": step * cfg.batch_size},
                "time": time.perf_counter() - t_start,           # training seconds so far
                "torch_version": str(torch.__version__),
            }
            path = write_checkpoint(state, out, step, keep=cfg.ckpt_keep)
        _barrier(d)
        return path

    sample_gen_seed = derive_seed(cfg.seed, "samples")

    def sample_grid() -> Path | None:
        if not writes:
            return None
        from pdlib.viz import save_grid
        g = torch.Generator().manual_seed(sample_gen_seed)
        images = ema.sample(cfg.sample_n, generator=g, steps=cfg.sample_steps, device=device)
        nrow = cfg.num_classes if cfg.class_cond and cfg.num_classes <= 16 else None
        return Path(save_grid(images, out / "samples" / f"{step:07d}.png", nrow=nrow))

    history, samples, last_ckpt = [], [], ckpt_path   # a finished run resumes as a no-op
    if writes and ckpt_path is not None and metrics_path.is_file():   # records of the steps already done
        history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    bar = tqdm(total=n_steps, initial=step, disable=not (progress and d.main), dynamic_ncols=True,
               desc=f"{cfg.method}/{cfg.preset}")
    loss_sum = torch.zeros((), device=device,
                           dtype=torch.float32 if device.type == "mps" else torch.float64)
    nonfinite = torch.zeros((), device=device, dtype=torch.int32)   # steps with NaN/inf gradients
    n_seen, t_last = 0, time.perf_counter()
    t_start = t_last - t_resumed
    stop = False
    try:
        while step < n_steps and not stop:
            lr = lr_at(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = stream.batch(step)                                   # (B, C, H, W), (B,)
            opt.zero_grad(set_to_none=True)
            for a in range(cfg.grad_accum):
                k = a * d.world + d.rank                                 # global micro-batch index
                xb = x[k * m:(k + 1) * m].to(device, non_blocking=True)  # (m, C, H, W)
                yb = None if y is None else y[k * m:(k + 1) * m].to(device, non_blocking=True)
                key = derive_seed(cfg.seed, "step", step, k)
                torch.manual_seed(key)                                   # dropout inside the net
                gen = torch.Generator(device=device).manual_seed(key)    # noise, σ/t, label dropout
                sync = (d.world > 1 and a < cfg.grad_accum - 1)
                with (model.no_sync() if sync else contextlib.nullcontext()):
                    with autocast():
                        losses = model(xb, yb, gen)                      # (m,)
                    loss = losses.float().sum() / (m * cfg.grad_accum)   # DDP averages over ranks
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                loss_sum += losses.detach().double().sum()
            if scaler is not None:
                scaler.unscale_(opt)
            grads = [p.grad for p in params if p.grad is not None]
            if grads and scaler is None:          # counted, not hidden (fp16: the scaler skips such steps)
                nonfinite += (~torch.isfinite(torch.nn.utils.get_total_norm(grads))).to(nonfinite.dtype)
            for g_ in grads:
                torch.nan_to_num(g_, nan=0.0, posinf=1e5, neginf=-1e5, out=g_)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            _update_ema(ema.denoiser, method.denoiser, ema_beta(cfg, step))
            step += 1
            n_seen += cfg.batch_size
            bar.update(1)

            if step % cfg.log_every == 0 or step == n_steps:
                total = loss_sum.clone()
                if d.world > 1:
                    import torch.distributed as dist
                    dist.all_reduce(total)
                now = time.perf_counter()
                record = {"step": step, "kimg": step * cfg.batch_size / 1000,
                          "loss": total.item() / n_seen, "lr": lr,
                          "img_per_s": n_seen / max(now - t_last, 1e-9),
                          "time": now - t_start, "nonfinite_grad_steps": int(nonfinite.item())}
                if record["nonfinite_grad_steps"] and d.main:
                    warnings.warn(f"step {step}: {record['nonfinite_grad_steps']} of the last "
                                  f"{n_seen // cfg.batch_size} steps had NaN/inf gradients (zeroed "
                                  "by nan_to_num before the update): check the loss", RuntimeWarning)
                nonfinite.zero_()
                history.append(record)
                loss_sum.zero_()
                n_seen, t_last = 0, now
                if writes:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}")
                stop = cfg.max_minutes is not None and record["time"] >= 60 * cfg.max_minutes
                if callback is not None:
                    stop = bool(callback({**record, "method": method, "ema": ema})) or stop
                    if d.world > 1:
                        import torch.distributed as dist
                        flag = torch.tensor([float(stop)], device=device)
                        dist.all_reduce(flag)
                        stop = bool(flag.item() > 0)
            last = step == n_steps or stop
            t_io = time.perf_counter()
            if (cfg.sample_every and step % cfg.sample_every == 0) or last:
                p = sample_grid()
                if p is not None:
                    samples.append(p)
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or last:
                last_ckpt = checkpoint() or last_ckpt
            t_last += time.perf_counter() - t_io          # img/s counts training time only
    finally:
        bar.close()
    method.denoiser.eval()
    return TrainResult(step=step, config=cfg, method=method, ema=ema, history=history,
                       out_dir=out, checkpoint=last_ckpt, samples=samples)


# ----------------------------------------------------------------------------------------------
# CLI: argparse generated from TrainConfig, with each field's comment as its help.

def _field_help() -> dict[str, str]:
    """The trailing comment of every TrainConfig field, read from the source."""
    helps = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        mt = re.match(r"\s+(\w+):\s*[^=]+=.*?#\s*(.*)$", line)
        if mt:
            helps[mt.group(1)] = mt.group(2).replace("%", "%%")
    return helps


def _parse_value(annotation: str, name: str):
    """An argparse `type` for a field annotation like 'int | None' ('none' → None)."""
    kinds = [a.strip() for a in annotation.split("|")]
    base = next(k for k in kinds if k != "None")
    conv = {"int": int, "float": float, "str": str}[base]

    def parse(text: str):
        if "None" in kinds and text.lower() in ("none", "null"):
            return None
        if base == "float" and text.replace("_", "").lstrip("-").isdigit():
            return float(int(text))
        try:
            return conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}={text!r}: expected {annotation}") from None
    return parse


def _parse_bool_or_none(text: str):
    t = text.lower()
    if t in ("none", "null"):
        return None
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true, false or none, got {text!r}")


def config_parser() -> argparse.ArgumentParser:
    """The CLI parser: one --option per TrainConfig field (defaults left to the dataclass)."""
    p = argparse.ArgumentParser(
        prog="python -m pdlib.train", description="Train a pdlib diffusion method "
        "(torchrun-able: torchrun --standalone --nproc_per_node=N -m pdlib.train ...).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE.json",
                   help="JSON file of TrainConfig fields; options given on the command line win")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    helps = _field_help()
    defaults = TrainConfig.__dataclass_fields__
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if f.name == "out_dir":
            flags.append("--out")
        ann = str(f.type)
        h = f"{helps.get(f.name, '')} [default: {defaults[f.name].default!r}]"
        if ann == "bool":
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, help=h)
        elif ann == "bool | None":
            p.add_argument(*flags, dest=f.name, type=_parse_bool_or_none, metavar="{true,false,none}",
                           help=h)
        else:
            p.add_argument(*flags, dest=f.name, type=_parse_value(ann, f.name), help=h)
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    args = config_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k not in ("config", "no_progress")}
    base = {}
    if getattr(args, "config", None):
        base = json.loads(Path(args.config).read_text())
        if not isinstance(base, dict):
            raise ValueError(f"--config {args.config!r}: expected a JSON object of TrainConfig fields")
    return TrainConfig.from_dict({**base, **given}), args


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m pdlib.train` and the `pdlib-train` script."""
    try:
        cfg, args = config_from_args(argv)
    except ValueError as e:
        print(f"pdlib.train: error: {e}", file=sys.stderr)
        return 2
    result = train(cfg, progress=not getattr(args, "no_progress", False))
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {"step": result.step, **{k: v for k, v in result.metrics.items() if k != "step"},
                   "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                   "out_dir": str(result.out_dir) if result.out_dir else None}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
