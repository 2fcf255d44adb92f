"""A run's state on disk: which checkpoint a run resumes, whether its config may resume it, the
checkpoint dict (model, EMA, optimizer, scaler, RNG, data position, time), warm starts
(run.init_from) and the EMA update. Checkpoints are written and read by pdlib.checkpoint
(atomic writes, torch.load(weights_only=True) only)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from pdlib.checkpoint import (FORMAT, LATEST, CheckpointError, load_checkpoint, nonfinite_entries,
                              require_keys, rng_state, set_rng_state)
from pdlib.config import TrainConfig
from pdlib.errors import one_line

__all__ = ["resume_path", "check_resume_config", "checkpoint_state", "restore", "init_weights",
           "trim_metrics", "update_ema", "saved_config", "load_resume_state", "CHECKPOINT_KEYS"]

# what checkpoint_state writes and restore needs
CHECKPOINT_KEYS = ("format", "config", "step", "model", "ema", "optimizer", "rng", "data")


def saved_config(state: dict, path) -> TrainConfig:
    """The TrainConfig stored in a checkpoint (any version, through pdlib.config.migrate)."""
    require_keys(state, path, ("config",))
    text = state["config"]
    if not isinstance(text, str):
        raise CheckpointError(f"checkpoint {str(path)!r}: its 'config' is a {type(text).__name__}; "
                              "expected the JSON text of a TrainConfig")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: its 'config' is not JSON ({e})") from None
    try:
        return TrainConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: its config is invalid ({one_line(e)})") from None


def load_resume_state(path, cfg: TrainConfig) -> dict:
    """A checkpoint to resume, checked: readable, complete, the same config outside the run
    section, finite weights (CheckpointError / ValueError naming the file otherwise)."""
    state = load_checkpoint(path, map_location="cpu")
    require_keys(state, path, CHECKPOINT_KEYS)
    check_resume_config(saved_config(state, path), cfg, path)
    bad = nonfinite_entries(state)
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} holds NaN/inf weights ({len(bad)} tensors, "
                              f"e.g. {bad[0]}): its run had diverged; allowed: an earlier checkpoint "
                              "with finite weights (run.resume=PATH)")
    return state


def resume_path(cfg: TrainConfig, resume) -> Path | None:
    """The checkpoint to resume: resume None → run.resume; True → out_dir/latest.pt (must exist);
    False → none; a path."""
    mode = cfg.run.resume if resume is None else ("auto" if resume is True else
                                                  "never" if resume is False else str(resume))
    latest = Path(cfg.run.out_dir) / LATEST if cfg.run.out_dir is not None else None
    if mode == "never":
        return None
    if mode == "auto":
        if resume is True and (latest is None or not latest.is_file()):
            raise FileNotFoundError(f"resume=True but there is no checkpoint {str(latest)!r}")
        return latest if latest is not None and latest.is_file() else None
    if Path(mode).is_dir():
        raise ValueError(f"run.resume={mode!r} is a folder; allowed: 'auto', 'never' or a checkpoint "
                         f"file (e.g. {str(Path(mode) / LATEST)!r})")
    if not Path(mode).is_file():
        raise FileNotFoundError(f"run.resume={mode!r}: no such checkpoint file")
    return Path(mode)


def check_resume_config(saved: TrainConfig, cfg: TrainConfig, path) -> None:
    """Every section but `run` must equal the checkpoint's (the run section may change)."""
    from pdlib.methods import method_class
    saved = method_class(saved.method.name).resolve(saved)   # pdlib <= 0.1 saved e.g. learn_sigma=None
    a, b = saved.to_dict(), cfg.to_dict()
    diff = []
    for section in ("data", "net", "method", "optim"):
        for k in sorted(set(a[section]) | set(b[section])):
            if a[section].get(k) != b[section].get(k):
                diff.append(f"{section}.{k}: {a[section].get(k)!r} → {b[section].get(k)!r}")
    if diff:
        raise ValueError(f"resume: the checkpoint {str(path)!r} was trained with a different "
                         f"config ({', '.join(diff)}); only the run section may change on resume. "
                         "Use another run.out_dir to start a new run (or run.resume='never' with "
                         "run.overwrite=True to set this one aside)")


def checkpoint_state(cfg, step, method, ema, opt, scaler, position, seconds,
                     images_seen: int | None = None) -> dict:
    """The dict a training checkpoint holds (tensors and plain data only)."""
    epoch, i = position
    return {
        "format": FORMAT, "config": json.dumps(cfg.to_dict()), "step": step,
        "model": method.state_dict(), "ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(),
        "data": {"position": torch.tensor([epoch, i]),
                 "images_seen": step * cfg.optim.batch_size if images_seen is None else int(images_seen)},
        "time": seconds,                                    # training seconds so far
        "torch_version": str(torch.__version__),
    }


def restore(path, cfg, method, ema, opt, scaler, stream, state=None) -> tuple[int, float, int]:
    """Load a checkpoint (or its state, loaded by load_resume_state) into the run's objects;
    (step, training seconds, images seen) at the checkpoint."""
    state = load_resume_state(path, cfg) if state is None else state
    part = "model"
    try:
        method.load_state_dict(state["model"])
        part = "ema"
        ema.load_state_dict(state["ema"])
        part = "optimizer"
        opt.load_state_dict(state["optimizer"])
        part = "scaler"
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        part = "rng"
        set_rng_state(state["rng"])
        part = "step"
        step, seconds = int(state["step"]), float(state.get("time", 0.0))
        part = "data"
        position = tuple(state["data"]["position"].tolist())
        seen = int(state["data"].get("images_seen", step * cfg.optim.batch_size))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: its {part!r} entry does not fit this run "
                              f"({one_line(e)[:300]}); the file is damaged or not from this "
                              "network") from None
    if position != stream.position(step):
        raise CheckpointError(f"checkpoint {str(path)!r}: data position "
                              f"{state['data']['position'].tolist()} does not match step {step}")
    return step, seconds, seen


def load_init_state(cfg: TrainConfig) -> dict:
    """run.init_from's checkpoint, checked: it exists, has raw weights, and they are finite."""
    path = Path(cfg.run.init_from)
    if not path.is_file():
        raise FileNotFoundError(f"run.init_from={cfg.run.init_from!r} does not exist; allowed: a "
                                "training checkpoint of the same network (e.g. runs/x/latest.pt)")
    state = load_checkpoint(path, map_location="cpu")
    require_keys(state, path, ("model",))
    bad = nonfinite_entries(state, keys=("model",))
    if bad:
        raise CheckpointError(f"run.init_from={cfg.run.init_from!r} holds NaN/inf weights "
                              f"({len(bad)} tensors, e.g. {bad[0]}); allowed: a checkpoint with "
                              "finite weights")
    return state


def init_weights(method, ema, cfg: TrainConfig) -> None:
    """run.init_from: load a checkpoint's raw weights into both the model and its EMA."""
    state = load_init_state(cfg)
    try:
        method.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        raise ValueError(f"run.init_from={cfg.run.init_from!r} holds weights of another network "
                         f"than net={cfg.net!r}, data.class_cond={cfg.data.class_cond!r}; allowed: "
                         "a checkpoint of the same network") from e
    ema.load_state_dict(method.state_dict())


def trim_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (a resumed run rewrites the later ones)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """θ_ema ← β·θ_ema + (1−β)·θ; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
