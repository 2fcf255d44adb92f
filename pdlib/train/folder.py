"""A run folder's safety: its lock, whether it holds another run, setting an old run aside, and
the temporary files of killed writes.

- `RunLock(folder)`: `folder/.lock` (JSON: PID, host, process start time, a random token), made
  with O_CREAT|O_EXCL, so of two runs into one folder the second fails at once with an error
  naming the folder and the holder's PID. A lock whose process is gone (a dead or zombie PID, or
  a PID since reused by another process, on this host) is stale and taken over with a warning.
  Released (and the folder removed again if the run created it and wrote nothing) on exit,
  exceptions included. Under DDP only rank 0 takes it.
- `check_folder(cfg, resume_from)`: a new run (nothing resumed from this folder) into a folder
  that holds another run's checkpoints, metrics or samples is refused (`RunFolderError`) unless
  `run.overwrite`; then the old run's files move, all together, into `folder/.old-<timestamp>/`
  (moving, not deleting: nothing is lost by a typo in a path). A folder whose only run files are
  those of the same config without any checkpoint (a run killed before its first checkpoint) is
  simply started again.
- `clean_temp_files(folder)`: the `.NAME.XXXXXXXX.tmp` files of killed atomic writes of the run's
  own files (checkpoints, latest.pt, config.json, sample grids), removed at start under the lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
import warnings
from pathlib import Path

from pdlib._checks import make_dirs, remove_made_dirs, unwritable
from pdlib.checkpoint import LATEST, list_checkpoints, remove_stale_temp_files
from pdlib.errors import RunFolderError

__all__ = ["LOCK", "RunLock", "run_files", "check_folder", "clean_temp_files", "set_aside"]

LOCK = ".lock"
METRICS, CONFIG, SAMPLES = "metrics.jsonl", "config.json", "samples"
_OWN = (LATEST, METRICS, CONFIG)


# ----------------------------------------------------------------------------------------------
# The lock.

def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":                 # os.kill(pid, 0) would send CTRL_C there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                                     # another user's live process
    except OSError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
        if state[state.rfind(")") + 2:].split()[0] in ("Z", "X"):
            return False                                # a zombie: exited, not yet reaped
    except (OSError, IndexError):
        pass
    now = _start_time(pid)
    return not (start is not None and now is not None and now != start)   # PID reused


class RunLock:
    """`with RunLock(folder):` holds folder/.lock for the duration (see the module docstring)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.token = secrets.token_hex(8)
        self._made: list[Path] = []
        self.held = False

    def _content(self) -> str:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "start": _start_time(os.getpid()), "token": self.token,
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})

    def _holder(self) -> dict | None:
        """The lock file's content; None if it vanished; {} if it is unreadable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            d = json.loads(text)
            return d if isinstance(d, dict) else {}
        except json.JSONDecodeError:
            return {}

    def acquire(self) -> "RunLock":
        self._made = make_dirs(self.folder, "run.out_dir")
        try:
            for _ in range(5):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._stale_or_raise()
                    continue
                except OSError as e:
                    raise unwritable("run.out_dir", self.folder, e) from None
                try:
                    os.write(fd, self._content().encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.held = True
                return self
            raise RunFolderError(f"run.out_dir={str(self.folder)!r}: could not take the lock "
                                 f"{str(self.path)!r} (other processes keep taking it); allowed: "
                                 "a folder no other run is starting in")
        except BaseException:
            remove_made_dirs(self._made)
            raise

    def _stale_or_raise(self) -> None:
        h = self._holder()
        if h is None:
            return                                      # released meanwhile: try again
        pid, host = h.get("pid"), h.get("host")
        if not isinstance(pid, int):
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if age < 30:                                # being written this very moment
                raise RunFolderError(f"run.out_dir={str(self.folder)!r} is being taken by another "
                                     f"run (lock {str(self.path)!r} was just created); allowed: "
                                     "one run per folder at a time")
            what = "an unreadable lock"
        elif host == socket.gethostname():
            if _alive(pid, h.get("start")):
                raise RunFolderError(
                    f"run.out_dir={str(self.folder)!r} is in use by another run: PID {pid} on "
                    f"{host}, since {h.get('since', '?')} (lock {str(self.path)!r}); allowed: wait "
                    "for it to finish or stop it, or use another run.out_dir")
            what = f"the stale lock of PID {pid} (that process is gone)"
        else:
            raise RunFolderError(
                f"run.out_dir={str(self.folder)!r} is in use by another run: PID {pid} on host "
                f"{host}, since {h.get('since', '?')} (lock {str(self.path)!r}); allowed: wait for "
                f"it, or another run.out_dir; if that run is gone, delete {str(self.path)!r}")
        warnings.warn(f"run.out_dir={str(self.folder)!r}: taking over {what}", RuntimeWarning,
                      stacklevel=4)
        with contextlib.suppress(FileNotFoundError):
            # replace only the lock we judged stale: another process may just have done the same
            if self._holder() == h:
                self.path.unlink()

    def check_free(self) -> None:
        """RunFolderError if a live process holds the lock (takes nothing, writes nothing)."""
        h = self._holder()
        if not h:
            return
        pid, host = h.get("pid"), h.get("host")
        if isinstance(pid, int) and (host != socket.gethostname() or _alive(pid, h.get("start"))):
            raise RunFolderError(
                f"run.out_dir={str(self.folder)!r} is in use by another run: PID {pid} on {host}, "
                f"since {h.get('since', '?')} (lock {str(self.path)!r}); allowed: wait for it to "
                "finish or stop it, or use another run.out_dir")

    def release(self) -> None:
        if self.held:
            h = self._holder()
            if h is not None and h.get("token") == self.token:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.held = False
        remove_made_dirs(self._made)                             # a folder this run made and left empty
        self._made = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


# ----------------------------------------------------------------------------------------------
# Another run in the folder.

def run_files(folder) -> list[Path]:
    """The files of a run in folder: checkpoints, latest.pt, a non-empty metrics.jsonl,
    config.json and sample grids (what pdlib.train writes; other files are not the run's)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = list_checkpoints(folder)
    for name in _OWN:
        p = folder / name
        if p.is_file() and not (name == METRICS and p.stat().st_size == 0):
            out.append(p)
    samples = folder / SAMPLES
    if samples.is_dir() and any(samples.iterdir()):
        out.append(samples)
    return out


def _describe(folder: Path, files: list[Path]) -> str:
    ckpts = list_checkpoints(folder)
    parts = []
    if ckpts:
        parts.append(f"{len(ckpts)} checkpoint{'s' * (len(ckpts) > 1)} up to {ckpts[-1].name}")
    elif (folder / LATEST).is_file():
        parts.append(LATEST)
    metrics = folder / METRICS
    if metrics in files:
        n = sum(1 for line in metrics.read_text(errors="replace").splitlines() if line.strip())
        parts.append(f"{METRICS} ({n} line{'s' * (n != 1)})")
    if (folder / SAMPLES) in files:
        parts.append(f"{SAMPLES}/")
    if not parts and (folder / CONFIG) in files:
        parts.append(CONFIG)
    return ", ".join(parts)


def _same_config(folder: Path, cfg) -> bool:
    """Whether folder/config.json is cfg's, outside the run section."""
    from pdlib.config import TrainConfig
    try:
        saved = TrainConfig.from_dict(json.loads((folder / CONFIG).read_text())).to_dict()
    except (OSError, ValueError):
        return False
    mine = cfg.to_dict()
    return all(saved[k] == mine[k] for k in ("data", "net", "method", "optim"))


def set_aside(folder) -> Path:
    """Move the run files of folder, all together, into folder/.old-<YYYYmmdd-HHMMSS>/."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder / f".old-{stamp}"
    k = 1
    while dest.exists():
        k += 1
        dest = folder / f".old-{stamp}-{k}"
    dest.mkdir()
    for p in run_files(folder) + [folder / METRICS]:
        if p.exists():
            os.replace(p, dest / p.name)
    return dest


def check_folder(cfg, resume_from: Path | None, dry_run: bool = False) -> Path | None:
    """Refuse (RunFolderError) or, with run.overwrite, set aside another run's files in
    run.out_dir before a run writes there; returns where the old run went (or None). Resuming
    the folder's own checkpoint (resume_from inside it) is the same run: nothing to check.
    dry_run: only refuse, move nothing."""
    folder = Path(cfg.run.out_dir)
    files = run_files(folder)
    if not files:
        return None
    if resume_from is not None and Path(resume_from).resolve().parent == folder.resolve():
        return None
    has_ckpts = bool(list_checkpoints(folder)) or (folder / LATEST).is_file()
    if resume_from is None and not has_ckpts and _same_config(folder, cfg):
        return None                    # this config's run, killed before its first checkpoint
    what = _describe(folder, files)
    if cfg.run.overwrite:
        if dry_run:
            return None
        dest = set_aside(folder)
        warnings.warn(f"run.overwrite=True: moved the old run in {str(folder)!r} ({what}) to "
                      f"{str(dest)!r}", RuntimeWarning, stacklevel=3)
        return dest
    how = ("resumes from another checkpoint" if resume_from is not None else
           "is a new run" + (" (run.resume='never')" if cfg.run.resume == "never" else ""))
    ckpts = list_checkpoints(folder)
    cont = ("run.resume='auto' to continue that run, " if (folder / LATEST).is_file() else
            f"run.resume={str(ckpts[-1])!r} to continue that run, " if ckpts else "")
    raise RunFolderError(
        f"run.out_dir={str(folder)!r} holds another run ({what}) and this run {how}; allowed: "
        f"another run.out_dir, {cont}or run.overwrite=True to move the old run into "
        f"{str(folder / '.old-<time>')!r} first")


def clean_temp_files(folder) -> list[Path]:
    """Remove the temporary files of killed writes of the run's own files (module docstring)."""
    folder = Path(folder)
    own = lambda name: name in _OWN or name.startswith("ckpt-")            # noqa: E731
    return (remove_stale_temp_files(folder, own)
            + remove_stale_temp_files(folder / SAMPLES, lambda name: name.endswith(".png")))
