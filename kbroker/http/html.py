"""HTML building blocks of the console: one page layout, tables, escaping. No external assets."""

from __future__ import annotations

from html import escape
from typing import AbstractSet
from urllib.parse import urlencode

NAV = (("/", "Topics"), ("/groups", "Consumer groups"), ("/clients", "Clients"),
       ("/configs", "Broker configs"), ("/metrics", "Metrics"))

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#23395d;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#dfe8f5;text-decoration:none}header a:hover{color:#fff}header b{font-size:1.1em}
main{padding:1em 1.2em}h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;margin:.4em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-width:60em}
.muted{color:#777}.error{color:#a00;font-weight:bold}form.inline{margin:.5em 0 1em}
form.inline label{margin-right:1em}input[type=number]{width:7em}
"""

# Value formats switch without a round trip: every value is rendered in all three, one is shown.
SCRIPT = """
function showFormat(f){document.querySelectorAll('[data-format]').forEach(function(e){
 e.hidden=e.dataset.format!==f});var s=document.getElementById('format');if(s)s.value=f;}
document.addEventListener('DOMContentLoaded',function(){var s=document.getElementById('format');
 if(!s)return;var h=location.hash.slice(1);
 s.addEventListener('change',function(){location.hash=s.value;showFormat(s.value)});
 showFormat(['text','json','hex'].indexOf(h)>=0?h:s.value)});
"""

def link(path: str, text, **query) -> str:
    target = path + ("?" + urlencode(query) if query else "")
    return f'<a href="{escape(target)}">{escape(str(text))}</a>'


def table(columns: list[str], rows: list[list], numeric: AbstractSet[str] = frozenset(),
          raw: AbstractSet[str] = frozenset()) -> str:
    """An HTML table; cells are escaped unless their column is in `raw` (already HTML)."""
    if not rows:
        return '<p class="muted">(none)</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column, cell in zip(columns, row):
            text = str(cell) if column in raw else escape("" if cell is None else str(cell))
            css = ' class="num"' if column in numeric else ""
            cells.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, body: str, cluster_id: str = "") -> str:
    nav = "".join(f'<a href="{path}">{name}</a>' for path, name in NAV)
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{escape(title)} - "
            f"kbroker</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f"<header><b>kbroker</b>{nav}<span class=muted>{escape(cluster_id)}</span></header>"
            f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")
