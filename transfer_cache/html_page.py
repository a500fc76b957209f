"""The machinery of a self-contained HTML page: sections of HTML and plotly figures rendered in order, plotly.js
embedded once (by the first figure), and a red box that lists any JavaScript error so a figure that fails to draw is
visible instead of silently blank. Every page of the report and of inspect is built on it."""

from __future__ import annotations

import datetime as _dt
import html
import sys

_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = ("""
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px; """
        """padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } """
        """h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.metrics td.num { font-size: 1.2em; font-weight: 600; }
.note { color: #555; font-size: .92em; } .figure { margin: 1em 0 2em; }
#tc-js-errors { background: #fde8e8; border: 1px solid #e45756; padding: .5em 1em; color: #a00; }
code { background: #f4f6f8; padding: 0 .2em; }
""")

_ERROR_BOX = ("""<div id="tc-js-errors" hidden><b>Some figures failed to render:</b><ul></ul></div>
<script>
(function () {
  function show(message) {
    var box = document.getElementById("tc-js-errors");
    var item = document.createElement("li");
    item.textContent = String(message);
    box.querySelector("ul").appendChild(item);
    box.hidden = false;
  }
  window.addEventListener("error", function (event) { show(event.message || event); });
  window.addEventListener("unhandledrejection", function (event) { """
              """show("unhandled promise rejection: " + event.reason); });
})();
</script>""")


def esc(value) -> str:
    return html.escape(str(value))


def html_table(rows, *, header=None, css_class="") -> str:
    parts = [f'<table class="{css_class}">' if css_class else "<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            text = f"{cell:.4f}" if isinstance(cell, float) else esc(cell)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def kv_table(pairs) -> str:
    """A two-column table; rows without a value are left out."""
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs
                               if v not in (None, "")) + "</table>"


class Page:
    """Sections of HTML and figures, rendered in order with plotly.js embedded by the first figure only."""

    def __init__(self, title: str, subtitle: str):
        self.title = title
        self.subtitle = subtitle
        self.blocks: list = []
        self.figures = 0
        self.hover = ""  # what hovering a point shows, said in the footer only when the page has such points

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{esc(text)}</h2>")

    def html(self, fragment: str) -> None:
        self.blocks.append(fragment)

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{esc(text)}</p>')

    def table(self, rows, *, header=None, escape: bool = True) -> None:
        """A table; with ``escape=False`` the cells are HTML already (thumbnails, links)."""
        if escape:
            self.blocks.append(html_table(rows, header=header))
            return
        head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table>{head}{body}</table>")

    def figure(self, fig) -> None:
        self.blocks.append(fig)
        self.figures += 1

    def render(self) -> str:
        body = []
        first = True
        for block in self.blocks:
            if isinstance(block, str):
                body.append(block)
                continue
            body.append('<div class="figure">' + block.to_html(
                full_html=False, include_plotlyjs=first, config=_PLOTLY_CONFIG, default_width="100%",
            ) + "</div>")
            first = False
        created = _dt.datetime.now().isoformat(timespec="seconds")
        from . import __version__

        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{_ERROR_BOX}\n"
            f"<h1>{esc(self.title)}</h1>\n<p class=\"sub\">{esc(self.subtitle)}</p>\n"
            + "\n".join(body)
            + f'\n<p class="note">Written by transfer_cache {esc(__version__)} on {esc(created)}. '
            f"Self-contained: opens offline{'; ' + esc(self.hover) if self.hover else ''}.</p>\n</body>\n</html>\n"
        )


def progress_bar(total: int, enabled: bool):
    """The progress bar a page shows on stderr while it is built (``total`` parts)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="report", unit="part", disable=not enabled, leave=False, file=sys.stderr,
                dynamic_ncols=True)
