"""Small helpers the chapter notebooks share: the quick profile, paths, and showing library code.

The book shows library code by including it from pdlib (STYLE.md habit 8): ``show_source(obj)``
renders the current source of a function or class, so the page can never drift from the code.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def quick() -> bool:
    """True under ``PDLIB_QUICK=1``: CI's profile that shrinks every chapter's runs to seconds."""
    value = os.environ.get("PDLIB_QUICK", "0")
    if value not in ("0", "1", ""):
        raise ValueError(f"PDLIB_QUICK={value!r} is not allowed; use 1 (quick profile) or 0 (the book's defaults)")
    return value == "1"


def results_dir(*parts: str) -> Path:
    """``results/…`` in the repository: small committed artefacts of full runs."""
    path = REPO_ROOT.joinpath("results", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir(*parts: str) -> Path:
    """``runs/…`` in the repository (git-ignored): checkpoints and logs of training runs."""
    path = REPO_ROOT.joinpath("runs", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def show_source(obj, lines: tuple[int, int] | None = None):
    """Display the source of a pdlib function or class, with syntax highlighting in notebooks."""
    source = inspect.getsource(obj)
    if lines is not None:
        source = "\n".join(source.splitlines()[lines[0]:lines[1]])
    try:
        from IPython.display import Code, display
    except ImportError:  # plain Python: print it
        print(source)
        return
    display(Code(source, language="python"))


def read_json(path) -> dict | None:
    """A committed results JSON (absolute, or relative to ``results/``); None if it is not there."""
    path = Path(path) if Path(path).is_absolute() else REPO_ROOT / "results" / path
    return json.loads(path.read_text()) if path.is_file() else None


def read_log(path) -> list[dict]:
    """The records of a training run's ``metrics.jsonl`` (absolute, or relative to ``results/``)."""
    path = Path(path) if Path(path).is_absolute() else REPO_ROOT / "results" / path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metric(result: dict, name: str) -> tuple[str, float]:
    """(key, value) of a metric whose key carries its sample count, e.g. metric(r, "FID") → ("FID@1k", 48.6)."""
    keys = [k for k in result if k.split("@")[0] == name and "@" in k]
    if len(keys) != 1:
        raise KeyError(f"name={name!r}: {len(keys)} keys match in {sorted(result)}; allowed: one of "
                       f"{sorted({k.split('@')[0] for k in result if '@' in k})}")
    return keys[0], float(result[keys[0]])


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats shown with 4 significant digits."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
