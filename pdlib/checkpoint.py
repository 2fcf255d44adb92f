"""Checkpoints: atomic writes, safe loads (``torch.load(weights_only=True)`` only), RNG states.

A checkpoint is a dict of tensors and plain Python data (no pickled objects): the training loop
stores the config as a JSON string and RNG states as uint8 tensors, so loading never runs
arbitrary code. Writes go to a temporary file in the same folder, are fsync'ed and then renamed
over the target (``os.replace``), so a crash mid-write never damages an existing checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["FORMAT", "LATEST", "CheckpointError", "atomic_save", "atomic_write_text", "load_checkpoint",
           "write_checkpoint", "checkpoint_path", "list_checkpoints", "rng_state",
           "set_rng_state"]

FORMAT = "pdlib-train/1"       # the "format" entry of every training checkpoint
LATEST = "latest.pt"           # the newest checkpoint of a run folder
_CKPT_RE = re.compile(r"^ckpt-(\d{7,})\.pt$")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


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


def write_checkpoint(state: dict, out_dir: str | os.PathLike, step: int,
                     keep: int | None = None) -> Path:
    """Write state as out_dir/ckpt-{step:07d}.pt, then point out_dir/latest.pt at it (both
    atomic); keep: how many numbered checkpoints to keep (None: all). Returns the numbered path."""
    path = atomic_save(state, checkpoint_path(out_dir, step))
    _atomic_alias(path, Path(out_dir) / LATEST)
    if keep is not None and keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu", check_format: bool = True) -> dict:
    """Load a checkpoint with torch.load(weights_only=True); a clear error names a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, or a disallowed pickled global
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        cause = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded: the file is corrupt or truncated, or it "
            "holds pickled Python objects other than tensors and plain data (pdlib only loads "
            f"checkpoints with torch.load(weights_only=True)). Cause: {type(e).__name__}: "
            f"{cause}") from e
    if check_format and (not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT):
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {str(path)!r}: format {got!r}; expected a pdlib "
                              f"training checkpoint with format {FORMAT!r}")
    return ckpt


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
