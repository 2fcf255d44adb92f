"""The book's build infrastructure: configuration, nbval sanitizer, strict build, real-browser check."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SANITIZE = ROOT / "book" / "nbval_sanitize.cfg"
STATIC = ROOT / "book" / "static"


def _toc_files() -> list[str]:
    """Every file named in _toc.yml (root first), without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


def _sanitize(text: str) -> str:
    """Apply the sanitize file's rules in order, exactly as nbval does."""
    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns(SANITIZE.read_text()):
        text = re.sub(regex, replace, text)
    return text


# --- configuration ---------------------------------------------------------------------------

def test_toc_files_exist_and_root_is_preface():
    files = _toc_files()
    assert files[0] == "book/intro"
    missing = [f for f in files if not any((ROOT / f"{f}{s}").is_file() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_config_offline_math_widgets_and_execution():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = cfg["sphinx"]["config"]
    assert "sphinx-mathjax-offline" in cfg["sphinx"]["extra_extensions"]
    assert cfg["only_build_toc_files"] is True
    assert {".venv", "_build", "data", "node_modules", "notebooks/experiments"} <= set(cfg["exclude_patterns"])
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert sphinx["nb_render_markdown_format"] == "myst"   # tables built in code render as tables
    assert sphinx["nb_merge_streams"] is True and sphinx["math_numfig"] is True
    # widget JS is local (no CDN), lives outside _static/, and is pinned by SHA256SUMS
    assert sphinx["html_static_path"] == ["book/static"]
    assert all("://" not in uri for uri in sphinx["nb_ipywidgets_js"])
    pinned = {line.split()[1] for line in (STATIC / "SHA256SUMS").read_text().splitlines()}
    assert set(sphinx["nb_ipywidgets_js"]) == {"require.js", "embed-amd.js"}
    # the widget CSS's icon fonts are pinned too (book/static/widgets-shim.js points at them)
    fonts = {p for p in pinned if p.startswith("widget-assets/")}
    assert pinned == {"require.js", "embed-amd.js"} | fonts and len(fonts) == 3
    assert list(sphinx["nb_ipywidgets_js"]) == ["require.js", "embed-amd.js"], "RequireJS must load first"
    assert not (ROOT / "_static").exists(), (
        "a root _static/ folder makes jupyter-book add book/static/*.js to every page: widgets render twice")


def test_every_citation_key_is_in_references_bib():
    from pybtex.database import parse_file

    keys = set(parse_file(str(ROOT / "book" / "references.bib")).entries)
    assert {"luhman2022patching", "wang2023patchdiffusion", "arakawa2023memory", "bai2024fpdm",
            "teng2024relay"} <= keys
    cited = set()
    for f in _toc_files():
        path = next((p for p in (ROOT / f"{f}.md", ROOT / f"{f}.ipynb") if p.is_file()), None)
        if path is None:                                       # reported by the toc test
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        text = re.sub(r"``.+?``", "", text)                   # examples in code spans
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "the book cites nothing: the citation machinery is untested"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


# --- nbval sanitizer --------------------------------------------------------------------------

@pytest.mark.parametrize("noisy, clean", [
    ("100%|██████████| 50/50 [00:03<00:00, 14.71it/s]", "100%|██████████| 50/50 [ELAPSED<REMAINING, RATE]"),
    (" 10%|█         | 5/50 [01:02:03<?, ?it/s, loss=0.5]", " 10%|█         | 5/50 [ELAPSED<REMAINING, RATE, loss=0.5]"),
    ("sampling: 2.35s/it", "sampling: RATE"),
    ("Inception: 412.3 images/s", "Inception: RATE"),
    ("Wall time: 1.62 s", "Wall time: TIME"),
    ("CPU times: user 350 ms, sys: 12.5 µs, total: 3 min", "CPU times: user TIME, sys: TIME, total: TIME"),
    ("1.23 ms ± 45.6 µs per loop (mean ± std. dev. of 7 runs, 1,000 loops each)",
     "TIME ± TIME per loop (mean ± std. dev. of 7 runs, N loops each)"),
    ("step 100 at 2025-01-31 12:34:56.789", "step 100 at DATETIME"),
    ("elapsed 0:00:12", "elapsed CLOCK"),
    ("[<matplotlib.lines.Line2D at 0x7f3a2c1b9e50>]", "[<matplotlib.lines.Line2D at 0xADDRESS>]"),
    ('File "/work/main/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1',
     'File "SITE-PACKAGES/torch/nn/modules/module.py", line 1'),
    ('File "/usr/lib/python3.11/functools.py"', 'File "PYTHONLIB/functools.py"'),
    ("saved /work/main/results/ch1/grid.png", "saved REPO/results/ch1/grid.png"),
    ("cache at /tmp/tmpab12cd/ref.npz", "cache at TMPPATH"),
    ("/root/.cache/x and /home/alice/x", "HOME/.cache/x and HOME/x"),
    ("kernel-5f1e2d3c-aaaa-bbbb-cccc-0123456789ab.json", "kernel-ID.json"),
    ("id 0f8e2a6b9c1d4e3f5a7b8c9d0e1f2a3b", "id HEXID"),
])
def test_sanitizer_removes_run_to_run_noise(noisy, clean):
    assert _sanitize(noisy) == clean


@pytest.mark.parametrize("result", [
    "loss 0.1234 after 400 steps",
    "FID@2k 23.41, KID 0.0123",
    "x: torch.Size([64, 1, 28, 28]), P=4, sigma_max=80.0",
    "64 samples of 32x32 in 10 steps",
    "parameters: 1,234,567",
])
def test_sanitizer_keeps_results(result):
    assert _sanitize(result) == result


# --- strict build + headless Chromium ---------------------------------------------------------

def _vendored_ok() -> bool:
    lines = (STATIC / "SHA256SUMS").read_text().split("\n")
    for line in filter(None, lines):
        digest, name = line.split()
        path = STATIC / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return False
    return True


@pytest.mark.notebooks
@pytest.mark.slow
def test_strict_build_then_every_page_passes_the_browser_check(tmp_path):
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        msg = "Chromium not installed: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    assert _vendored_ok(), "book/static/*.js missing or changed: run scripts/vendor_js.sh (make vendor-js)"

    bin_dir = Path(sys.executable).parent
    jb = shutil.which("jupyter-book", path=str(bin_dir)) or shutil.which("jupyter-book")
    build = subprocess.run([jb, "build", str(ROOT), "--all", "-W", "-n", "--keep-going",
                            "--path-output", str(tmp_path)],
                           capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert build.returncode == 0, f"strict build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    html = tmp_path / "_build" / "html"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax was not copied offline"

    # Every page of _toc.yml in headless Chromium; the screenshots and report.json are CI's artifact
    # folder, _build/page-check/ at the repository root (BOOK_PAGE_CHECK_DIR moves it).
    shots = Path(os.environ.get("BOOK_PAGE_CHECK_DIR", ROOT / "_build" / "page-check"))
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_book.py"), "--all",
                          "--build-dir", str(html), "--screenshots", str(shots)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"check_book --all failed:\n{run.stdout[-12000:]}\n{run.stderr[-4000:]}"
    for page in _toc_files():
        assert (shots / (page.replace("/", "_") + ".png")).stat().st_size > 10_000, page
    assert json.loads((shots / "report.json").read_text())["ok"] is True


def test_result_helpers_read_files_and_name_metrics(tmp_path):
    from pdlib.book import md_table, metric, read_json, read_log
    (tmp_path / "r.json").write_text(json.dumps({"FID@1k": 48.6, "KID@1k": 0.02, "KID_std@1k": 0.001}))
    (tmp_path / "m.jsonl").write_text('{"step": 1}\n\n{"step": 2}\n')
    r = read_json(tmp_path / "r.json")
    assert metric(r, "FID") == ("FID@1k", 48.6) and metric(r, "KID") == ("KID@1k", 0.02)
    with pytest.raises(KeyError, match="name='IS'.*allowed"):
        metric(r, "IS")
    assert read_json(tmp_path / "missing.json") is None
    assert [x["step"] for x in read_log(tmp_path / "m.jsonl")] == [1, 2]
    assert md_table(["a", "b"], [[1, 2.34567]]) == "| a | b |\n|---|---|\n| 1 | 2.346 |"


# --- scripts/check_book.py on small synthetic pages (one Chromium run each) ------------------

def _check_book():
    """scripts/check_book.py as a module (scripts/ is not a package)."""
    import importlib.util

    if "check_book" not in sys.modules:
        spec = importlib.util.spec_from_file_location("check_book", ROOT / "scripts" / "check_book.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["check_book"] = module
        spec.loader.exec_module(module)
    return sys.modules["check_book"]


# A 1x1 PNG, and a page laid out like the theme's: a 600 px content column (article.bd-article).
PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5ee8e2a0000000049454e44ae426082")
PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>
<style>body {{ margin: 0 }} article.bd-article {{ width: 600px; padding: 0 20px }}
div.highlight pre, div.output {{ overflow-x: auto }}</style>{head}</head>
<body><main><article class="bd-article"><section id="s"><h1>A page</h1>
<p>Prose with <em>emphasis</em>; the figure is served locally.</p><img src="dot.png" alt="dot">
<div class="cell"><div class="cell_input"><div class="highlight"><pre>{long_code}</pre></div></div>
<div class="cell_output"><div class="output"><pre>result: 0.25</pre></div></div></div>
<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td colspan="2">both</td></tr>
<tr><td>1</td><td>2</td></tr></tbody></table>
{body}</section></article></main></body></html>"""
DEFECTS = {
    "clean": ("", "", None),
    "table row with more cells than its header": (
        "", "<table><thead><tr><th>claim</th><th>verdict</th></tr></thead>"
            "<tbody><tr><td>E[x0</td><td>x_t]</td><td>held</td></tr></tbody></table>", "tables"),
    "wide div": ("", '<div style="width: 3000px; background: #eee">wide</div>', "wide"),
    "wide image": ("", '<img src="dot.png" style="width: 3000px; max-width: none" alt="big">', "wide"),
    "output that scrolls": ("", '<div class="cell_output"><div class="output"><pre>' + "0.123 " * 300
                            + "</pre></div></div>", "wide"),
    "content cut off": ("", '<div style="overflow: hidden; width: 200px"><div style="width: 900px">'
                        "cut</div></div>", "clipped"),
    "script that throws": ("", "<script>null.x;</script>", "console"),
    "duplicate let across scripts": (
        "<script>let THEBE_JS_URL = 1;</script><script>let THEBE_JS_URL = 2;</script>", "", "console"),
    "console.error": ("", "<script>console.error('boom')</script>", "console"),
    "image that is missing": ("", '<img src="missing.png" alt="missing">', "images"),
    "external stylesheet": ('<link rel="stylesheet" href="https://cdn.example.com/x.css">', "", "network"),
    "external image over http": ("", '<img src="http://img.example.com/a.png" alt="x">', "network"),
    "raw $$ in prose": ("", "<p>the loss $$L = x^2$$ is small</p>", "math"),
    "absolute path in an output": (
        "", '<div class="cell_output"><pre>run folder /work/main/runs/x</pre></div>', "paths"),
}


@pytest.fixture(scope="module")
def chromium():
    path = _check_book().find_chromium()
    if not path:
        msg = "Chromium not installed (apt-get install -y chromium): the browser check is untested"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.mark.parametrize("name", list(DEFECTS))
def test_check_book_finds_each_defect_of_a_synthetic_page(tmp_path, chromium, name):
    cb = _check_book()
    head, body, expected = DEFECTS[name]
    (tmp_path / "dot.png").write_bytes(PNG_1PX)
    page = PAGE.format(head=head, body=body, long_code="x = 1  # " + "y" * 300)   # input cells may scroll
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    opts = cb.Options(tmp_path, chromium, budget_ms=2000, timeout_s=60)
    result = cb.check_page("page.html", opts, screenshot=None)
    checks = {f.check for f in result.failures}
    details = "\n".join(f"{f.check}: {f.detail}" for f in result.failures)
    if expected is None:
        assert not result.failures, f"a clean page fails:\n{details}"
        assert result.report["scrollingCode"] == 1, "the wide input cell scrolls, and that is allowed"
    else:
        assert expected in checks, f"{name}: no {expected!r} failure, got:\n{details}"


def test_check_book_lets_library_listings_scroll_but_not_printed_outputs(tmp_path, chromium):
    # pdlib.book.show_source wraps its listing in .pdlib-source: library code keeps its own line
    # width and may scroll; the same wide text printed by a cell is a defect ("output that scrolls")
    cb = _check_book()
    (tmp_path / "dot.png").write_bytes(PNG_1PX)
    listing = ('<div class="cell_output"><div class="output"><div class="pdlib-source">'
               '<div class="highlight"><pre>def f(x):  # ' + "z" * 300 + "</pre></div></div></div></div>")
    page = PAGE.format(head="", body=listing, long_code="x = 1  # " + "y" * 300)
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    result = cb.check_page("page.html", cb.Options(tmp_path, chromium, budget_ms=2000, timeout_s=60),
                           screenshot=None)
    assert not result.failures, "\n".join(f"{f.check}: {f.detail}" for f in result.failures)
    assert result.report["scrollingCode"] == 2


def test_check_book_screenshot_and_summary(tmp_path, chromium):
    cb = _check_book()
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "dot.png").write_bytes(PNG_1PX)
    (tmp_path / "html" / "page.html").write_text(PAGE.format(head="", body="", long_code="x = 1"))
    shots = tmp_path / "shots"
    code = cb.main(["--build-dir", str(tmp_path / "html"), "--page", "page.html",
                    "--screenshots", str(shots), "--budget-ms", "2000"])
    assert code == 0
    assert (shots / "page.png").stat().st_size > 1000
    summary = json.loads((shots / "report.json").read_text())
    assert summary["ok"] and summary["pages"][0]["page"] == "page.html"


def test_check_book_pages_come_from_the_toc():
    cb = _check_book()
    assert cb.toc_pages(ROOT / "_toc.yml") == [f + ".html" for f in _toc_files()]
    assert cb.shot_name("notebooks/02_blurry_x0.html") == "notebooks_02_blurry_x0.png"


def test_check_book_finds_pipe_table_rows_with_more_cells_than_the_header(tmp_path):
    # The rendered table drops the extra cells silently: only the source shows them.
    cb = _check_book()
    md = ("| claim | verdict |\n|---|---|\n| optimum is blurry | E[x0|x_t] held |\n| escaped | a \\| b |\n\n"
          "```\n| code | only |\n|---|---|\n| 1 | 2 | 3 |\n```\n")
    assert cb.overfull_rows(md) == [(["claim", "verdict"], 1, ["optimum is blurry", "E[x0", "x_t] held"])]
    assert cb.pipe_cells("| a \\| b | c |") == ["a \\| b", "c"]
    # in a notebook's text/markdown output (a table built in code), found in the build's _sources/
    (tmp_path / "_sources" / "nb").mkdir(parents=True)
    cells = [{"cell_type": "code", "execution_count": 3, "source": "display(Markdown(t))", "metadata": {},
              "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"text/markdown": md}}]}]
    (tmp_path / "_sources" / "nb" / "ch.ipynb").write_text(json.dumps({"cells": cells}))
    res = cb.Result("nb/ch.html")
    cb.check_source_tables(res, tmp_path, "nb/ch.html")
    assert [f.check for f in res.failures] == ["tables"]
    assert "notebook cell 1 (In [3]) output: row 1" in res.failures[0].detail
    assert "'x_t] held'" in res.failures[0].detail


def test_check_book_counts_the_formulas_mathjax_could_not_typeset():
    """MathJax 3 renders TeX it cannot typeset (e.g. a \\tag inside a split environment) as an
    <mjx-merror> node with the message in data-mjx-error; the page check fails on each."""
    html = ('<p><mjx-container><mjx-merror data-mjx-error="\\tag not allowed in split environment">'
            '</mjx-merror></mjx-container><mjx-container><mjx-mi>x</mjx-mi></mjx-container></p>')
    cb = _check_book()
    page = cb.parse_page(html)
    assert page.mjx_containers == 2
    assert page.mjx_errors == ["\\tag not allowed in split environment"]
    assert cb.parse_page("<p><mjx-container></mjx-container></p>").mjx_errors == []
