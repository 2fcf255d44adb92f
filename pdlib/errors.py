"""The errors a user can act on, and the one way every command line reports them.

- `DivergenceError` (a RuntimeError): training stopped because the loss, the gradients or the
  weights became NaN/inf; the message names the step and the last good checkpoint.
- `RunFolderError` (a ValueError): the run folder is in use by another process (its lock) or
  holds another run's files.
- `DiskFullError` (an OSError with errno ENOSPC/EDQUOT): a write ran out of space; the message
  names the file and says what was left intact.

`cli_main(prog, body, argv)` runs the body of a command line (`python -m pdlib.train`,
`python -m pdlib.pretrained`, `python -m pdlib.data`) and turns what it raises into one stderr
line `PROG: error: MESSAGE` with an exit status:

| status | meaning |
|---|---|
| 0 | done |
| 2 | bad input: config, data, checkpoint, output folder, device, disk full (ValueError, OSError) |
| 3 | the run failed: it diverged (DivergenceError), or ran out of GPU memory |
| 130 | interrupted (Ctrl-C) |

Anything else is a bug and keeps its traceback; `--debug` (anywhere on the command line) shows
the traceback of every error.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings

__all__ = ["DivergenceError", "NonFiniteSamplesError", "RunFolderError", "PeerFailedError",
           "DiskFullError", "EXIT_USAGE", "EXIT_FAILED", "EXIT_INTERRUPTED", "exit_code", "one_line",
           "cli_main", "ArgumentParser", "is_disk_full"]

EXIT_USAGE = 2          # bad input (the conventional status of a usage error)
EXIT_FAILED = 3         # the inputs were fine but the run failed (diverged, out of GPU memory)
EXIT_INTERRUPTED = 130  # 128 + SIGINT


class DivergenceError(RuntimeError):
    """Training stopped: the loss or the gradients stayed non-finite, or the weights became
    non-finite. No checkpoint with non-finite weights was written."""


class NonFiniteSamplesError(DivergenceError):
    """Sampling produced images with NaN/inf (evaluation refuses to measure them)."""


class RunFolderError(ValueError):
    """The run folder is in use by another live process, or holds another run's files."""


class PeerFailedError(RuntimeError):
    """Under torchrun: another rank (rank 0, which checks the run folder) failed; `code` is the
    exit status its error maps to, so that every rank exits alike."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class DiskFullError(OSError):
    """A write failed for lack of space (ENOSPC or EDQUOT); str() is the whole message."""

    def __init__(self, message: str, filename=None, code: int = errno.ENOSPC):
        super().__init__(code, message, None if filename is None else os.fspath(filename))
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(exc: BaseException) -> bool:
    """Whether exc, or an exception it was raised from or during, is ENOSPC/EDQUOT (torch.save
    reports a full disk as RuntimeError 'unexpected pos …' raised while handling the OSError)."""
    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        e = e.__cause__ or e.__context__
    return False


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace runs, newlines included, become one space)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = f"missing key {text}"
    if not text:
        return type(exc).__name__
    if not isinstance(exc, (ValueError, OSError, RuntimeError)) or text.startswith("[Errno"):
        text = f"{type(exc).__name__}: {text}"        # a system error: say which
    return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a ValueError (one line through cli_main) instead of the
    usage text and exit 2; subparsers are of this class too."""

    def error(self, message):
        raise ValueError(f"{message} (see {self.prog} --help)")


def exit_code(exc: BaseException) -> int:
    """The exit status cli_main gives an exception (1: a bug, shown with its traceback)."""
    if isinstance(exc, PeerFailedError):
        return exc.code
    if isinstance(exc, DivergenceError):
        return EXIT_FAILED
    if isinstance(exc, (ValueError, OSError)):
        return EXIT_USAGE
    return 1


def _warning_line(prog):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: {category.__name__}: {' '.join(str(message).split())}",
              file=sys.stderr if file is None else file)
    return show


def cli_main(prog: str, body, argv=None, failures: tuple = ()) -> int:
    """Run body(argv) -> exit status; report what it raises as one line on stderr (see the table
    above); `failures`: more exception types that mean "the command failed" (exit 3, e.g. a
    download's RuntimeError). `--debug` is taken out of argv and makes every error show its
    traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    import torch
    oom = getattr(torch, "OutOfMemoryError", ())
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _warning_line(prog)
        try:
            return body(argv)
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except PeerFailedError as e:
            if debug:
                raise
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
            return e.code
        except (DivergenceError, oom, *failures) as e:
            if debug:
                raise
            print(f"{prog}: run failed: {one_line(e)}", file=sys.stderr)
            return EXIT_FAILED
        except (ValueError, OSError) as e:       # FileNotFoundError, DiskFullError, PermissionError …
            if debug:
                raise
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
            return EXIT_USAGE
