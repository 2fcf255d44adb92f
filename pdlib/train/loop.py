"""The one training loop of pdlib: every method, notebooks, papermill, the CLI and torchrun.

Features: AdamW with linear lr warm-up; EMA by half-life in images with EDM's ramp-up;
gradient accumulation; gradient clipping; nan_to_num on gradients (the steps it had to fix are
counted in the log as nonfinite_grad_steps, with a warning); AMP (bf16, or fp16 with a
GradScaler on CUDA); DistributedDataParallel (gloo on CPU, nccl on CUDA); tqdm; metrics.jsonl;
sample grids of the EMA model (through the method); atomic checkpoints with exact resume.

What protects a run's work (pdlib.train.folder, pdlib.checkpoint):
- The run folder is locked (`.lock`, rank 0) for the whole run; a new run refuses a folder that
  holds another run unless run.overwrite (then the old run moves to `.old-<time>/`); temp files
  of killed writes are removed at start. Everything that can be checked (config, device, data,
  checkpoints, the folder) is checked before anything is written.
- Divergence guard: a step whose loss or gradient norm is NaN/inf is zeroed and counted as
  before; run.max_nonfinite_steps of them in a row stop the run with a DivergenceError (checked
  at every log line and checkpoint, so the loop never waits on the GPU per step); the weights
  are checked before every checkpoint, and NaN/inf weights stop the run without writing one.
  The error names the step and the last good checkpoint, which rotation (run.ckpt_keep) never
  deletes. With an fp16 GradScaler, inf/NaN gradients are the scaler's overflow signal (it skips
  the step), so there only a non-finite loss counts.
- A full disk is a DiskFullError naming the file and the checkpoint that is still intact.

What the loss sees is the method's: `method.prepare_batch(images, labels, generator)` turns each
data micro-batch into a `Batch` (crops, patches, tiles, blurred targets, …) that says how many
images it holds, and the loss sum is divided by that count, so the loss is per image whatever
the number of items a method makes of a batch.

Randomness is counter-based: the data order of epoch e is drawn from a generator seeded by
(seed, e), and micro-batch k of step s draws its batch preparation, noise, σ/t and label dropout
from a generator seeded by (seed, s, k) and reseeds the global RNG (dropout inside the net) from
the same key. Micro-batch k always covers images k·m … (k+1)·m−1 of the step's global batch,
whichever rank or accumulation round computes it. Hence: resuming from a checkpoint replays
nothing and is bit-for-bit exact on CPU, and world=2/accum=1 computes the very same micro-batches
as world=1/accum=2 (equal up to the float order of the gradient sum).
On CUDA the random draws are just as reproducible, but some kernels (atomic adds in convolution
and attention backward passes, nccl all-reduce order) are not deterministic, so a resumed CUDA run
matches to float round-off (~1e-6 relative per step, growing slowly), not bit for bit; call
torch.use_deterministic_algorithms(True) before train() where exactness matters more than speed.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pdlib.checkpoint import (CheckpointError, atomic_write_text, checkpoint_path, nonfinite_entries,
                              write_checkpoint)
from pdlib.config import TrainConfig, resolve_config
from pdlib.errors import DiskFullError, DivergenceError, PeerFailedError, exit_code, is_disk_full, one_line
from pdlib.methods import Batch, Method, build_method
from pdlib.train import folder as fo
from pdlib.train import state as st
from pdlib.train.dist import Dist, barrier, init_dist, resolve_amp
from pdlib.train.plan import BatchStream, derive_seed, ema_beta, lr_at, micro_batch_size, total_steps
from pdlib.train.progress import Progress

__all__ = ["train", "preflight", "TrainResult", "DivergenceError", "load_data"]


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
    trained_steps: int = 0              # optimizer steps done by this call (0: loaded from cache)

    @property
    def cached(self) -> bool:
        """True when this call trained nothing: the run was finished and only loaded."""
        return self.trained_steps == 0

    @property
    def metrics(self) -> dict:
        """The last logged metrics record."""
        return self.history[-1] if self.history else {}


class _LossModule(nn.Module):
    """Method.loss as a module's forward, so DistributedDataParallel sees every call of the net
    (VPLoss calls precond.predict, not forward)."""

    def __init__(self, method: Method):
        super().__init__()
        self.denoiser = method.denoiser
        self._method = method

    def forward(self, batch: Batch, generator):
        return self._method.loss(batch, generator, denoiser=self.denoiser)


def train(cfg: TrainConfig, progress: bool = True, callback: Callable | None = None,
          resume: bool | str | None = None) -> TrainResult:
    """Train cfg's method on cfg's data; resume: None → cfg.run.resume; True → out_dir/latest.pt
    (must exist); False → never; a path. callback(record) after every log line with the metrics
    record plus 'method' and 'ema'; returning True stops the run (a checkpoint is written), as
    does run.max_minutes. A new run (nothing to resume) starts from run.init_from's weights if set."""
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg is a {type(cfg).__name__}; allowed: a pdlib.config.TrainConfig "
                         "(TrainConfig.flat(**fields) builds one from flat keywords)")
    dist_info, device = init_dist(cfg.run.device)
    lock = None
    try:
        if cfg.run.out_dir is not None and dist_info.main:
            lock = fo.RunLock(cfg.run.out_dir)          # only rank 0 writes, only rank 0 locks
        _on_rank0(dist_info, device, lock.acquire if lock is not None else None)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):    # the caller's global RNG is left as it was
            return _Trainer(cfg, dist_info, device, resume).run(progress, callback)
    finally:
        if lock is not None:
            lock.release()
        if dist_info.owns_group:
            import torch.distributed as dist
            dist.destroy_process_group()


def preflight(cfg: TrainConfig, resume: bool | str | None = None) -> TrainConfig:
    """Every check train(cfg) makes before it writes anything, writing nothing (nor allocating
    the network, where it can be built on the meta device): the device and precision, the output
    folder (writable, not locked by a live run, not holding another run unless run.overwrite),
    the data, the checkpoint to resume (readable, complete, the same config outside the run
    section, finite weights that fit the network) or run.init_from. Raises what train would
    (ValueError, FileNotFoundError, RunFolderError, CheckpointError, each one line naming the
    parameter or file); returns the resolved config. For the first cell of a notebook."""
    from pdlib._checks import check_writable
    from pdlib.train.dist import resolve_device
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg is a {type(cfg).__name__}; allowed: a pdlib.config.TrainConfig")
    device = resolve_device(cfg.run.device, 0)
    resolve_amp(cfg.run.amp, device)
    if cfg.run.out_dir is not None:
        check_writable(cfg.run.out_dir, "run.out_dir")
        fo.RunLock(cfg.run.out_dir).check_free()
    data = load_data(cfg)
    rcfg = resolve_config(cfg, data)
    micro_batch_size(rcfg, int(os.environ.get("WORLD_SIZE", "1")))
    BatchStream(data.images, None, rcfg.optim.batch_size, rcfg.optim.seed)     # batch <= data
    try:                                    # the network's shapes without allocating it …
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_method(rcfg).state_dict().items()}
    except (RuntimeError, NotImplementedError):     # … where every part can be built on meta
        shapes = {k: tuple(v.shape) for k, v in build_method(rcfg).state_dict().items()}
    path = st.resume_path(rcfg, resume)

    def fits(weights, what):
        if not isinstance(weights, dict) or \
                {k: tuple(getattr(v, "shape", ())) for k, v in weights.items()} != shapes:
            raise CheckpointError(f"{what}: its weights do not fit net={rcfg.net!r} with "
                                  f"data.class_cond={rcfg.data.class_cond!r}; allowed: a checkpoint "
                                  "of the same network")
    if path is not None:
        state = st.load_resume_state(path, rcfg)
        fits(state["model"], f"checkpoint {str(path)!r}")
        fits(state["ema"], f"checkpoint {str(path)!r}")
    elif rcfg.run.init_from is not None:
        state = st.load_init_state(rcfg)
        fits(state["model"], f"run.init_from={rcfg.run.init_from!r}")
    if cfg.run.out_dir is not None:
        fo.check_folder(rcfg, path, dry_run=True)
    return rcfg


def _on_rank0(d: Dist, device, fn) -> None:
    """Run fn (rank 0's share of the work, or None) and make every rank fail if it failed, so
    that no rank waits forever on a collective of a rank that stopped."""
    err = None
    if fn is not None:
        try:
            fn()
        except Exception as e:          # re-raised below, on this rank
            err = e
    if d.world > 1:
        import torch.distributed as dist
        code = torch.tensor([0.0 if err is None else float(exit_code(err))], device=device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        if err is None and code.item() > 0:
            raise PeerFailedError("rank 0 of this run failed before training (see its error line)",
                                  int(code.item()))
    if err is not None:
        raise err


def load_data(cfg: TrainConfig):
    """cfg's training images (pdlib.data.load_dataset), errors named by their config field."""
    import zipfile

    from pdlib.data import load_dataset
    d = cfg.data
    try:
        return load_dataset(d.dataset, resolution=d.resolution, n=d.n_data, seed=cfg.optim.seed)
    except (ValueError, OSError, EOFError, ImportError, RuntimeError, zipfile.BadZipFile) as e:
        msg = one_line(e)
        for src, dst in (("n=", "data.n_data="), ("resolution=", "data.resolution="),
                         ("name=", "data.dataset=")):
            if msg.startswith(src):
                msg = dst + msg[len(src):]
                break
        else:
            msg = f"data.dataset={d.dataset!r} cannot be loaded: {msg}"
        raise (FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError)(msg) from None


class _Trainer:
    """One run: its state (built or resumed), the step, logging, sample grids and checkpoints."""

    # -- state ------------------------------------------------------------------------------------
    def __init__(self, cfg: TrainConfig, d: Dist, device: torch.device, resume):
        self.d, self.device = d, device
        self.amp_dtype = resolve_amp(cfg.run.amp, device)
        data = load_data(cfg)
        self.cfg = cfg = resolve_config(cfg, data)
        self.m = micro_batch_size(cfg, d.world)                        # images per rank and round
        self.stream = BatchStream(data.images, data.labels if cfg.data.class_cond else None,
                                  cfg.optim.batch_size, cfg.optim.seed)
        self.n_steps = total_steps(cfg)

        torch.manual_seed(derive_seed(cfg.optim.seed, "init"))
        self.method = build_method(cfg).to(device)
        self.ema = copy.deepcopy(self.method)
        self.ema.denoiser.eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.method.parameters(), lr=lr_at(cfg, 0), betas=(0.9, 0.999),
                                     eps=1e-8, weight_decay=cfg.optim.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.out = Path(cfg.run.out_dir) if cfg.run.out_dir is not None else None
        self.step, self.t_resumed, self.images_seen = 0, 0.0, 0
        self.ckpt_path = st.resume_path(cfg, resume)
        if self.ckpt_path is not None:
            self.step, self.t_resumed, self.images_seen = st.restore(
                self.ckpt_path, cfg, self.method, self.ema, self.opt, self.scaler, self.stream)
        elif cfg.run.init_from is not None:
            st.init_weights(self.method, self.ema, cfg)
        self.images_logged = self.images_seen          # images at the last metrics record
        # the newest checkpoint with finite weights (what a DivergenceError points to)
        self.good_ckpt = (self.ckpt_path, self.step) if self.ckpt_path is not None else None
        self.writes = self.out is not None and d.main
        self.history = []
        _on_rank0(d, device, self._prepare_folder if self.writes else None)

        if cfg.run.compile:
            self.method.net.compile()
        loss_module = _LossModule(self.method)
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(loss_module)
        else:
            self.model = loss_module
        self.method.denoiser.train()
        self.params = [p for p in self.method.parameters() if p.requires_grad]
        stats = torch.float32 if device.type == "mps" else torch.float64
        self.loss_sum = torch.zeros((), device=device, dtype=stats)       # Σ losses since the last log
        self.items = torch.zeros((), device=device, dtype=stats)          # Σ images they hold
        self.nonfinite = torch.zeros((), device=device, dtype=torch.int32)  # steps with NaN/inf gradients
        self.streak = torch.zeros((), device=device, dtype=torch.int64)     # such steps in a row (loss too)
        self.tripped = torch.zeros((), device=device, dtype=torch.int64)    # step it hit the limit; 0: no
        self.sample_seed = derive_seed(cfg.optim.seed, "samples")
        self._sample_note = False

    def _prepare_folder(self) -> None:
        """Rank 0, before its first write: refuse or set aside another run, remove the temp
        files of killed writes, then start (or trim) metrics.jsonl and write config.json."""
        cfg = self.cfg
        fo.check_folder(cfg, self.ckpt_path)
        fo.clean_temp_files(self.out)
        self.metrics_path = self.out / "metrics.jsonl"
        try:
            if self.ckpt_path is not None:
                st.trim_metrics(self.metrics_path, self.step)
                if self.metrics_path.is_file():               # records of the steps already done
                    self.history = [json.loads(line) for line in
                                    self.metrics_path.read_text().splitlines() if line.strip()]
            else:
                self.metrics_path.write_text("")
            atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", self.out / "config.json")
        except OSError as e:
            if is_disk_full(e):
                raise self._disk_full(e) from e
            raise

    def _last_good(self) -> str:
        if self.good_ckpt is None:
            return "none (no checkpoint was written before)"
        path, step = self.good_ckpt
        return f"{str(path)!r} (step {step})"

    def _again(self) -> str:
        if self.good_ckpt is None:
            return "start again"
        return f"resume from it (run.resume={str(self.good_ckpt[0])!r})"

    def _disk_full(self, e: OSError) -> DiskFullError:
        name = getattr(e, "filename", None) or "a file of the run"
        kept = (f"the previous checkpoint {self._last_good()} is intact" if self.good_ckpt else
                "no checkpoint had been written yet")
        return DiskFullError(f"disk full (ENOSPC: no space left on device) at step {self.step} "
                             f"writing {str(name)!r}, which was not written; {kept}. Free some space "
                             "(or set run.ckpt_keep) and run again to resume", name)

    def check_divergence(self) -> None:
        """DivergenceError if run.max_nonfinite_steps steps in a row had a NaN/inf loss or
        gradient norm (the flag is set on the device in train_step; read here, at log lines
        and checkpoints)."""
        limit = self.cfg.run.max_nonfinite_steps
        if limit is None:
            return
        tripped = self.tripped.clone()
        if self.d.world > 1:
            import torch.distributed as dist
            dist.all_reduce(tripped, op=dist.ReduceOp.MAX)   # the loss is per rank
        t = int(tripped.item())
        if t:
            what = "gradient norm" if self.scaler is None else "loss (fp16: the GradScaler handles gradients)"
            raise DivergenceError(
                f"step {t}: the loss or {what} was NaN/inf for {limit} steps in a row (steps "
                f"{t - limit + 1}-{t}, lr {lr_at(self.cfg, t - 1):.3g}): the run diverged and stopped "
                f"at step {self.step}; no checkpoint was written during such steps; the last good checkpoint "
                f"is {self._last_good()}. Lower optim.lr or set optim.grad_clip, then {self._again()} "
                "(run.max_nonfinite_steps sets how many such steps in a row stop a run)")

    def _in_nonfinite_streak(self) -> bool:
        """Whether the last step's loss or gradient norm was NaN/inf (on any rank); a checkpoint
        due then waits for the next finite step (a normal run never waits)."""
        streak = self.streak.clone()
        if self.d.world > 1:
            import torch.distributed as dist
            dist.all_reduce(streak, op=dist.ReduceOp.MAX)
        return bool(streak.item() > 0)

    def check_weights(self) -> None:
        """DivergenceError if the raw or the EMA weights hold NaN/inf (before a checkpoint)."""
        bad = nonfinite_entries({"model": self.method.state_dict(), "ema": self.ema.state_dict()})
        if not bad:
            return
        raise DivergenceError(
            f"step {self.step}: the weights hold NaN/inf ({len(bad)} tensors, e.g. {bad[0]}): the "
            f"run diverged; the checkpoint of step {self.step} was not written, latest.pt is "
            f"unchanged; the last good checkpoint is {self._last_good()}. Lower optim.lr or set "
            f"optim.grad_clip, then {self._again()}")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # -- one optimizer step -----------------------------------------------------------------------
    def train_step(self) -> None:
        cfg, d, m = self.cfg, self.d, self.m
        accum = cfg.optim.grad_accum
        lr = lr_at(cfg, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.lr = lr
        x, y = self.stream.batch(self.step)                              # (B, C, H, W), (B,)
        # per-step choices of a method (Patch Diffusion's patch size): the same on every rank and
        # accumulation round, from a generator of its own (no global random state is touched)
        step_gen = torch.Generator().manual_seed(derive_seed(cfg.optim.seed, "step", self.step))
        self.method.begin_step(self.step, self.n_steps, step_gen)
        mult = self.method.step_multiplier()        # more images this step (small patches)
        if not (isinstance(mult, int) and mult >= 1):
            raise ValueError(f"{self.method.name}.step_multiplier() gave {mult!r}; allowed: an int >= 1")
        if mult > 1:                                # the step's batch, then (mult-1)·B more images
            xe, ye = self.stream.extra(self.step, (mult - 1) * cfg.optim.batch_size)
            x = torch.cat([x, xe])
            y = None if y is None else torch.cat([y, ye])
            m = m * mult
        self.step_images = cfg.optim.batch_size * mult
        self.opt.zero_grad(set_to_none=True)
        ok = torch.ones((), dtype=torch.bool, device=self.device)
        for a in range(accum):
            k = a * d.world + d.rank                                     # global micro-batch index
            xb = x[k * m:(k + 1) * m].to(self.device, non_blocking=True)  # (m, C, H, W)
            yb = None if y is None else y[k * m:(k + 1) * m].to(self.device, non_blocking=True)
            key = derive_seed(cfg.optim.seed, "step", self.step, k)
            torch.manual_seed(key)                                       # dropout inside the net
            gen = torch.Generator(device=self.device).manual_seed(key)   # batch, noise, σ/t, labels
            batch = self.method.prepare_batch(xb, yb, gen)
            if not batch.n_images >= 1:
                raise ValueError(f"{self.method.name}.prepare_batch gave n_images={batch.n_images!r}; "
                                 "allowed: the number of images (>= 1) its loss holds")
            sync = (d.world > 1 and a < accum - 1)
            with (self.model.no_sync() if sync else contextlib.nullcontext()):
                with self._autocast():
                    losses = self.model(batch, gen)                      # (items,)
                loss = losses.float().sum() / (batch.n_images * accum)   # per image; DDP averages ranks
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            step_loss = losses.detach().double().sum()
            self.loss_sum += step_loss
            self.items += batch.n_images
            ok = torch.isfinite(step_loss) & ok                        # this step's losses all finite
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        grads = [p.grad for p in self.params if p.grad is not None]
        step_bad = ~ok                        # a NaN/inf loss, or (below) gradient norm
        if grads and self.scaler is None:     # counted, not hidden (fp16: the scaler skips such steps)
            bad = ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
            self.nonfinite += bad.to(self.nonfinite.dtype)
            step_bad = step_bad | bad
        self.streak.mul_(step_bad).add_(step_bad)   # on the device: no per-step sync
        limit = cfg.run.max_nonfinite_steps
        if limit is not None:
            self.tripped = torch.where((self.tripped == 0) & (self.streak >= limit),
                                       self.step + 1, self.tripped)
        for g_ in grads:
            torch.nan_to_num(g_, nan=0.0, posinf=1e5, neginf=-1e5, out=g_)
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        st.update_ema(self.ema.denoiser, self.method.denoiser,
                      ema_beta(cfg, self.step, self.step_images, self.images_seen))
        self.images_seen += self.step_images
        self.step += 1

    # -- logging ----------------------------------------------------------------------------------
    def log(self, n_steps_since: int, t_last: float, t_start: float) -> dict:
        """Write one metrics record (loss per image since the last one, lr, images/s, time)."""
        total = torch.stack([self.loss_sum, self.items])
        if self.d.world > 1:
            import torch.distributed as dist
            dist.all_reduce(total)
        now = time.perf_counter()
        n_img = self.images_seen - self.images_logged
        self.images_logged = self.images_seen
        record = {"step": self.step, "kimg": self.images_seen / 1000,
                  "loss": total[0].item() / total[1].item(), "lr": self.lr,
                  "img_per_s": n_img / max(now - t_last, 1e-9),
                  "time": now - t_start, "nonfinite_grad_steps": int(self.nonfinite.item())}
        if record["nonfinite_grad_steps"] and self.d.main:
            warnings.warn(f"step {self.step}: {record['nonfinite_grad_steps']} of the last "
                          f"{n_steps_since} steps had NaN/inf gradients (zeroed by nan_to_num "
                          "before the update): check the loss", RuntimeWarning)
        self.nonfinite.zero_()
        self.loss_sum.zero_()
        self.items.zero_()
        self.history.append(record)
        if self.writes:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.check_divergence()
        return record

    def _stop_requested(self, record: dict, callback) -> bool:
        mm = self.cfg.run.max_minutes
        stop = mm is not None and record["time"] >= 60 * mm
        if callback is not None:
            stop = bool(callback({**record, "method": self.method, "ema": self.ema})) or stop
            if self.d.world > 1:
                import torch.distributed as dist
                flag = torch.tensor([float(stop)], device=self.device)
                dist.all_reduce(flag)
                stop = bool(flag.item() > 0)
        return stop

    # -- files ------------------------------------------------------------------------------------
    def checkpoint(self, t_start: float) -> Path | None:
        self.check_divergence()
        self.check_weights()                  # every rank: the weights are the same on all
        barrier(self.d)
        path = None
        if self.writes:
            state = st.checkpoint_state(self.cfg, self.step, self.method, self.ema, self.opt,
                                        self.scaler, self.stream.position(self.step),
                                        time.perf_counter() - t_start, self.images_seen)
            path = write_checkpoint(state, self.out, self.step, keep=self.cfg.run.ckpt_keep)
        if self.out is not None:              # every rank knows what rank 0 wrote
            self.good_ckpt = (path or checkpoint_path(self.out, self.step), self.step)
        barrier(self.d)
        return path

    def sample_grid(self) -> Path | None:
        """The EMA method's sample grid (fixed noise seed), or None where it cannot sample alone."""
        if not self.writes:
            return None
        if not self.ema.samples_alone:
            if not self._sample_note:
                warnings.warn(f"method {self.ema.name!r} cannot sample by itself: no sample grids "
                              "during training", RuntimeWarning)
                self._sample_note = True
            return None
        from pdlib.viz import save_grid
        g = torch.Generator().manual_seed(self.sample_seed)
        images = self.ema.sample(self.cfg.run.sample_n, generator=g, steps=self.cfg.run.sample_steps,
                                 device=self.device)
        k = self.cfg.data.num_classes
        nrow = k if self.cfg.data.class_cond and k <= 16 else None
        return Path(save_grid(images, self.out / "samples" / f"{self.step:07d}.png", nrow=nrow))

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, progress: bool, callback) -> TrainResult:
        cfg = self.cfg
        bar = Progress(cfg.summary().split(" on ")[0].replace(" ", ""), self.step, self.n_steps,
                       cfg.run.max_minutes, self.t_resumed, enabled=progress and self.d.main)
        step0 = self.step
        try:
            samples, last_ckpt = self._loop(bar, callback)
        except OSError as e:
            if is_disk_full(e) and self.writes:      # names the file and the intact checkpoint
                raise self._disk_full(e) from e
            raise
        finally:
            bar.close()
        self.method.denoiser.eval()
        return TrainResult(step=self.step, config=cfg, method=self.method, ema=self.ema,
                           history=self.history, out_dir=self.out, checkpoint=last_ckpt,
                           samples=samples, trained_steps=self.step - step0)

    def _loop(self, bar, callback) -> tuple[list, Path | None]:
        run = self.cfg.run
        samples, last_ckpt = [], self.ckpt_path           # a finished run resumes as a no-op
        t_last = time.perf_counter()
        t_start = t_last - self.t_resumed
        since, pending = 0, False
        stop = bar.cached                                 # a spent time budget: nothing to train
        while self.step < self.n_steps and not stop:
            self.train_step()
            since += 1
            bar.update(self.step)
            if self.step % run.log_every == 0 or self.step == self.n_steps:
                record = self.log(since, t_last, t_start)
                since, t_last = 0, time.perf_counter()
                bar.set_postfix(self.step, loss=f"{record['loss']:.4f}",
                                img_s=f"{record['img_per_s']:.0f}")
                stop = self._stop_requested(record, callback)
            last = self.step == self.n_steps or stop
            t_io = time.perf_counter()
            if (run.sample_every and self.step % run.sample_every == 0) or last:
                p = self.sample_grid()
                if p is not None:
                    samples.append(p)
            if (run.ckpt_every and self.step % run.ckpt_every == 0) or last or pending:
                # not in the middle of non-finite steps: such weights are no "good checkpoint"
                pending = not last and self._in_nonfinite_streak()
                if not pending:
                    last_ckpt = self.checkpoint(t_start) or last_ckpt
            t_last += time.perf_counter() - t_io          # img/s counts training time only
        return samples, last_ckpt
