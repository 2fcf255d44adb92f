"""Validation helpers shared by the config sections and the methods' options: one message style,
"name=value is invalid; allowed: ...", and whether a folder can be written (before any work)."""
from __future__ import annotations

import contextlib
import math
import os
import secrets
from pathlib import Path

__all__ = ["check", "is_int", "is_num", "check_writable", "make_dirs", "remove_made_dirs", "unwritable"]


def check(cond: bool, name: str, value, allowed: str) -> None:
    """Raise ValueError naming the parameter, the value and what is allowed, unless cond."""
    if not cond:
        raise ValueError(f"{name}={value!r} is invalid; allowed: {allowed}")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def unwritable(name: str, folder, e: OSError, value=None) -> ValueError:
    """The ValueError for a folder (or a file in it: value) `name`, e.g. 'run.out_dir', that
    cannot be created or written."""
    reason = e.strerror or type(e).__name__
    what = "a folder" if value is None else "a file in a folder"
    return ValueError(f"{name}={str(folder if value is None else value)!r} cannot be written ({reason}: "
                      f"{e.filename or folder}); allowed: {what} this process can create and write")


def make_dirs(folder, name: str, value=None) -> list[Path]:
    """mkdir -p folder, returning the folders it created (outermost first); ValueError naming
    `name` if it cannot (a file in the way, no permission, a read-only file system)."""
    folder = Path(folder)
    missing, p = [], folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise unwritable(name, folder, NotADirectoryError(20, "not a folder", str(p)), value)
    made = []
    for q in reversed(missing):
        try:
            q.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            remove_made_dirs(made)
            raise unwritable(name, folder, e, value) from None
        made.append(q)
    return made


def remove_made_dirs(made: list[Path]) -> None:
    """Remove the folders make_dirs created, where they are still empty."""
    for q in reversed(made):
        with contextlib.suppress(OSError):
            q.rmdir()


def check_writable(folder, name: str, value=None) -> None:
    """ValueError naming `name` (=value, default the folder) unless folder exists (or can be
    made) and takes a new file. Leaves nothing behind: the probe file and any folder made for it
    are removed again."""
    folder = Path(folder)
    made = make_dirs(folder, name, value)
    try:
        probe = folder / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            raise unwritable(name, folder, e, value) from None
        os.close(fd)
        os.unlink(probe)
    finally:
        remove_made_dirs(made)
