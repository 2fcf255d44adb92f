"""Where a result came from: the git revision of the code, the machine, the config, the seed, when.

Every results JSON carries one of these records (``evaluate_checkpoint``'s ``provenance`` entry,
the benchmarks' ``git`` / ``machine`` / ``started`` / ``ended``, a full run's
``NAME.provenance.json``), and the results page lists them (``pdlib.book.results.provenance_table``).

- ``git_state(root)``: the checked-out revision (full sha) and whether tracked files differ from
  it (``dirty``, with how many and the first few of them); None values, never an exception, outside
  a git checkout or without git.
- ``machine(device, threads)``: CPU model, cores, torch threads and CPU capability, Python, torch,
  the platform, and the CUDA device's name where one is used. No host name (privacy).
- ``provenance(config, seed, started, ended)``: both, plus the config, the seed, start and end
  times (ISO 8601, UTC) and the command line (the home folder written as ``~``).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO_ROOT", "GIT_TIMEOUT_S", "MAX_LISTED", "git_state", "cpu_model", "machine",
           "utc_iso", "provenance"]

REPO_ROOT = Path(__file__).resolve().parents[1]     # the checkout pdlib runs from
GIT_TIMEOUT_S = 5.0                                 # per git call: a hung git never stalls a run
MAX_LISTED = 10                                     # changed files named in git_state (all counted)


def _git(root: Path, *args: str) -> str | None:
    """stdout of `git args` run in root; None if git is missing, fails or times out."""
    try:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=root, capture_output=True,
                             text=True, timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(root=REPO_ROOT) -> dict:
    """{'revision': full sha of HEAD, 'dirty': tracked files changed (staged or not),
    'changed_files': how many, 'changed': the first MAX_LISTED of their paths}: all None when
    root is not the top folder of a git checkout (e.g. pdlib installed from a wheel), git is not
    installed, or it does not answer within GIT_TIMEOUT_S. Untracked files are not counted."""
    none = dict(revision=None, dirty=None, changed_files=None, changed=None)
    root = Path(root)
    if not root.is_dir():
        return none
    head = _git(root, "rev-parse", "--show-toplevel", "HEAD")
    lines = (head or "").split()
    if len(lines) != 2:
        return none
    top, revision = lines
    try:
        if Path(top).resolve() != root.resolve():    # root lies inside another repository
            return none
    except OSError:
        return none
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if status is None:
        return dict(none, revision=revision)
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return dict(revision=revision, dirty=bool(changed), changed_files=len(changed),
                changed=changed[:MAX_LISTED])


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(device=None, threads: int | None = None) -> dict:
    """What ran it: python, torch, platform, cpu (model), cpu_count, torch_threads (`threads`, or
    this process's torch.get_num_threads()), cpu_capability (torch's SIMD level), and 'gpu': the
    CUDA device's name when `device` is a CUDA device (device=None: CUDA device 0 if CUDA is
    available), else None. No host name."""
    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                cpu=cpu_model(), cpu_count=os.cpu_count(),
                torch_threads=int(threads) if threads is not None else torch.get_num_threads(),
                cpu_capability=capability, gpu=None)
    try:
        dev = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError):                # e.g. 'auto': not a device yet
        dev = None
    try:
        if dev is not None and dev.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(dev)
        elif dev is None and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except (AssertionError, RuntimeError):           # a torch without CUDA, or no such device
        pass
    return info


def utc_iso(t=None) -> str:
    """A time as ISO 8601 in UTC to the second: t a datetime (naive = local time), a Unix
    timestamp (time.time()), an ISO string (returned as given), or None (now)."""
    if isinstance(t, str):
        return t
    if t is None:
        t = datetime.datetime.now(datetime.timezone.utc)
    elif isinstance(t, (int, float)):
        t = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    elif t.tzinfo is None:
        t = t.astimezone()
    return t.astimezone(datetime.timezone.utc).isoformat(timespec="seconds")


def _argv(argv) -> list[str]:
    home = str(Path.home())
    return [a.replace(home, "~", 1) if home not in ("", "/") and a.startswith(home) else a
            for a in map(str, argv)]


def provenance(config=None, seed=None, started=None, ended=None, *, git: dict | None = None,
               device=None, threads: int | None = None, argv=None, root=REPO_ROOT) -> dict:
    """{'git': git_state(root) (or the state given, e.g. taken when the work started),
    'machine': machine(device, threads), 'config', 'seed', 'started', 'ended' (ISO UTC; see
    utc_iso: timestamps, datetimes or None = now), 'argv': the command line (sys.argv by
    default)}. The config must be JSON-ready (e.g. TrainConfig.to_dict())."""
    return dict(git=git_state(root) if git is None else git, machine=machine(device, threads),
                config=config, seed=seed, started=utc_iso(started), ended=utc_iso(ended),
                argv=_argv(sys.argv if argv is None else argv))
