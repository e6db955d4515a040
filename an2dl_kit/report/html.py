"""report.html: one self-contained page. Figures are embedded as data: URIs, the style sheet is inline, there
is no script, and a Content-Security-Policy forbids any request, so the page reads the same offline, printed,
or mailed as one file."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

from an2dl_kit.report.document import Figure, Section, Table, Text

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 11pt/1.45 Georgia, 'DejaVu Serif', serif; max-width: 7.2in; margin: 2em auto; padding: 0 1em;
       color: #111; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #999; margin-top: 2em; }
nav a { margin-right: .8em; }
table { border-collapse: collapse; margin: 1em 0 .3em; font-size: 9pt; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
thead th { border-top: 2px solid #111; border-bottom: 1px solid #111; }
tbody tr:last-child td { border-bottom: 2px solid #111; }
th, td { padding: .15em .6em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
ol.notes { font-size: 8.5pt; margin-top: 0; list-style: lower-alpha; }
figure { margin: 1em 0; } figure img { width: 3.3in; max-width: 100%; height: auto; }
figcaption { font-size: 9pt; font-style: italic; max-width: 3.3in; }
@media print { body { margin: 0; max-width: none; } nav { display: none; } section { break-inside: avoid-page; } }
"""


def _table(table: Table) -> str:
    notes = table.footnotes()
    numeric = table.numeric_columns()

    def cls(index: int) -> str:
        return ' class="num"' if numeric[index] else ""

    head = "".join(f"<th{cls(i)}>{escape(c)}</th>" for i, c in enumerate(table.columns))
    body = []
    for row in table.rows:
        cells = "".join(f"<td{cls(i)}>{escape(item.text())}"
                        + (f"<sup>{notes[item.note]}</sup>" if item.note else "") + "</td>"
                        for i, item in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    listed = "".join(f"<li>{escape(text)}</li>" for text in notes)
    return (f'<table id="table-{table.key}"><caption>{escape(table.caption)}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>" + (f'<ol class="notes">{listed}</ol>' if notes else ""))


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
    return (f'<figure id="figure-{figure.name}"><img src="data:image/png;base64,{data}" '
            f'alt="{escape(figure.caption)}"><figcaption>{escape(figure.caption)}</figcaption></figure>')


def _block(block) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block)
    assert isinstance(block, Text)
    return f"<p>{escape(block.text)}</p>"


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{s.key}">{escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.key}"><h2>{escape(s.title)}</h2>{"".join(_block(b) for b in s.blocks)}'
                   "</section>\n" for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body><header><h1>{escape(title)}</h1>"
            f"<p>{escape(subtitle)}</p><nav>{nav}</nav></header>\n{body}</body></html>\n")
