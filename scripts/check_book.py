#!/usr/bin/env python3
"""Check a built book page in a real browser: headless Chromium renders math, figures and widgets.

Run after `jupyter-book build .`:

    python scripts/check_book.py                                  # notebooks/01_sigma_space.html
    python scripts/check_book.py --page book/intro.html --require-math
    python scripts/check_book.py --page notebooks/03_patched_unet.html --require-figure --require-widgets

The built HTML is served from a local HTTP server on a free port (nothing leaves localhost), the
page is loaded by Debian's `chromium` twice: `--dump-dom` to inspect the DOM after scripts ran,
and `--screenshot` to a PNG. Checks (each failure is reported; the exit status is 1 if any fails):
  math     if the page has math (or --require-math): MathJax output (<mjx-container>) is present
           and no raw TeX delimiter (\\( \\[ $$) is left in the visible text;
  figures  every <img> of the page was served (no 404); with --require-figure, at least one;
  widgets  if the page has a widget snapshot (or --require-widgets): RequireJS and embed-amd.js
           are included exactly once and were served, and every widget view was rendered once;
  assets   no script or stylesheet request failed;
  image    the screenshot was written and is not blank.
Exit status 2: Chromium missing or the page was not built.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RAW_TEX = re.compile(r"\\\(|\\\[|\$\$")
# Elements whose text is not rendered prose (code may legitimately show TeX).
NON_PROSE = {"script", "style", "code", "pre", "textarea", "noscript", "template", "mjx-assistive-mml"}


@dataclass
class Page:
    """What one HTML document contains: math, images, scripts, widget views, visible text."""
    mjx_containers: int = 0                                    # rendered MathJax 3 outputs
    math_nodes: int = 0                                        # Sphinx math spans/divs (class="math")
    images: list[str] = field(default_factory=list)            # <img src> anywhere
    figures: list[str] = field(default_factory=list)           # <img src> inside the <article>
    scripts: list[str] = field(default_factory=list)           # <script src>
    script_types: list[str] = field(default_factory=list)      # <script type> (inline data blocks)
    widget_views: int = 0                                      # rendered widget roots
    prose: list[str] = field(default_factory=list)             # visible text chunks


class _PageParser(HTMLParser):
    """Collect the facts of `Page` from HTML text with the standard library parser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._skip = 0                                         # depth inside NON_PROSE elements
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "mjx-container":
            self.page.mjx_containers += 1
        if "math" in classes and tag in ("span", "div"):
            self.page.math_nodes += 1
        if tag == "img" and a.get("src"):
            self.page.images.append(a["src"])
            if "article" in self._stack:
                self.page.figures.append(a["src"])
        if tag == "script":
            if a.get("src"):
                self.page.scripts.append(a["src"])
            if a.get("type"):
                self.page.script_types.append(a["type"])
        # html-manager renders each widget view into a Lumino widget carrying `jupyter-widgets`
        # inside the `.jupyter-widgets-output-area`/`widget-subarea` it creates next to the script.
        if "widget-subarea" in classes:
            self.page.widget_views += 1
        if tag in ("br", "img", "meta", "link", "input", "hr", "source", "col", "wbr", "area"):
            return
        self._stack.append(tag)
        if tag in NON_PROSE:
            self._skip += 1

    def handle_endtag(self, tag):
        if tag not in self._stack:
            return
        while self._stack:
            t = self._stack.pop()
            if t in NON_PROSE:
                self._skip -= 1
            if t == tag:
                break

    def handle_data(self, data):
        if self._skip == 0 and data.strip():
            self.page.prose.append(data)


def parse_page(html: str) -> Page:
    """Parse HTML text into a `Page` summary."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


class _Server:
    """Serve a folder on 127.0.0.1 at a free port in a thread; record the status of every request."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[tuple[int, str]] = []              # (HTTP status, path)
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                log.append((int(code) if str(code).isdigit() else 0, self.path.split("?")[0]))

            def log_message(self, *args):                      # keep the console quiet
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def find_chromium() -> str | None:
    """Path of the Chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def run_chromium(binary: str, url: str, mode: list[str], budget_ms: int, timeout_s: float) -> str:
    """Run headless Chromium on `url` with extra `mode` flags; return its stdout."""
    with tempfile.TemporaryDirectory(prefix="check_book_chromium_") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", *mode, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def screenshot_is_blank(path: Path) -> bool:
    """True if the PNG has a single colour (nothing was painted)."""
    try:
        from PIL import Image
    except ImportError:                                        # no Pillow: only size is checked
        return path.stat().st_size < 2000
    with Image.open(path) as im:
        lo, hi = im.convert("L").getextrema()
    return lo == hi


def check(args: argparse.Namespace) -> list[str]:
    """Run every check; return the list of failure messages (empty when the page passes)."""
    failures: list[str] = []
    build = Path(args.build_dir).resolve()
    source_path = build / args.page
    source = parse_page(source_path.read_text(encoding="utf-8"))
    static_html = source_path.read_text(encoding="utf-8")

    has_math = source.math_nodes > 0 or bool(RAW_TEX.search("".join(source.prose)))
    has_widgets = WIDGET_STATE in source.script_types
    n_views = source.script_types.count(WIDGET_VIEW)
    if args.require_math and not has_math:
        failures.append(f"--require-math: {args.page} contains no math")
    if args.require_widgets and not has_widgets:
        failures.append(f"--require-widgets: {args.page} has no widget state (was the notebook saved "
                        "with widget state? JupyterLab: Settings > Save Widget State Automatically)")
    if has_widgets:
        for name in ("require.js", "embed-amd.js"):
            hits = [s for s in source.scripts if s.split("?")[0].endswith("/" + name)]
            if len(hits) != 1:
                failures.append(f"widgets: {name} is included {len(hits)} times (expected once): {hits}")
            if not (build / "_static" / name).is_file():
                failures.append(f"widgets: _build/html/_static/{name} is missing: run scripts/vendor_js.sh "
                                "and rebuild")
        if any("://" in s for s in source.scripts if "embed-amd" in s or "require" in s):
            failures.append("widgets: widget JavaScript comes from a CDN, not the vendored copy "
                            "(check nb_ipywidgets_js in _config.yml)")

    with _Server(build) as server:
        url = f"{server.url}/{args.page}"
        dom_html = run_chromium(args.chromium, url, ["--dump-dom"], args.budget_ms, args.timeout)
        shot = Path(args.screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        if shot.exists():
            shot.unlink()
        run_chromium(args.chromium, url, [f"--screenshot={shot}", f"--window-size={args.window_size}"],
                     args.budget_ms, args.timeout)
    dom = parse_page(dom_html)
    served = {path: status for status, path in server.requests}
    failed = sorted({p for s, p in server.requests if s >= 400})

    # math: typeset, and no raw delimiters left in the visible text
    if has_math:
        if dom.mjx_containers == 0:
            failures.append("math: no <mjx-container> in the rendered DOM: MathJax did not run "
                            "(is sphinx-mathjax-offline enabled and _static/mathjax present?)")
        raw = [t.strip() for t in dom.prose if RAW_TEX.search(t)]
        if raw:
            failures.append(f"math: raw TeX left in the page text ({len(raw)} places), e.g. {raw[0][:120]!r}")

    # figures: every image served; at least one when required
    page_dir = "/" + str(Path(args.page).parent).strip(".") if Path(args.page).parent != Path(".") else ""
    if args.require_figure and not dom.figures:
        failures.append(f"figures: --require-figure but the article of {args.page} has no <img>")
    for src in dom.images:
        if src.startswith(("data:", "http://", "https://")):
            continue
        path = os.path.normpath(f"{page_dir}/{src.split('?')[0]}").replace("\\", "/")
        if served.get(path, 200) >= 400:
            failures.append(f"figures: image {src} was not served (HTTP {served[path]})")

    # widgets: each view rendered exactly once
    if has_widgets:
        if dom.widget_views == 0:
            failures.append(f"widgets: {n_views} widget view(s) in the page but none rendered "
                            "(embed-amd.js did not run)")
        elif dom.widget_views != n_views:
            failures.append(f"widgets: {dom.widget_views} rendered widget views for {n_views} in the page "
                            "(rendered twice? a root _static/ folder adds the widget JS to every page)")

    # assets: scripts and stylesheets must load
    broken = [p for p in failed if p.endswith((".js", ".css"))]
    if broken:
        failures.append(f"assets: {len(broken)} script/stylesheet request(s) failed: {broken[:5]}")

    # screenshot
    if not shot.is_file():
        failures.append(f"screenshot: {shot} was not written")
    elif screenshot_is_blank(shot):
        failures.append(f"screenshot: {shot} is blank")

    print(f"check_book: {args.page}: math {'yes' if has_math else 'no'} "
          f"({dom.mjx_containers} mjx-container), figures {len(dom.figures)}, "
          f"widgets {n_views} view(s) / {dom.widget_views} rendered, "
          f"{len(server.requests)} requests ({len(failed)} failed{': ' + ', '.join(failed[:5]) if failed else ''}), "
          f"screenshot {shot}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default=str(ROOT / "_build" / "html"),
                        help="built HTML folder (default: _build/html)")
    parser.add_argument("--page", default="notebooks/01_sigma_space.html",
                        help="page to check, relative to the build folder")
    parser.add_argument("--screenshot", default=str(ROOT / "_build" / "screenshot.png"),
                        help="PNG to write (default: _build/screenshot.png)")
    parser.add_argument("--require-math", action="store_true", help="fail if the page has no math")
    parser.add_argument("--require-figure", action="store_true", help="fail if the page has no <img>")
    parser.add_argument("--require-widgets", action="store_true",
                        help="fail if the page has no widget snapshot")
    parser.add_argument("--budget-ms", type=int, default=8000,
                        help="Chromium --virtual-time-budget in ms (default 8000)")
    parser.add_argument("--window-size", default="1280,1600", help="screenshot size W,H (default 1280,1600)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per Chromium run (default 180)")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: chromium on PATH)")
    args = parser.parse_args(argv)

    args.chromium = args.chromium or find_chromium()
    if not args.chromium or not Path(args.chromium).exists() and not shutil.which(args.chromium):
        print("check_book: Chromium not found. Install it (Debian, as root):\n"
              "    apt-get install -y chromium", file=sys.stderr)
        return 2
    page = Path(args.build_dir) / args.page
    if not page.is_file():
        print(f"check_book: {page} does not exist: build the book first "
              "(jupyter-book build . --all -W -n --keep-going)", file=sys.stderr)
        return 2
    try:
        failures = check(args)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"check_book: FAILED: {err}", file=sys.stderr)
        return 1
    for msg in failures:
        print(f"check_book: FAILED: {msg}", file=sys.stderr)
    if not failures:
        print("check_book: OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
