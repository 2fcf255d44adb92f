#!/usr/bin/env python3
"""Check the built book in a real browser: every page in headless Chromium with networking off.

Run after `jupyter-book build .` (`make check-book`; CI: tests/test_book.py after its strict build):

    python scripts/check_book.py --all                       # every page named in _toc.yml
    python scripts/check_book.py --all --build-dir /tmp/b/_build/html --screenshots /tmp/shots
    python scripts/check_book.py --page book/intro.html --require-math
    python scripts/check_book.py --page notebooks/03_patched_unet.html --require-figure --require-widgets

How: the build folder is served by a local HTTP server on 127.0.0.1 that injects scripts/check_book.js
as the first child of <head> of every HTML page. The script records console errors, uncaught
exceptions (script syntax errors included), unhandled promise rejections and failed resources,
measures the settled page and writes a JSON report into the DOM. Chromium resolves no host but
127.0.0.1 and has the server as its proxy, so nothing leaves the machine and every request for
another host is recorded. Each page is loaded twice (at most --jobs pages at a time): a measuring
run (`--dump-dom`, window 1280x900) and a screenshot run (`--screenshot` and `--dump-dom`, window
1280 wide and as tall as the page, at most 40000 px), whose report is checked too.

Checks; each failure is printed as `check_book: FAILED: <page>: <check>: <detail>`:
  console    no console.error, uncaught exception or unhandled promise rejection;
  network    no request for anything but the local server (CDN stylesheets, fonts, scripts);
  requests   no local request answered with HTTP status >= 400 (images, fonts, scripts, ...);
  images     every <img> loaded (naturalWidth > 0);
  wide       nothing in the content column (article.bd-article) is wider than it: no element shows
             past its right edge, and nothing scrolls sideways but code (input cells, listings);
             printed outputs, tables and widgets that scroll fail;
  clipped    no element of the column cuts its content off (overflow-x hidden/clip), and no display
             equation is wider than its box (it scrolls there with no scrollbar in sight);
  tables     no table row has more cells than the header row: rendered tables (colspan and rowspan
             counted), and the pipe tables of the page's source in _sources/ (markdown cells and
             text/markdown outputs), whose extra cells the rendered table silently drops;
  paths      no visible text (prose, code, outputs) names an absolute machine path (/work/, /root/,
             /home/<user>/, /tmp/, /usr/lib/python, site-packages);
  math       if the page has math (or --require-math): MathJax output (<mjx-container>) is present;
             no raw TeX delimiter (\\( \\[ $$) is left in the visible text of any page;
  widgets    if the page has a widget snapshot (or --require-widgets): RequireJS and embed-amd.js are
             included once and served, and every widget view was rendered once;
  figures    with --require-figure: the article has an <img>;
  report     the page loaded and the injected script wrote its report (else raise --budget-ms);
  screenshot the screenshot was written and is not blank.
Output: one line per page (OK, or the number of failures, with what was measured), its failures,
a last summary line; one full-page PNG per page (notebooks/02_blurry_x0.html ->
notebooks_02_blurry_x0.png) and report.json (every page, its failures and measurements) in
--screenshots DIR (default: page-check/ beside the build folder, i.e. _build/page-check/).
Exit status: 0 all pages pass, 1 a check failed, 2 Chromium missing or a page not built.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INJECTED_JS = Path(__file__).resolve().with_name("check_book.js")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
)
# The measuring window: 1280 px, a common laptop width. The theme's content column is then 688 px
# wide; at the other common laptop and desktop widths it is wider (757 px at 1366, 790 px at 1440
# and up, 755 px at 1024 without the right sidebar), so one width covers them. It is narrowest
# just above the 1200 px breakpoint (624 px at 1200): check there with --width 1200.
WIDTH = 1280
MEASURE_HEIGHT = 900
# Screenshot windows are capped: headless Chromium 156 hung past 180 s on a 32,000 px window
# (chapter 3, 36,783 px tall) on a 2-core AVX2 machine, and took 23 s at 26,000 px; a taller
# page's screenshot is its top MAX_SHOT_HEIGHT px (the measuring run still sees the whole page).
MAX_SHOT_HEIGHT = 25000                                        # px
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RAW_TEX = re.compile(r"\\\(|\\\[|\$\$")
ICON_RE = re.compile(r'<link[^>]*rel="[^"]*icon', re.I)
REPORT_RE = re.compile(r'<script[^>]*id="check-book-report"[^>]*>(.*?)</script>', re.S)
# Elements whose text is not rendered prose (code may legitimately show TeX).
NON_PROSE = {"script", "style", "code", "pre", "textarea", "noscript", "template", "mjx-assistive-mml"}


# --- the static HTML and the rendered DOM ----------------------------------------------------

@dataclass
class Page:
    """What one HTML document contains: math, images, scripts, widget views, visible text."""
    mjx_containers: int = 0                                    # rendered MathJax 3 outputs
    mjx_errors: list[str] = field(default_factory=list)        # MathJax 3 error nodes (<mjx-merror>)
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
        if tag == "mjx-merror":                                # TeX MathJax could not typeset
            self.page.mjx_errors.append(a.get("data-mjx-error") or "unknown error")
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


def read_report(dom_html: str) -> dict | None:
    """The JSON report check_book.js wrote into the dumped DOM, or None if it wrote none."""
    found = REPORT_RE.findall(dom_html)                       # the last one: the JS source names it too
    return json.loads(found[-1]) if found else None


# --- pipe tables in the page's source ---------------------------------------------------------
# A row with more cells than the header (an unescaped `|` inside a cell, e.g. E[x0|x_t]) loses its
# extra cells without a warning: markdown-it keeps as many cells as the header has. The rendered
# table is well-formed, so the check reads the page's source, which the build copies to _sources/.

DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*(\S*)")


def pipe_cells(line: str) -> list[str]:
    """The cells of one pipe-table row, split as markdown-it does (an escaped pipe does not split)."""
    line = line.strip()
    cells, current, escaped = [], "", False
    for ch in line:
        if ch == "|" and not escaped:
            cells.append(current)
            current = ""
        else:
            current += ch
        escaped = ch == "\\" and not escaped
    cells.append(current)
    if line.startswith("|"):
        cells = cells[1:]
    if line.endswith("|") and not line.endswith("\\|") and cells:
        cells = cells[:-1]
    return [c.strip() for c in cells]


def overfull_rows(markdown: str) -> list[tuple[list[str], int, list[str]]]:
    """(header cells, row number, row cells) of every pipe-table row with more cells than its header."""
    lines, found, fence = markdown.splitlines(), [], None
    i = 0
    while i < len(lines) - 1:
        m = FENCE.match(lines[i])
        if m and (fence is None or m.group(1)[0] == fence[0] and not m.group(2)):
            fence = None if fence else m.group(1)              # code fences hold no tables
        elif fence is None and "|" in lines[i] + lines[i + 1] and DELIMITER_ROW.match(lines[i + 1]):
            header = pipe_cells(lines[i])
            if len(header) == len(pipe_cells(lines[i + 1])):   # otherwise not a table
                j = i + 2
                while j < len(lines) and lines[j].strip() and "|" in lines[j]:
                    row = pipe_cells(lines[j])
                    if len(row) > len(header):
                        found.append((header, j - i - 1, row))
                    j += 1
                i = j
                continue
        i += 1
    return found


def _nb_text(value) -> str:
    """nbformat stores text as a string or a list of lines."""
    return "".join(value) if isinstance(value, list) else str(value)


def source_markdown(source: Path) -> list[tuple[str, str]]:
    """(where, markdown text) of a page source: the .md file, or a notebook's markdown cells and
    its text/markdown outputs (the tables built in code)."""
    text = source.read_text(encoding="utf-8")
    if ".ipynb" not in source.name:
        return [("source", text)]
    out = []
    for n, cell in enumerate(json.loads(text).get("cells", []), 1):
        if cell.get("cell_type") == "markdown":
            out.append((f"notebook cell {n} (markdown)", _nb_text(cell.get("source", ""))))
        count = cell.get("execution_count")
        for o in cell.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if md is not None:
                out.append((f"notebook cell {n}{f' (In [{count}])' if count else ''} output", _nb_text(md)))
    return out


def find_source(build: Path, page: str) -> Path | None:
    """The copy of the page's source in the build's _sources/ folder (.md, .ipynb, maybe + .txt)."""
    stem = build / "_sources" / Path(page).with_suffix("")
    for suffix in (".ipynb", ".md", ".ipynb.txt", ".md.txt"):
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return path
    return None


def check_source_tables(res: Result, build: Path, page: str) -> None:
    """tables: no pipe-table row of the page's source has more cells than its header."""
    source = find_source(build, page)
    if source is None:
        return
    for where, text in source_markdown(source):
        for header, row, cells in overfull_rows(text):
            extra = " | ".join(cells[len(header):])
            res.fail("tables", f"{where}: row {row} of the table ({' | '.join(header)[:60]}) has "
                     f"{len(cells)} cells, the header {len(header)} (an unescaped `|`? write \\|); "
                     f"the page drops {extra[:80]!r}; the row: {' | '.join(cells)[:120]!r}")


# --- the local server ------------------------------------------------------------------------

def injected_head(config: dict) -> bytes:
    """The <script> put first into every served page's <head>: the config, then check_book.js."""
    js = INJECTED_JS.read_text(encoding="utf-8").replace("</", "<\\/")   # no `</script>` inside
    config = {**config, "injectedLines": 1 + js.count("\n")}  # to report the built page's line numbers
    return (f'<script id="check-book-js">window.__checkBookConfig = {json.dumps(config)};\n'
            f"{js}</script>").encode()


def inject(html: bytes, script: bytes) -> bytes:
    """`html` with `script` as the first child of <head> (or first thing in the document)."""
    m = re.search(rb"<head\b[^>]*>", html, re.I) or re.search(rb"<html\b[^>]*>", html, re.I)
    at = m.end() if m else 0
    return html[:at] + script + html[at:]


@dataclass
class Request:
    """One request the server answered: HTTP status, path (or full URL when proxied), Referer."""
    status: int
    path: str
    referer: str = ""
    external: bool = False


class _Server:
    """Serve a folder on 127.0.0.1 at a free port in a thread, injecting the check script into HTML.

    It is also Chromium's proxy: any request for another host arrives here as a proxy request
    (absolute URL or CONNECT), is recorded as external and answered 502, so nothing leaves the
    machine and every attempt is visible."""

    def __init__(self, directory: Path, script: bytes) -> None:
        self.requests: list[Request] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def _external(self) -> bool:
                if self.command == "CONNECT" or "://" in self.path:
                    url = f"https://{self.path}" if self.command == "CONNECT" else self.path
                    log.append(Request(502, url, self.headers.get("Referer", ""), external=True))
                    self.send_error(502, "check_book: networking is off")
                    return True
                return False

            def do_CONNECT(self):
                self._external()

            def do_POST(self):
                if not self._external():
                    self.send_error(405)

            def do_HEAD(self):
                if not self._external():
                    super().do_HEAD()

            def do_GET(self):
                if self._external():
                    return
                path = Path(self.translate_path(self.path))
                if path.is_dir() and self.path.split("?")[0].endswith("/"):
                    path = path / "index.html"
                if path.suffix != ".html" or not path.is_file():
                    return super().do_GET()                    # files, 404s, folder redirects
                body = inject(path.read_bytes(), script)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_request(self, code="-", size="-"):
                if "://" in self.path or self.command == "CONNECT":
                    return                                     # logged by _external
                status = int(code) if str(code).isdigit() else 0
                log.append(Request(status, self.path.split("?")[0], self.headers.get("Referer", "")))

            def log_message(self, *args):                      # keep the console quiet
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def network_off_flags(self) -> list[str]:
        """Chromium flags: resolve no host but 127.0.0.1, and send everything else to this server."""
        return ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                f"--proxy-server=http://127.0.0.1:{self.port}", "--proxy-bypass-list=127.0.0.1"]

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- Chromium --------------------------------------------------------------------------------

def find_chromium() -> str | None:
    """Path of the Chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def run_chromium(binary: str, url: str, mode: list[str], budget_ms: int, timeout_s: float,
                 attempts: int = 2) -> str:
    """Run headless Chromium on `url` with extra `mode` flags; return its stdout. A run that
    hangs past `timeout_s` (headless Chromium now and then never returns on a loaded machine; the
    same page renders in seconds on the next try) is retried in a fresh profile, `attempts` in
    all; the last timeout is raised."""
    for attempt in range(attempts):
        with tempfile.TemporaryDirectory(prefix="check_book_chromium_") as profile:
            cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={budget_ms}", *mode, url]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                if attempt == attempts - 1:
                    raise
                print(f"check_book: {url}: chromium hung past {timeout_s:.0f} s; trying again",
                      file=sys.stderr, flush=True)
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


# --- the checks ------------------------------------------------------------------------------

# The order in which a page's failures are printed.
CHECK_ORDER = ["console", "network", "requests", "images", "wide", "clipped", "tables", "paths", "math",
               "widgets", "figures", "report", "screenshot", "chromium"]


@dataclass
class Failure:
    """One failed check: its name (one of CHECK_ORDER) and what was found, where."""
    check: str
    detail: str


@dataclass
class Result:
    """The outcome of checking one page."""
    page: str
    failures: list[Failure] = field(default_factory=list)
    screenshot: str = ""
    seconds: float = 0.0
    summary: str = ""
    report: dict = field(default_factory=dict)

    def fail(self, check: str, detail: str) -> None:
        self.failures.append(Failure(check, detail))


@dataclass
class Options:
    """What to check and how (from the command line)."""
    build: Path
    chromium: str
    budget_ms: int = 8000
    timeout_s: float = 180.0
    width: int = WIDTH
    require_math: bool = False
    require_figure: bool = False
    require_widgets: bool = False


def check_static(res: Result, build: Path, source: Page, opts: Options) -> None:
    """Checks on the built HTML file itself: required content, widget JavaScript included once."""
    has_widgets = WIDGET_STATE in source.script_types
    if opts.require_math and source.math_nodes == 0 and not RAW_TEX.search("".join(source.prose)):
        res.fail("math", "--require-math: the page contains no math")
    if opts.require_widgets and not has_widgets:
        res.fail("widgets", "--require-widgets: no widget state (was the notebook saved with widget "
                 "state? JupyterLab: Settings > Save Widget State Automatically)")
    if not has_widgets:
        return
    for name in ("require.js", "embed-amd.js"):
        hits = [s for s in source.scripts if s.split("?")[0].endswith("/" + name)]
        if len(hits) != 1:
            res.fail("widgets", f"{name} is included {len(hits)} times (expected once): {hits}")
        if not (build / "_static" / name).is_file():
            res.fail("widgets", f"_static/{name} is missing from the build: run scripts/vendor_js.sh "
                     "and rebuild")
    if any("://" in s for s in source.scripts if "embed-amd" in s or "require" in s):
        res.fail("widgets", "widget JavaScript comes from a CDN, not the vendored copy "
                 "(check nb_ipywidgets_js in _config.yml)")


def check_dom(res: Result, source: Page, dom: Page, opts: Options) -> None:
    """Checks on the DOM after scripts ran: math typeset, no raw TeX, widgets rendered once, figures."""
    if source.math_nodes or opts.require_math:
        if dom.mjx_containers == 0:
            res.fail("math", "no <mjx-container> in the rendered DOM: MathJax did not run "
                     "(is sphinx-mathjax-offline enabled and _static/mathjax present?)")
    for err in dom.mjx_errors[:10]:
        res.fail("math", f"a formula MathJax could not typeset: {err[:120]!r}")
    raw = [t.strip() for t in dom.prose if RAW_TEX.search(t)]
    for text in raw[:10]:
        res.fail("math", f"raw TeX left in the page text: {text[:120]!r}")
    if len(raw) > 10:
        res.fail("math", f"... and {len(raw) - 10} more places with raw TeX")
    n_views = source.script_types.count(WIDGET_VIEW)
    if WIDGET_STATE in source.script_types:
        if dom.widget_views == 0:
            res.fail("widgets", f"{n_views} widget view(s) in the page but none rendered "
                     "(embed-amd.js did not run)")
        elif dom.widget_views != n_views:
            res.fail("widgets", f"{dom.widget_views} rendered widget views for {n_views} in the page "
                     "(rendered twice? a root _static/ folder adds the widget JS to every page)")
    if opts.require_figure and not dom.figures:
        res.fail("figures", "--require-figure but the article has no <img>")


def check_requests(res: Result, requests: list[Request], report: dict, origin: str,
                   has_icon: bool) -> None:
    """No request leaves the local server; no local request fails.

    The page's own requests come from its Resource Timing entries (failed ones included), its
    resource error events and the proxied requests whose Referer is the page. Chromium's own
    background requests (update and time services: proxied, no Referer) are not the page's, nor
    is the /favicon.ico Chromium asks for when a page declares no icon."""
    external = {r.path for r in requests if r.external and r.referer.startswith(origin)}
    external |= {e["url"] for e in report.get("requests", []) + report.get("resources", [])
                 if "://" in e["url"] and not e["url"].startswith(origin + "/")}
    for url in sorted(external):
        res.fail("network", f"requests a network resource: {url}")
    failed_local = set()
    for r in requests:
        if r.external or r.status < 400 or (r.path == "/favicon.ico" and not has_icon):
            continue
        failed_local.add(r.path)
        referer = r.referer.replace(origin, "")
        by = f" (requested by {referer})" if referer else ""
        res.fail("requests", f"HTTP {r.status} for {r.path}{by}")
    for entry in report.get("resources", []):                 # failed without an HTTP error status
        path = entry["url"].replace(origin, "").split("?")[0]
        if entry["url"].startswith(origin + "/") and path not in failed_local:
            res.fail("requests", f"<{entry['tag']}> failed to load {path}")


def check_report(res: Result, report: dict | None) -> None:
    """Failures from the measurements of check_book.js: console, layout, images, tables, paths."""
    if report is None:
        res.fail("report", "check_book.js wrote no report (the page did not run scripts, or Chromium "
                 "stopped first: raise --budget-ms)")
        return
    if not report.get("loaded"):
        res.fail("report", "the load event did not fire within the budget (a request hangs?)")
    col = report.get("column") or {}
    counts = report.get("counts", {})
    for e in report.get("console", []):
        res.fail("console", f"{e['kind']}: {e['text']}")
    for e in report.get("wide", []):
        if e.get("how") == "scrolls sideways":
            res.fail("wide", f"<{e['el']}> scrolls sideways: its content is {e['width']}px wide, "
                     f"{e['over']}px more than the content column ({col.get('width')}px); only code "
                     f"may scroll: {e['where']}")
        else:
            res.fail("wide", f"<{e['el']}> is {e['width']}px wide and pokes {e['over']}px out of the "
                     f"content column ({col.get('selector')}, {col.get('width')}px): {e['where']}")
    for e in report.get("clipped", []):
        res.fail("clipped", f"<{e['el']}> is {e['how']}: {e['content']}px of content, {e['visible']}px "
                 f"shown: {e['where']}")
    for e in report.get("images", []):
        res.fail("images", f"<img src={e['src']!r}> did not load ({e['state']}): {e['where']}")
    for e in report.get("tables", []):
        res.fail("tables", f"{e['table']}, {e['where']}: row {e['row']} has {e['cells']} cells, "
                 f"the header {e['header']}: {e['text']!r}")
    for e in report.get("paths", []):
        res.fail("paths", f"absolute machine path in the page text ({e['where']}): {e['text']!r}")
    for key, shown in ((k, len(report.get(k, []))) for k in
                       ("console", "wide", "clipped", "images", "tables", "paths")):
        if counts.get(key, 0) > shown:
            res.fail(key, f"... and {counts[key] - shown} more")


def shot_name(page: str) -> str:
    """notebooks/02_blurry_x0.html -> notebooks_02_blurry_x0.png"""
    return re.sub(r"[^\w.-]+", "_", str(Path(page).with_suffix(""))) + ".png"


@dataclass
class Load:
    """What the two Chromium runs of one page returned."""
    dom_html: str                                              # DOM of the measuring run
    report: dict | None                                        # its check_book.js report
    shot_report: dict | None                                   # the screenshot run's report
    requests: list[Request]                                    # what the server answered, both runs
    origin: str                                                # http://127.0.0.1:PORT


def load_page(page: str, opts: Options, screenshot: Path | None) -> Load:
    """Serve the build, load `page` in Chromium to measure it, then again for a full-page PNG
    (no second run when `screenshot` is None)."""
    config = {"delayMs": min(1500, opts.budget_ms // 4), "deadlineMs": max(1000, opts.budget_ms - 1000)}
    with _Server(opts.build, injected_head(config)) as server:
        url = f"{server.url}/{page}"
        flags = server.network_off_flags()
        measure = [*flags, "--dump-dom", f"--window-size={opts.width},{MEASURE_HEIGHT}"]
        dom_html = run_chromium(opts.chromium, url, measure, opts.budget_ms, opts.timeout_s)
        report = read_report(dom_html)
        shot_report = None
        if screenshot is not None:
            # headless --screenshot captures the window: make it as tall as the page
            height = min(MAX_SHOT_HEIGHT, max(MEASURE_HEIGHT, int((report or {}).get("docHeight", 0))))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.unlink(missing_ok=True)
            shoot = [*flags, "--dump-dom", f"--screenshot={screenshot}", f"--window-size={opts.width},{height}"]
            shot_dom = run_chromium(opts.chromium, url, shoot, opts.budget_ms, opts.timeout_s)
            shot_report = read_report(shot_dom)
    return Load(dom_html, report, shot_report, server.requests, server.url)


def check_page(page: str, opts: Options, screenshot: Path | None) -> Result:
    """Check one built page (path relative to the build folder); write its screenshot unless None."""
    t0 = time.monotonic()
    res = Result(page, screenshot=str(screenshot or ""))
    html = (opts.build / page).read_text(encoding="utf-8")
    source = parse_page(html)
    check_static(res, opts.build, source, opts)
    check_source_tables(res, opts.build, page)
    load = load_page(page, opts, screenshot)
    dom = parse_page(load.dom_html)
    check_dom(res, source, dom, opts)
    check_report(res, load.report)
    check_requests(res, load.requests, load.report or {}, load.origin, has_icon=bool(ICON_RE.search(html)))
    if screenshot is not None:
        check_screenshot_run(res, load.report, load.shot_report, screenshot)
    res.failures = sorted(dedupe(res.failures), key=lambda f: CHECK_ORDER.index(f.check)
                          if f.check in CHECK_ORDER else len(CHECK_ORDER))
    res.report = load.report or {}
    res.seconds = round(time.monotonic() - t0, 1)
    report = load.report or {}
    cut = f" (screenshot: its top {MAX_SHOT_HEIGHT}px)" if report.get("docHeight", 0) > MAX_SHOT_HEIGHT else ""
    res.summary = (f"{dom.mjx_containers} formulas, {len(dom.figures)} figures, "
                   f"{source.script_types.count(WIDGET_VIEW)} widgets, "
                   f"{report.get('scrollingCode', 0)} code blocks scroll, "
                   f"column {(report.get('column') or {}).get('width')}px, "
                   f"page {report.get('docHeight')}px{cut}, {res.seconds:.1f} s")
    return res


def check_screenshot_run(res: Result, report: dict | None, shot_report: dict | None, shot: Path) -> None:
    """The screenshot exists and is not blank; the full-height run's own report adds what it saw."""
    if not shot.is_file():
        res.fail("screenshot", f"{shot} was not written")
    elif screenshot_is_blank(shot):
        res.fail("screenshot", f"{shot} is blank")
    if report is not None and shot_report is not None:
        extra = Result(res.page)
        check_report(extra, shot_report)                      # e.g. lazy content below the fold
        res.failures += [f for f in extra.failures if f.check != "report"]


def dedupe(failures: list[Failure]) -> list[Failure]:
    """Failures in order, each once."""
    seen, out = set(), []
    for f in failures:
        if (f.check, f.detail) not in seen:
            seen.add((f.check, f.detail))
            out.append(f)
    return out


# --- pages, output, command line -------------------------------------------------------------

def toc_pages(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """The built HTML page of every file in _toc.yml, root first (book/intro -> book/intro.html)."""
    import yaml

    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", f) + ".html" for f in files]


def print_result(res: Result) -> None:
    """One line per page, then every failure on its own line."""
    n = len(res.failures)
    status = "OK" if not n else f"{n} failure{'s' * (n != 1)}"
    print(f"check_book: {res.page}: {status} ({res.summary})", flush=True)
    for f in res.failures:
        print(f"check_book: FAILED: {res.page}: {f.check}: {f.detail}", flush=True)


def run_pages(pages: list[str], opts: Options, shots: dict[str, Path], jobs: int) -> list[Result]:
    """Check `pages`, `jobs` at a time; print each page's result in order as it is known."""
    def one(page: str) -> Result:
        try:
            return check_page(page, opts, shots[page])
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as err:
            res = Result(page, screenshot=str(shots[page]), summary="not checked")
            res.fail("chromium", f"{type(err).__name__}: {str(err)[:500]}")
            return res

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = []
        for res in pool.map(one, pages):
            print_result(res)
            results.append(res)
    return results


def write_summary(path: Path, results: list[Result], build: Path, seconds: float) -> None:
    """report.json: every page with its failures, screenshot and the raw measurements."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"build_dir": str(build), "ok": not any(r.failures for r in results),
            "seconds": round(seconds, 1),
            "failures": sum(len(r.failures) for r in results),
            "pages": [{**asdict(r), "ok": not r.failures} for r in results]}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default=str(ROOT / "_build" / "html"),
                        help="built HTML folder (default: _build/html)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="check every page named in _toc.yml")
    which.add_argument("--page", default=None,
                       help="one page to check, relative to the build folder "
                            "(default without --all: notebooks/01_sigma_space.html)")
    parser.add_argument("--toc", default=str(ROOT / "_toc.yml"),
                        help="the book's _toc.yml, whose pages --all checks (default: the repository's)")
    parser.add_argument("--screenshots", default=None,
                        help="folder for the PNGs and report.json (default: <build-dir>/../page-check)")
    parser.add_argument("--screenshot", default=None,
                        help="with --page: the PNG to write (default: in the --screenshots folder)")
    parser.add_argument("--require-math", action="store_true", help="fail if a checked page has no math")
    parser.add_argument("--require-figure", action="store_true", help="fail if a checked page has no <img>")
    parser.add_argument("--require-widgets", action="store_true",
                        help="fail if a checked page has no widget snapshot")
    parser.add_argument("--budget-ms", type=int, default=8000,
                        help="Chromium --virtual-time-budget in ms (default 8000)")
    parser.add_argument("--width", type=int, default=WIDTH,
                        help=f"window width in px for measuring and screenshots (default {WIDTH})")
    parser.add_argument("--jobs", type=int, default=2, help="pages checked at a time (default 2)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds per Chromium run (default 180)")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if args.all and args.screenshot:
        parser.error("--screenshot names the PNG of one --page; with --all use --screenshots DIR")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chromium = args.chromium or find_chromium()
    if not chromium or not Path(chromium).exists() and not shutil.which(chromium):
        print("check_book: Chromium not found. Install it (Debian, as root):\n"
              "    apt-get install -y chromium", file=sys.stderr)
        return 2
    build = Path(args.build_dir).resolve()
    pages = toc_pages(Path(args.toc)) if args.all else [args.page or "notebooks/01_sigma_space.html"]
    missing = [p for p in pages if not (build / p).is_file()]
    if missing:
        print(f"check_book: not built: {', '.join(str(build / p) for p in missing)}: build the book "
              "first (jupyter-book build . --all -W -n --keep-going)", file=sys.stderr)
        return 2
    out = Path(args.screenshots).resolve() if args.screenshots else build.parent / "page-check"
    shots = {p: out / shot_name(p) for p in pages}
    if args.screenshot:
        shots[pages[0]] = Path(args.screenshot).resolve()
    opts = Options(build, chromium, budget_ms=args.budget_ms, timeout_s=args.timeout, width=args.width,
                   require_math=args.require_math, require_figure=args.require_figure,
                   require_widgets=args.require_widgets)
    t0 = time.monotonic()
    results = run_pages(pages, opts, shots, args.jobs)
    seconds = time.monotonic() - t0
    write_summary(out / "report.json", results, build, seconds)
    bad = [r for r in results if r.failures]
    print(f"check_book: {len(results) - len(bad)}/{len(results)} pages OK, "
          f"{sum(len(r.failures) for r in results)} failures, {seconds:.0f} s; screenshots and "
          f"report.json in {out}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
