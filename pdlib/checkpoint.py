"""Checkpoints: atomic writes, safe loads (``torch.load(weights_only=True)`` only), RNG states.

A checkpoint is a dict of tensors and plain Python data (no pickled objects): the training loop
stores the config as a JSON string and RNG states as uint8 tensors, so loading never runs
arbitrary code. Writes go to a temporary file in the same folder, are fsync'ed and then renamed
over the target (``os.replace``), so a crash mid-write never damages an existing checkpoint; the
temporary files a killed write leaves (``.NAME.XXXXXXXX.tmp``) are removed by
``remove_stale_temp_files`` when the next run starts. A full disk is a ``DiskFullError`` naming
the file. ``write_checkpoint`` refuses weights with NaN/inf (``DivergenceError``): a checkpoint
with non-finite weights never becomes ``latest.pt``, and rotation (``keep``) never deletes the
checkpoint just written, so the newest finite checkpoint always survives.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from pdlib.errors import DiskFullError, DivergenceError, is_disk_full

__all__ = ["FORMAT", "LATEST", "CheckpointError", "atomic_save", "atomic_write_text", "atomic_write",
           "load_checkpoint", "write_checkpoint", "checkpoint_path", "list_checkpoints", "rng_state",
           "set_rng_state", "require_keys", "nonfinite_entries", "remove_stale_temp_files",
           "checkpoint_step"]

FORMAT = "pdlib-train/1"       # the "format" entry of every training checkpoint
LATEST = "latest.pt"           # the newest checkpoint of a run folder
_CKPT_RE = re.compile(r"^ckpt-(\d{7,})\.pt$")
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{6,}\.tmp$")   # tempfile.mkstemp's names below


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, truncated, unsafe or not a pdlib training checkpoint."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, write) -> Path:
    """Run write(tmp) on a temporary path beside `path`, then os.replace it onto `path` and fsync
    the folder. Readers see the old file or the new one, never a torn one; on any failure the
    temporary file is removed and the old file is left as it was."""
    existed = path.is_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise _disk_full(path, existed) from e
        raise
    os.close(fd)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)            # the permissions of a plainly created file
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(e):
            raise _disk_full(path, existed) from e
        raise
    _fsync_dir(path.parent)
    return path


def _disk_full(path: Path, existed: bool) -> DiskFullError:
    kept = f"the existing {path.name} is unchanged" if existed else "nothing was left behind"
    return DiskFullError(f"disk full (ENOSPC: no space left on device) writing {str(path)!r}: the "
                         f"file was not written and its temporary file was removed; {kept}. "
                         "Free some space (or set run.ckpt_keep) and run again", path)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) to write a file beside `path`, then rename it onto `path` atomically
    (for writers that need a file name, e.g. safetensors' save_file)."""
    return _atomic_write(Path(path), write)


def _write_synced(tmp: Path, write_to_file) -> None:
    with open(tmp, "wb") as f:
        write_to_file(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the target folder, fsync, then os.replace onto path."""
    return _atomic_write(Path(path), lambda tmp: _write_synced(tmp, lambda f: torch.save(obj, f)))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file (UTF-8) atomically, like atomic_save."""
    return _atomic_write(Path(path), lambda tmp: _write_synced(tmp, lambda f: f.write(text.encode())))


def _atomic_alias(src: Path, dst: Path) -> None:
    """Make dst an atomic copy of src: a hard link where the file system allows, else a copy."""
    def link_or_copy(tmp: Path) -> None:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    _atomic_write(dst, link_or_copy)


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """The file of the checkpoint at a step: out_dir/ckpt-{step:07d}.pt."""
    return Path(out_dir) / f"ckpt-{int(step):07d}.pt"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The numbered checkpoints of a run folder, oldest first."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step in a numbered checkpoint's name (ckpt-0000500.pt → 500), else None."""
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def nonfinite_entries(state: dict, keys=("model", "ema")) -> list[str]:
    """Names 'model.net.w', … of the floating-point tensors under state[key] (for each key
    present) holding NaN or inf; a state without any of the keys is checked whole."""
    parts = [(k, state[k]) for k in keys if isinstance(state.get(k), dict)] or [("", state)]
    found = []                                          # (name, floating-point tensor)

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point():
                found.append((prefix, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
    for key, part in parts:
        walk(key, part)
    finite = [torch.isfinite(t).all() for _, t in found]
    if not found or bool(torch.stack([f.to(finite[0].device) for f in finite]).all()):
        return []                                       # the usual case: one device sync
    return [name for (name, _), f in zip(found, finite) if not bool(f)]


def write_checkpoint(state: dict, out_dir: str | os.PathLike, step: int,
                     keep: int | None = None) -> Path:
    """Write state as out_dir/ckpt-{step:07d}.pt, then point out_dir/latest.pt at it (both
    atomic); keep: how many numbered checkpoints to keep (None: all). Returns the numbered path.

    Weights (state['model'], state['ema']) with NaN/inf are refused with a DivergenceError before
    anything is written, so latest.pt always has finite weights. Rotation keeps the checkpoint
    just written and the keep−1 newest ones before it; it deletes only checkpoints of earlier
    steps (never one of a later step, e.g. left by a run resumed from an earlier checkpoint)."""
    bad = nonfinite_entries(state)
    if bad:
        latest = Path(out_dir) / LATEST
        raise DivergenceError(
            f"step {step}: the weights hold NaN/inf ({len(bad)} tensors, e.g. {bad[0]}); checkpoint "
            f"{str(checkpoint_path(out_dir, step))!r} was not written and "
            + (f"{str(latest)!r} is unchanged" if latest.is_file() else "there is no latest.pt"))
    path = atomic_save(state, checkpoint_path(out_dir, step))
    _atomic_alias(path, Path(out_dir) / LATEST)
    if keep is not None and keep > 0:
        older = [p for p in list_checkpoints(out_dir) if checkpoint_step(p) < int(step)]
        for old in older[:max(len(older) - (keep - 1), 0)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return path


def remove_stale_temp_files(folder: str | os.PathLike, targets=None) -> list[Path]:
    """Delete the temporary files (.NAME.XXXXXXXX.tmp) that killed atomic writes left in folder;
    targets: only those of these file names (a callable name → bool, or None: all). Call it only
    while no other process writes there (a run holds the folder's lock). Returns what it removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_RE.match(p.name)
        if m and p.is_file() and (targets is None or targets(m["target"])):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def require_keys(state, path, keys) -> None:
    """CheckpointError naming the file and the missing keys, unless state is a dict with all keys."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}; expected a "
                              f"dict with keys {list(keys)}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the keys {missing}; a pdlib training "
                              f"checkpoint has {list(keys)} (is it complete, and written by pdlib.train?)")


def load_checkpoint(path: str | os.PathLike, map_location="cpu", check_format: bool = True) -> dict:
    """Load a checkpoint with torch.load(weights_only=True); a clear error names a bad file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; allowed: a checkpoint file "
                              f"(e.g. {str(path / LATEST)!r})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, or a disallowed pickled global
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded: the file is corrupt or truncated, not a "
            "torch file, or it holds pickled Python objects other than tensors and plain data "
            "(pdlib only loads checkpoints with torch.load(weights_only=True)). Cause: "
            f"{type(e).__name__}: {_load_cause(e)}") from e
    if check_format and (not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT):
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {str(path)!r}: format {got!r}; expected a pdlib "
                              f"training checkpoint with format {FORMAT!r}")
    return ckpt


def _load_cause(e: Exception) -> str:
    """The informative part of torch.load's error, on one line (it writes paragraphs)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error" in ln:           # the reason follows it, on its line or the next
            rest = ln.split("WeightsUnpickler error:", 1)[-1].strip()
            cause = rest or (lines[i + 1] if i + 1 < len(lines) else "")
            break
    else:
        cause = lines[0] if lines else ""
        if isinstance(e, KeyError) or cause.isdigit():
            cause = f"unexpected byte {cause} (not a torch file)"
        cause = cause.split(". ")[0]
    return cause[:240] or "(no message)"


def rng_state() -> dict:
    """The global torch RNG states as uint8 tensors: CPU, and every CUDA device if any."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Restore the global torch RNG states saved by rng_state()."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(cuda.cpu()))
