"""Small helpers the chapter notebooks share: the quick profile, paths, library listings, tables.

The book shows library code by including it from pdlib (STYLE.md habit 8): ``show_source(obj)``
renders the current source of a function or class, so the page can never drift from the code;
listings longer than ``FOLD_LINES`` fold behind a "show the code" toggle. Tables that notebooks
build from measurements go through ``md_table`` (rounded numbers, ``|`` escaped), so the verdict
and results tables render as tables with one cell per column.
"""
from __future__ import annotations

import html
import inspect
import json
import math
import os
from pathlib import Path

from pdlib.provenance import REPO_ROOT

# Files of a results folder that sit beside the evaluations ``NAME.json``: a training run's
# resolved config and its provenance (scripts/full_runs.py). Never an evaluation.
SIDE_FILES = (".config.json", ".provenance.json")


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


FOLD_LINES = 30     # listings longer than this fold behind a toggle on the page


class Source:
    """A listing of library code: highlighted HTML in notebooks (folded when long), text elsewhere."""

    def __init__(self, source: str, title: str, fold: bool):
        self.source, self.title, self.fold = source, title, fold

    def __repr__(self) -> str:
        return self.source

    def _repr_html_(self) -> str:
        from IPython.display import Code

        # the wrapper's class marks a library listing: code, which may scroll sideways on the page
        # (its lines follow the library's width, not the notebooks' 80 characters)
        code = Code(self.source, language="python")._repr_html_()
        if not self.fold:
            return f'<div class="pdlib-source">{code}</div>'
        n = len(self.source.splitlines())
        return (f'<details class="pdlib-source"><summary>Show the code: <code>{html.escape(self.title)}</code> '
                f"({n} lines)</summary>{code}</details>")


def show_source(obj, lines: tuple[int, int] | None = None, fold: bool | None = None):
    """Display the source of a pdlib function or class, with syntax highlighting in notebooks.

    ``lines=(a, b)`` shows lines a..b−1 of it; ``fold`` (default: longer than ``FOLD_LINES``)
    puts the listing behind a toggle, so a long class does not push the prose off the page.
    """
    source = inspect.getsource(obj)
    if lines is not None:
        source = "\n".join(source.splitlines()[lines[0]:lines[1]])
    title = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}"
    fold = len(source.splitlines()) > FOLD_LINES if fold is None else fold
    try:
        from IPython.display import display
    except ImportError:  # plain Python: print it
        print(source)
        return
    display(Source(source, title.lstrip("."), fold))


def read_json(path) -> dict | None:
    """A committed results JSON (absolute, or relative to ``results/``); None if it is not there."""
    path = Path(path) if Path(path).is_absolute() else REPO_ROOT / "results" / path
    return json.loads(path.read_text()) if path.is_file() else None


def evaluation_files(folder, pattern: str = "*.json") -> list[Path]:
    """The files of `folder` matching `pattern`, sorted, without the side files of training runs
    (``SIDE_FILES``: ``NAME.config.json``, ``NAME.provenance.json``)."""
    return [f for f in sorted(Path(folder).glob(pattern)) if not f.name.endswith(SIDE_FILES)]


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


def fmt(v, digits: int = 3) -> str:
    """A number for prose or a table: `digits` significant digits, thousands separated, no 1e-05
    unless the number is tiny or huge; ints unchanged; anything else str()."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.{digits - 1}e}"
        text = f"{v:.{digits}g}"
        if "e" in text:                                    # 1.23e+03 → 1,230
            text = f"{float(text):,.0f}"
        return text
    return str(v)


def md_table(header: list[str], rows: list[list], digits: int = 4) -> str:
    """A Markdown (MyST pipe) table: floats rounded to `digits` significant digits (``fmt``), and
    ``|`` inside a cell escaped, so a cell such as "E[x0|x_t]" stays one cell."""
    def cell(v):
        text = fmt(v, digits) if isinstance(v, float) else str(v)
        return text.replace("\n", " ").replace("|", "\\|")
    if any(len(row) != len(header) for row in rows):
        bad = next(row for row in rows if len(row) != len(header))
        raise ValueError(f"rows={bad!r} has {len(bad)} cells; allowed: {len(header)} (one per header)")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cached(name: str, key: dict, compute):
    """``compute()``'s result, computed once per ``key`` and then read back from
    ``runs/cache/NAME-HASH.pt`` (what keeps a chapter's cached re-execution under a minute).

    `key` must name everything the result depends on: the parameters, the seeds, and the model
    (e.g. its run folder and step). The result may hold tensors, numbers, strings, lists, tuples
    and dicts; it is written atomically and read with ``torch.load(weights_only=True)``, so a
    cache file never runs code. Delete ``runs/cache/`` to recompute everything.
    """
    import hashlib

    import torch

    from pdlib.checkpoint import atomic_save

    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha1(f"{name}\n{text}".encode()).hexdigest()[:12]
    path = runs_dir("cache") / f"{name}-{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    value = compute()
    atomic_save(value, path)
    return value
