"""The stored notebooks as a reader gets them: figure size and resolution, code width, no raw
dumps or machine paths in outputs, offline HTML outputs, and each chapter's fixed frame (what
you'll learn, the claim, verdicts, an exercise with a hidden solution).

These read the committed .ipynb files only (no execution, no build); the browser check of the
rendered pages is tests/test_book.py.
"""
from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CODE_WIDTH = 80          # characters: what fits the content column (book/static/book.css)
PRINT_WIDTH = 84         # characters of a printed line that fit the column without scrolling
COLUMN_PX = 680          # the content column in CSS pixels at the book's 1280-px reference width
PRINT_SCALE = 1.5        # a figure's PNG has at least this many pixels per displayed pixel
ABS_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|usr/lib|opt)/[\w./-]+")
RAW_DUMP = re.compile(r"^\s*[{\[]\s*['\"][\w ]+['\"]\s*:", re.M)   # {"key": ... / {'key': ...


def _toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").is_file()]


NOTEBOOKS = _toc_notebooks()
CHAPTERS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def _png_size(data: str) -> tuple[int, int]:
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", raw[16:24])


def _outputs(path: Path):
    for i, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            yield i, out


def _mime(path: Path, mime: str):
    """(cell index, output, its `mime` data as one string) for each output that has it."""
    for i, out in _outputs(path):
        data = out.get("data", {}).get(mime)
        if data is not None:
            yield i, out, "".join(data) if isinstance(data, list) else data


def _output_texts(out: dict) -> list[str]:
    if out["output_type"] == "stream":
        return ["".join(out["text"])]
    data = out.get("data", {})
    return ["".join(data[k]) if isinstance(data[k], list) else str(data[k])
            for k in ("text/plain", "text/markdown") if k in data]


def test_the_book_has_chapters_to_check():
    assert len(CHAPTERS) >= 3 and (ROOT / "book" / "results.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_fit_the_column_at_print_resolution(path):
    bad = []
    for i, out, png in _mime(path, "image/png"):
        w_px, h_px = _png_size(png)
        meta = out.get("metadata", {}).get("image/png", {})
        shown = float(meta.get("width", w_px))
        if shown > COLUMN_PX:
            bad.append(f"cell {i}: shown {shown:.0f} px wide > column {COLUMN_PX} px")
        if w_px < PRINT_SCALE * shown:
            bad.append(f"cell {i}: {w_px} px PNG shown at {shown:.0f} px (< {PRINT_SCALE}x: "
                       "call pdlib.plots.use_book_style())")
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_column(path):
    long = [(i, len(line), line) for i, c in enumerate(_cells(path)) if c["cell_type"] == "code"
            for line in _text(c).splitlines() if len(line) > CODE_WIDTH]
    assert not long, f"{path.name}: {len(long)} code lines over {CODE_WIDTH} characters, e.g. " \
                     f"cell {long[0][0]} ({long[0][1]}): {long[0][2]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_printed_lines_fit_the_column(path):
    long = [(i, line) for i, out in _outputs(path) if out["output_type"] == "stream"
            for line in "".join(out["text"]).splitlines() if len(line) > PRINT_WIDTH]
    assert not long, f"{path.name}: {len(long)} printed lines over {PRINT_WIDTH} characters " \
                     f"(they scroll on the page), e.g. cell {long[0][0]}: {long[0][1]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_show_no_machine_paths_or_raw_dumps(path):
    bad = []
    for i, out in _outputs(path):
        for text in _output_texts(out):
            if m := ABS_PATH.search(text):
                bad.append(f"cell {i}: absolute path {m.group(0)!r}")
            if out["output_type"] == "stream" and (m := RAW_DUMP.search(text)):
                bad.append(f"cell {i}: a printed dict/JSON: {text[m.start():m.start() + 60]!r}")
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_html_outputs_are_offline(path):
    bad = []
    for i, _, html in _mime(path, "text/html"):
        for m in re.finditer(r"""(?:href|src)\s*=\s*["'](https?://[^"']+)""", html):
            bad.append(f"cell {i}: loads {m.group(1)} (use pdlib.plots.animation_html)")
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_opens_with_its_goals_and_claim_and_ends_with_verdicts_and_an_exercise(path):
    cells = _cells(path)
    md = [_text(c) for c in cells if c["cell_type"] == "markdown"]
    assert "What you'll learn" in md[0], f"{path.name}: the first cell has no 'What you'll learn'"
    assert re.search(r"\*\*The (?:paper's |papers' )?claims?\b", md[0]), f"{path.name}: the first cell states no claim"
    headings = [line for text in md for line in text.splitlines() if line.startswith("## ")]
    assert any("Verdict" in h or "claims at this scale" in h for h in headings), headings
    exercises = [i for i, t in enumerate(md) if re.search(r"\{admonition\}\s*Exercise", t)]
    solutions = [i for i, t in enumerate(md)
                 if re.search(r"\{admonition\}\s*Solution", t) and ":class: dropdown" in t]
    assert len(exercises) == 1, f"{path.name}: {len(exercises)} exercises (expected one)"
    assert solutions and solutions[0] >= exercises[0], f"{path.name}: no hidden solution after it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_glued_key_is_glued_once(path):
    """A glue key is set by one code cell: two cells setting it would make prose ambiguous."""
    keys = []
    for c in _cells(path):
        if c["cell_type"] == "code":
            keys += re.findall(r"""glue\(\s*f?["']([\w{}.\-]+)["']""", _text(c))
    dup = sorted({k for k in keys if keys.count(k) > 1})
    assert not dup, f"{path.name}: glued by more than one call: {dup}"


def test_cached_computes_once_per_key_and_reads_back_the_same_values(tmp_path, monkeypatch):
    import torch

    import pdlib.book as book

    monkeypatch.setattr(book, "REPO_ROOT", tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3.0), "err": [0.5, 0.25], "name": "heun"}

    first = book.cached("demo", {"steps": 9, "seed": 0}, compute)
    again = book.cached("demo", {"seed": 0, "steps": 9}, compute)      # same key, other order
    other = book.cached("demo", {"steps": 17, "seed": 0}, compute)
    assert len(calls) == 2 and torch.equal(again["x"], first["x"]) and again["err"] == [0.5, 0.25]
    assert other["name"] == "heun" and len(list((tmp_path / "runs" / "cache").glob("demo-*.pt"))) == 2
