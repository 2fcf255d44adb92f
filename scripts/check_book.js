/* check_book.js: injected by scripts/check_book.py as the first child of <head> of every HTML page
 * it serves to headless Chromium. It records what goes wrong while the page loads, measures the
 * rendered page once it has settled, and writes a JSON report into the DOM, which `--dump-dom`
 * returns: a <script type="application/json"> element with the id check-book-report.
 *
 * check_book.py prepends `window.__checkBookConfig = {...}` (the keys: see CONFIG below).
 * Report keys (each list holds at most CONFIG.limit entries; `counts` has the full numbers):
 *   console    console.error calls, uncaught exceptions (script syntax errors included, e.g. a
 *              duplicate `const` across two scripts), unhandled promise rejections  [{kind, text}]
 *   warnings   console.warn calls (reported, not failures)                       [{kind, text}]
 *   resources  elements whose resource failed to load (img, script, link)        [{tag, url}]
 *   requests   the requests (Resource Timing lists failed ones too) that went to another
 *              origin or got no or an error status                     [{url, status, type}]
 *   wide       elements of the content column (article.bd-article) wider than it, `how`:
 *              "pokes out"  the box shows past the column's right edge;
 *              "scrolls sideways"  a printed output, table or widget wider than its scrolling
 *              box (code blocks may scroll: their number is scrollingCode)
 *                                                              [{el, where, how, width, over}]
 *   clipped    elements that cut their content off (overflow-x hidden/clip), and display
 *              equations wider than their box, scrolling or not  [{el, where, how, content, visible}]
 *   images     <img> elements that did not load (naturalWidth 0)           [{src, where, state}]
 *   tables     rendered tables with a row that has more cells than the header row
 *                                                    [{table, where, row, cells, header, text}]
 *   paths      visible text naming an absolute machine path                     [{text, where}]
 *   column     {selector, left, right, width}: the content box of the column; also docHeight,
 *              docWidth, viewport, and loaded (the load event fired)
 * `where` names the code cell (counted among the page's rendered cells) and whether in its input
 * or output, the section id, the equation number and a text snippet (TeX source for formulas).
 */
(() => {
  "use strict";
  const CONFIG = {
    delayMs: 1500,            // after `load`, wait this long (then for MathJax and fonts) to measure
    deadlineMs: 7000,         // write a report by then even if `load` never fired
    columnSelector: "article.bd-article, main article, [role=main], main, body",
    tolerancePx: 1,           // sub-pixel rounding is not overflow
    glyphPx: 4,               // a formula may overhang its box by an italic or accent overhang
    limit: 50,
    injectedLines: 0,         // newlines in the injected <script>: line numbers of the built page
    ...(window.__checkBookConfig || {}),
  };
  // Absolute paths of a build or user machine: /work/..., /root/..., /home/<user>/..., /tmp/...,
  // /usr/lib/python3.x, any site-packages; not inside a URL (https://host/tmp/ is fine).
  const ABS_PATH = new RegExp([
    String.raw`(?<![\w.:/~-])(?:/(?:work|root|tmp|Users)/|/home/[^/\s]+/|/usr/(?:local/)?lib/python)`,
    String.raw`\b(?:site|dist)-packages\b`,
    String.raw`\b[A-Z]:\\(?:Users|Windows)\\`,
  ].join("|"));
  const SKIP = "script, style, mjx-assistive-mml, template, noscript";
  // Code that may scroll sideways: input cells, code listings in prose, and the library listings
  // pdlib.book.show_source prints (class pdlib-source: library code keeps its own line width);
  // not printed outputs, tables or figures.
  const CODE = "div.cell_input pre, div.highlight pre, pre.literal-block, .pdlib-source pre";
  const OUTPUT = ".cell_output, .output";
  const LISTING = ".pdlib-source";
  const report = {
    console: [], warnings: [], resources: [], requests: [], wide: [], clipped: [], images: [],
    tables: [], paths: [], counts: {}, loaded: false, column: null, scrollingCode: 0,
  };
  let written = false;

  function push(list, item) {
    report.counts[list] = (report.counts[list] || 0) + 1;
    if (report[list].length < CONFIG.limit) report[list].push(item);
  }

  function text(value) {
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    if (typeof value === "string") return value;
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  function snippet(s, n) {
    const chars = Array.from(String(s || "").replace(/\s+/g, " ").trim());   // code points
    return chars.length > n ? chars.slice(0, n - 1).join("") + "\u2026" : chars.join("");
  }

  // --- (a) record errors while the page loads ------------------------------------------------
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = function (...args) {
      const entry = {kind: `console.${level}`, text: snippet(args.map(text).join(" "), 300)};
      push(level === "error" ? "console" : "warnings", entry);
      return original.apply(console, args);
    };
  }

  window.addEventListener("error", (ev) => {
    const t = ev.target;
    if (t && t !== window && t.tagName) {                    // a resource failed (capture phase)
      push("resources", {tag: t.tagName.toLowerCase(), url: t.currentSrc || t.src || t.href || ""});
      return;
    }
    const inPage = ev.filename && ev.filename.split("#")[0] === location.href.split("#")[0];
    const line = ev.lineno - (inPage ? CONFIG.injectedLines : 0);
    const at = ev.filename ? ` (${ev.filename.replace(location.origin, "")}:${line})` : "";
    push("console", {kind: "uncaught", text: snippet((ev.message || text(ev.error)) + at, 300)});
  }, true);

  window.addEventListener("unhandledrejection", (ev) => {
    const r = ev.reason;
    const stack = r instanceof Error && r.stack ? " | " + r.stack.split("\n").slice(1, 3).join(" ") : "";
    const shown = (text(r) + stack).split(location.origin).join("");      // paths, not the port
    push("console", {kind: "unhandledrejection", text: snippet(shown, 300)});
  });

  // Lazy images below the window would never load in a headless run: load them all.
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("img[loading=lazy]").forEach((img) => { img.loading = "eager"; });
  });

  // --- (b) measure the settled page ----------------------------------------------------------
  function describe(el) {
    const cls = (typeof el.className === "string" ? el.className : "").split(/\s+/).filter(Boolean);
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + cls.slice(0, 3).map((c) => "." + c).join("");
  }

  // The TeX source of the formula in or around `el` (MathJax 3 keeps it), or "".
  function texOf(el) {
    try {
      const items = MathJax.startup.document.getMathItemsWithin(el.closest(".math") || el);
      return items.length ? items[0].math : "";
    } catch (e) {
      return "";
    }
  }

  // Where in the book an element is: its cell (input/output), section, equation, text snippet.
  function where(el, withText = true) {
    const parts = [];
    const cell = el.closest(".cell");
    if (cell) {
      const n = Array.prototype.indexOf.call(document.querySelectorAll(".cell"), cell) + 1;
      const part = el.closest(OUTPUT) ? " output" : el.closest(".cell_input") ? " input" : "";
      parts.push(`cell ${n}${part}`);
    }
    const section = el.closest("section[id]");
    if (section) parts.push(`section #${section.id}`);
    const eqno = el.closest(".math") && el.closest(".math").querySelector(".eqno");
    if (eqno && eqno.firstChild) parts.push(`equation ${snippet(eqno.firstChild.textContent, 12)}`);
    if (withText) {
      const tex = el.closest("mjx-container, .math") ? texOf(el) : "";
      const shown = el.innerText || el.textContent || el.getAttribute("alt") || el.getAttribute("src");
      const t = tex ? "TeX " + snippet(tex, 80) : snippet(shown, 80);
      if (t) parts.push(JSON.stringify(t));
    }
    return parts.join(", ");
  }

  function findColumn() {
    for (const sel of CONFIG.columnSelector.split(",")) {
      const el = document.querySelector(sel.trim());
      if (el) return el;
    }
    return document.body;
  }

  function columnBox(col) {
    const r = col.getBoundingClientRect(), cs = getComputedStyle(col);
    const left = r.left + parseFloat(cs.paddingLeft) + parseFloat(cs.borderLeftWidth);
    const right = r.right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
    return {left: Math.round(left), right: Math.round(right), width: Math.round(right - left)};
  }

  const overflowX = (el) => getComputedStyle(el).overflowX;
  const rendered = (el) => el.checkVisibility({visibilityProperty: true});

  // The right edge of what `el` paints: its element and text descendants, without MathJax's
  // invisible assistive MathML (which makes the scrollWidth of every formula a little too large).
  function contentRight(el) {
    let right = -Infinity;
    const range = document.createRange();
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
      acceptNode: (n) => (n.nodeType === 1 && n.matches(SKIP) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.nodeType === 3 && !n.nodeValue.trim()) continue;
      if (n.nodeType === 3) range.selectNodeContents(n);
      const r = n.nodeType === 3 ? range.getBoundingClientRect() : n.getBoundingClientRect();
      if (r.width > 0 && r.height > 0) right = Math.max(right, r.right);
    }
    return right;
  }

  // The right edge of the area in which `el` shows its content (inside border and scrollbar).
  const innerRight = (el) => el.getBoundingClientRect().left + el.clientLeft + el.clientWidth;

  // Elements whose box shows past the column's right edge: not inside a container that scrolls
  // or clips (measureOverflow looks at those). Only the outermost offending element is reported.
  function measureWide(col, box) {
    const flagged = [];
    for (const el of col.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width <= 1 || r.height <= 1 || r.right <= box.right + CONFIG.tolerancePx) continue;
      if (el.closest(SKIP) || getComputedStyle(el).position === "fixed") continue;
      let contained = false;
      for (let a = el.parentElement; a && a !== col && !contained; a = a.parentElement) {
        contained = flagged.includes(a) || overflowX(a) !== "visible";
      }
      if (contained || !rendered(el)) continue;
      flagged.push(el);
      push("wide", {el: describe(el), where: where(el), how: "pokes out", width: Math.round(r.width),
                    over: Math.round(r.right - box.right)});
    }
  }

  // Containers whose content is wider than they are (overflow-x not visible):
  //   a code block (input cell, listing) may scroll: counted in scrollingCode, not a failure;
  //   a display equation that scrolls or is cut off: "clipped" (hidden at the box edge);
  //   anything else that scrolls (printed output, table, widget): "wide" (the reader cannot see
  //   the whole result without scrolling it sideways);
  //   anything else that cuts its content off (overflow hidden/clip): "clipped".
  function measureOverflow(col, box) {
    const done = [];
    for (const el of [col, ...col.querySelectorAll("*")]) {
      if (el.scrollWidth <= el.clientWidth + CONFIG.tolerancePx || el.clientWidth <= 2) continue;
      const ox = overflowX(el);
      if (ox === "visible" || el.closest(SKIP) || !rendered(el)) continue;
      if (done.some((d) => d.contains(el))) continue;
      const math = el.matches("mjx-container, .math");
      const cut = Math.round(contentRight(el) - innerRight(el));
      if (cut <= (math ? CONFIG.glyphPx : CONFIG.tolerancePx)) continue;   // overhang, assistive MathML
      const scrolls = ox === "auto" || ox === "scroll";
      if (scrolls && !math && el.matches(CODE) && (!el.closest(OUTPUT) || el.closest(LISTING))) {
        report.scrollingCode += 1;
        continue;
      }
      if (!scrolls && getComputedStyle(el).textOverflow === "ellipsis") continue;
      done.push(el);
      const content = el.clientWidth + cut;
      if (math || !scrolls) {
        const how = scrolls ? "wider than its box (it scrolls, with no visible scrollbar)" : "cut off at its box edge";
        push("clipped", {el: describe(el), where: where(el), how, content, visible: el.clientWidth});
      } else {
        const over = Math.round(el.getBoundingClientRect().left + content - box.right);
        push("wide", {el: describe(el), where: where(el), how: "scrolls sideways", width: content, over});
      }
    }
  }

  function measureImages() {
    for (const img of document.querySelectorAll("img[src], img[srcset]")) {
      if (img.complete && img.naturalWidth > 0) continue;
      if (img.complete && /\.svg([?#]|$)/i.test(img.currentSrc || img.src) && img.width > 0) continue;
      push("images", {src: img.getAttribute("src") || "", where: where(img),
                      state: img.complete ? "broken" : "still loading"});
    }
  }

  // The number of grid columns each row of a table fills (colspan and rowspan accounted for).
  function rowWidths(table) {
    let carry = [];                                  // per spanned column: rows it still covers
    return Array.from(table.rows).filter((tr) => tr.closest("table") === table).map((tr) => {
      let used = carry.filter((n) => n > 0).length;
      carry = carry.map((n) => n - 1).filter((n) => n > 0);
      for (const td of tr.cells) {
        const span = Math.max(1, td.colSpan || 1);
        used += span;
        if (td.rowSpan > 1) for (let k = 0; k < span; k++) carry.push(td.rowSpan - 1);
      }
      return {tr, cells: used};
    });
  }

  function measureTables(col) {
    col.querySelectorAll("table").forEach((table, ti) => {
      const rows = rowWidths(table);
      if (!rows.length) return;
      const head = rows.filter((r) => table.tHead && r.tr.parentElement === table.tHead);
      const headRows = head.length ? head : [rows[0]];
      const header = Math.max(...headRows.map((r) => r.cells));
      const names = snippet(headRows[headRows.length - 1].tr.innerText.replace(/\t/g, " | "), 60);
      rows.forEach((r, ri) => {
        if (r.cells <= header) return;
        push("tables", {table: `table ${ti + 1} (${names})`, where: where(table, false), row: ri + 1,
                        cells: r.cells, header, text: snippet(r.tr.innerText.replace(/\t/g, " | "), 120)});
      });
    });
  }

  function measurePaths() {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const parent = node.parentElement;
      if (!parent || parent.closest(SKIP + ", #check-book-report")) continue;
      const m = ABS_PATH.exec(node.nodeValue);
      if (!m || !rendered(parent)) continue;
      const s = node.nodeValue, start = s.lastIndexOf("\n", m.index) + 1, end = s.indexOf("\n", m.index);
      const line = snippet(s.slice(start, end < 0 ? undefined : end), 160);
      if (seen.has(line)) continue;
      seen.add(line);
      push("paths", {text: line, where: where(parent, false) || describe(parent)});
    }
  }

  function measureRequests() {
    const entries = performance.getEntriesByType("resource");
    report.counts.allRequests = entries.length;
    for (const e of entries) {
      const local = e.name.startsWith(location.origin + "/") || /^(data|blob):/.test(e.name);
      if (!local || !e.responseStatus || e.responseStatus >= 400) {
        push("requests", {url: e.name, status: e.responseStatus || 0, type: e.initiatorType});
      }
    }
  }

  function measure() {
    const col = findColumn(), box = columnBox(col);
    report.column = {selector: describe(col), ...box};
    report.viewport = {width: innerWidth, height: innerHeight};
    report.docHeight = Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight));
    report.docWidth = Math.ceil(document.documentElement.scrollWidth);
    const steps = {
      wide: () => measureWide(col, box), overflow: () => measureOverflow(col, box),
      images: measureImages, tables: () => measureTables(col), paths: measurePaths, requests: measureRequests,
    };
    for (const [name, step] of Object.entries(steps)) {
      try { step(); } catch (e) { push("console", {kind: "check_book.js", text: `${name}: ${text(e)}`}); }
    }
  }

  function write() {
    if (written) return;
    written = true;
    measure();
    const el = document.createElement("script");
    el.type = "application/json";
    el.id = "check-book-report";
    el.textContent = JSON.stringify(report).replace(/\u003c/g, "\\u003c");   // no "</script>" inside
    (document.body || document.documentElement).appendChild(el);
  }

  // MathJax typesets and web fonts load after `load`: wait for both (errors do not matter here).
  function settled() {
    const mathjax = window.MathJax && MathJax.startup && MathJax.startup.promise;
    const fonts = document.fonts && document.fonts.ready;
    return Promise.all([mathjax, fonts].map((p) => Promise.resolve(p).catch(() => {})));
  }

  window.addEventListener("load", () => {
    report.loaded = true;
    setTimeout(() => settled().then(write, write), CONFIG.delayMs);
  });
  setTimeout(write, CONFIG.deadlineMs);               // the page never finished loading: report anyway
})();
