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
    assert set(sphinx["nb_ipywidgets_js"]) == pinned == {"require.js", "embed-amd.js"}
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
def test_strict_build_renders_math_and_widgets_in_chromium(tmp_path):
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

    check = [sys.executable, str(ROOT / "scripts" / "check_book.py"), "--build-dir", str(html)]
    for page, flags in [("book/intro.html", ["--require-math"]),
                        ("notebooks/01_sigma_space.html", [])]:
        shot = tmp_path / (Path(page).stem + ".png")
        run = subprocess.run([*check, "--page", page, "--screenshot", str(shot), *flags],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"check_book {page}:\n{run.stdout}\n{run.stderr}"
        assert shot.stat().st_size > 10_000


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
