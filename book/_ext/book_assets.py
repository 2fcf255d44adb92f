"""Sphinx extension of the book: what every page loads, so that pages are offline and error-free.

- sphinx-thebe (which jupyter-book 1 always loads) adds its inline configuration script twice to
  every page, so every page logged ``Identifier 'THEBE_JS_URL' has already been declared``; the
  book has no live code (``launch_buttons.thebe: false``), so its scripts are dropped altogether
  (the inline config named a CDN URL, unpkg.com, too).
- ``book.css`` (book/static/): code cells sized so 80 characters fit the content column, folded
  library listings, figures and tables that never overflow the column.
- ``widgets-shim.js`` (book/static/) runs before MathJax and the widget manager: it gives MathJax
  3 the MathJax 2 call the widget manager makes, and points the widgets at their vendored fonts.
- the references page labels each work by author and year (``[Karras et al., 2022]``), as the
  chapters cite it, instead of pybtex's ``plain`` numbers ``[1]``, ``[2]`` (``bibtex_default_style:
  book`` in _config.yml: pybtex's ``plain`` formatting and sorting with these labels).
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


class AuthorYearLabels(BaseLabelStyle):
    """``Last``, ``Last and Other`` or ``Last et al.``, then ``, year``; a, b, … on duplicates."""

    def format_labels(self, sorted_entries):
        labels = [self._label(e) for e in sorted_entries]
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        count: dict[str, int] = {}
        for label in labels:
            if seen[label] == 1:
                yield label
            else:
                count[label] = count.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[count[label] - 1]

    @staticmethod
    def _label(entry) -> str:
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        last = [" ".join(p.last_names) for p in people] or [entry.fields.get("title", entry.key)[:20]]
        names = last[0] if len(last) == 1 else (f"{last[0]} and {last[1]}" if len(last) == 2
                                                else f"{last[0]} et al.")
        names = Text.from_latex(names).render_as("text")        # Bi\'nkowski -> Bińkowski
        return f"{names}, {entry.fields.get('year', 'n.d.')}"


class BookStyle(PlainStyle):
    default_label_style = "author_year_labels"


register_plugin("pybtex.style.labels", "author_year_labels", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "book", BookStyle)

SHIM = "widgets-shim.js"
CSS = "book.css"


def _is_thebe(js) -> bool:
    body = (getattr(js, "attributes", None) or {}).get("body", "") or ""
    name = str(getattr(js, "filename", "") or "")
    return "THEBE_JS_URL" in body or name.endswith("sphinx-thebe.js") or "unpkg.com/thebe" in name


def _page_context(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        scripts[:] = [js for js in scripts if not _is_thebe(js)]


def setup(app):
    app.add_css_file(CSS)
    app.add_js_file(SHIM, priority=100)          # before MathJax's config (priority 500) and widgets
    app.connect("html-page-context", _page_context, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
