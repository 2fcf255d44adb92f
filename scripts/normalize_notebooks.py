#!/usr/bin/env python3
"""Store notebooks the way JupyterLab saves them, so that opening and saving one in Lab changes nothing.

JupyterLab parses a notebook in JavaScript and sends it back as JSON: a float with an integral value
that Python wrote as ``100.0`` (ipywidgets' FloatSlider state in ``metadata.widgets``, as
``make execute`` stores it) comes back as ``100``, so every save rewrote those lines. This writes
such floats as integers (the same number in JavaScript, and for the book's widget manager), in
the layout Lab's server writes (nbformat's), so the file is what Lab would save. Widget state
(``metadata.widgets``) that no output shows any more is stale (an execution that left no widget
view keeps the state of an earlier one, and the book's page check fails on it): it is dropped.
Every other value is kept, and a notebook already in this form is not rewritten.

    python scripts/normalize_notebooks.py notebooks/0*.ipynb book/*.ipynb   # rewrite in place
    python scripts/normalize_notebooks.py --check notebooks/*.ipynb         # exit 1 if one would change
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def lab_form(value):
    """``value`` (parsed JSON) with every finite integral float as an int, as a JavaScript round trip gives it."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: lab_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lab_form(v) for v in value]
    return value


def integral_floats(value, path: str = "") -> list[str]:
    """JSON paths of the integral floats in ``value`` (what ``lab_form`` would change)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return [path or "/"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in integral_floats(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in integral_floats(v, f"{path}/{i}")]
    return []


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_stale_widgets(nb: dict) -> dict:
    """``nb`` without ``metadata.widgets`` when no output holds a widget view."""
    shown = any(WIDGET_VIEW in out.get("data", {}) for cell in nb.get("cells", [])
                for out in cell.get("outputs", []))
    if shown or "widgets" not in nb.get("metadata", {}):
        return nb
    meta = {k: v for k, v in nb["metadata"].items() if k != "widgets"}
    return {**nb, "metadata": meta}


def lab_text(nb) -> str:
    """The text JupyterLab saves for the notebook ``nb``: the JavaScript round trip (``lab_form``),
    then the server's writer (nbformat: sorted keys, one-space indent, multi-line strings as lists)."""
    import nbformat

    text = nbformat.writes(nbformat.from_dict(lab_form(without_stale_widgets(nb))),
                           version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def normalize(path: Path, check: bool = False) -> bool:
    """Rewrite one notebook as Lab saves it (or only report, under ``check``); True if it changes."""
    import nbformat

    text = path.read_text(encoding="utf8")
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    lab = lab_text(nb)
    if lab == text:
        return False
    floats = integral_floats(nb)
    why = f"{len(floats)} integral float(s), e.g. {floats[0]}" if floats else \
        "stale widget state" if without_stale_widgets(nb) is not nb else "nbformat's layout"
    if check:
        print(f"{path}: JupyterLab would rewrite it on save ({why}); fix: python scripts/normalize_notebooks.py {path}")
        return True
    path.write_text(lab, encoding="utf8")
    print(f"{path}: rewritten as JupyterLab saves it ({why})")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit status 1 if a notebook would change")
    args = parser.parse_args(argv)
    changed = [nb for nb in args.notebooks if normalize(nb, check=args.check)]
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
