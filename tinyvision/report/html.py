"""One self-contained HTML page: inline CSS, plots as base64 PNG data URIs, no scripts, no links."""
from __future__ import annotations

import base64
from html import escape

from .document import Code, Document, Heading, Plot, Table, Text

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d1d1f; background: #fff; max-width: 1120px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: .3em; }
th, td { border: 1px solid #ddd; padding: .25em .7em; }
th { background: #f3f4f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0 1.5em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; }
p.note { background: #fff7e6; border-left: 4px solid #f0a020; padding: .4em .8em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .88em; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows, numeric = [], table.numeric()
    for cells in table.cells():
        tds = "".join(f'<td class="num">{escape(c)}</td>' if right else f"<td>{escape(c)}</td>"
                      for c, right in zip(cells, numeric))
        rows.append(f"<tr>{tds}</tr>")
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _block(block: object) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{escape(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f'<p class="note">{escape(block.text)}</p>' if block.note else f"<p>{escape(block.text)}</p>"
    if isinstance(block, Table):
        return html_table(block)
    if isinstance(block, Plot):
        caption = f"<figcaption>{escape(block.caption)}</figcaption>" if block.caption else ""
        return (f'<figure><img src="{data_uri(block.png)}" alt="{escape(block.caption or block.name)}">'
                f"{caption}</figure>")
    if isinstance(block, Code):
        return f"<pre><code>{escape(block.text)}</code></pre>"
    raise TypeError(f"not a report block: {type(block).__name__}")


def render_html(doc: Document) -> str:
    body = "\n".join(_block(b) for b in doc.blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n'  # no favicon request, even offline
            f"<title>{escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(doc.title)}</h1>\n{body}\n</body>\n</html>\n")
