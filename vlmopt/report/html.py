"""Render the report document as one self-contained HTML file: inline CSS, plots as base64 PNG, no external
resources (a Content-Security-Policy forbids any), so it opens offline and can be mailed as a single file.

The only script is a self-check: it records script errors, failed resource loads and console.error calls, and
on load writes how many images decoded into a hidden #render-check element. Tests read that element from the
DOM headless Chromium dumps; people never see it.
"""

from __future__ import annotations

import base64
import re
from html import escape

import pandas as pd

from .document import Document, Headline, Missing, Paragraph, Plot, Table

INLINE_CODE = re.compile(r"`([^`]+)`")
# Nothing may be fetched: images come from data: URIs, style and the self-check script are inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

STYLE = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #1f77b4; --warn-bg: #fff6e0;
        --warn-line: #e0a800; --card: #f5f7fb; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1180px; padding: 24px 28px 64px; line-height: 1.45; font-size: 15px; }
h1 { font-size: 26px; margin: 0 0 8px; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: var(--muted); font-size: 13px; margin: 0 0 12px; padding: 0; list-style: none; }
.meta li { display: inline-block; margin-right: 18px; }
nav { font-size: 13px; margin: 8px 0 16px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
p.recommendation { font-size: 16px; background: var(--card); border-left: 4px solid var(--accent);
                   padding: 12px 16px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 10px; }
.figure { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.figure .label { color: var(--muted); font-size: 12px; }
.figure .value { font-size: 22px; font-weight: 600; }
.figure .comparison { color: var(--muted); font-size: 12px; }
.source { color: var(--muted); font-size: 12px; font-style: italic; margin: 4px 0 14px; }
.missing { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 8px 12px; margin: 10px 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; margin: 4px 0; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top;
         white-space: nowrap; }
td.prose { white-space: normal; min-width: 220px; }
th { background: var(--card); position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafbfd; }
td.fail { color: #b3261e; font-weight: 600; }
td.pass { color: #1e7a34; }
figure.plot { margin: 10px 0; }
figure.plot img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figure.plot figcaption { color: var(--muted); font-size: 12px; }
code { background: var(--card); padding: 0 3px; }
"""

SELF_CHECK_HEAD = """(function () {
  var errors = [];
  window.__reportErrors = errors;
  window.addEventListener("error", function (event) {
    var t = event.target;
    if (t && t !== window && t.tagName) {
      errors.push("failed to load <" + t.tagName.toLowerCase() + ">");
    } else {
      errors.push(String(event.message));
    }
  }, true);
  var consoleError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var images = document.images, loaded = 0;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
    }
    var check = document.getElementById("render-check");
    check.setAttribute("data-images-total", String(images.length));
    check.setAttribute("data-images-loaded", String(loaded));
    check.setAttribute("data-errors", JSON.stringify(errors));
    check.setAttribute("data-done", "1");
  });
})();"""


# Columns of free text may wrap; every other cell stays on one line so names like 'h100-sxm-80gb' stay whole.
PROSE_HEADERS = {"why", "why this variant", "reason", "source", "price source", "detail", "measured how"}


def _cell_class(header: str, value: str) -> str:
    classes = []
    if header == "SLO" and value in ("pass", "FAIL"):
        classes.append(value.lower())
    if header in PROSE_HEADERS:
        classes.append("prose")
    return f' class="{" ".join(classes)}"' if classes else ""


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = "".join(f"<td{_cell_class(str(h), str(v))}>{escape(str(v))}</td>"
                        for h, v in zip(frame.columns, row, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _number_attr(value: float | None) -> str:
    return "" if value is None else f' data-value="{value!r}"'


def _inline(text: str) -> str:
    """Escape text, then show `backticked` commands and paths as code, as the markdown renderer does."""
    return INLINE_CODE.sub(r"<code>\1</code>", escape(text))


def _render_block(block: object) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Missing):
        return f'<div class="missing"><strong>Not shown:</strong> {_inline(block.text)}</div>'
    if isinstance(block, Headline):
        cards = "".join(
            f'<div class="figure" id="figure-{escape(f.key)}"{_number_attr(f.raw)}>'
            f'<div class="label">{escape(f.label)}</div><div class="value">{escape(f.display)}</div>'
            f'<div class="comparison">{escape(f.comparison)}</div></div>'
            for f in block.figures
        )
        return f'<div class="figures">{cards}</div><p class="source">Source: {escape(block.provenance)}</p>'
    if isinstance(block, Table):
        csv = f" <small>(CSV: <code>{escape(block.csv_name)}</code>)</small>" if block.csv_name else ""
        return (f"<h3>{escape(block.title)}{csv}</h3>{html_table(block.frame)}"
                f'<p class="source">Source: {escape(block.provenance)}</p>')
    if isinstance(block, Plot):
        data = base64.b64encode(block.plot.png).decode("ascii")
        return (f'<figure class="plot" id="plot-{escape(block.plot.name)}">'
                f'<img alt="{escape(block.plot.alt)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{escape(block.plot.title)}. Source: {escape(block.provenance)}</figcaption></figure>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(doc: Document) -> str:
    meta = "".join(f"<li>{escape(label)}: <strong>{escape(value)}</strong></li>" for label, value in doc.meta)
    nav = "".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in doc.sections)
    body = []
    for section in doc.sections:
        blocks = []
        for block in section.blocks:
            html = _render_block(block)
            if isinstance(block, Paragraph) and section.anchor == "recommendation" and not blocks:
                html = html.replace("<p>", '<p class="recommendation">', 1)
            blocks.append(html)
        body.append(f'<section id="{escape(section.anchor)}"><h2>{escape(section.title)}</h2>{"".join(blocks)}'
                    "</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(doc.title)}</title><style>{STYLE}</style><script>{SELF_CHECK_HEAD}</script></head>"
        f'<body><h1>{escape(doc.title)}</h1><ul class="meta">{meta}</ul><nav>{nav}</nav>{"".join(body)}'
        '<div id="render-check" hidden></div></body></html>\n'
    )
