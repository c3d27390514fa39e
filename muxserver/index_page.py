"""The HTML index of a directory: a listing, and uploads with a progress bar per file.

No external assets (the page works offline); every name is escaped for HTML and every
link percent-encoded. ``http.py`` sends the page in pieces, ``ROWS_PER_STEP`` rows per
loop step (a head, rows, a tail), so a huge directory never holds the loop; the rows
come in directory order and the page's script sorts them, folders first.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from typing import Any

from . import __version__
from .names import printable

#: The index page's own policy: its inline script and style, requests to this origin.
INDEX_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
             "base-uri 'none'; frame-ancestors 'none'")


#: Rows rendered per loop step: a directory of 100,000 entries must not hold the loop.
ROWS_PER_STEP = 500


def index_head(name: str) -> str:
    """The page up to its first row (and the row to the parent directory)."""
    title = "/" + name + ("/" if name else "")
    head = INDEX_TEMPLATE[:INDEX_TEMPLATE.index("{rows}")].format(
        title=html.escape(printable(title)))
    if name:
        parent = "/" + name.rsplit("/", 1)[0] + "/" if "/" in name else "/"
        head += (f'<tr class="up"><td><a href="{html.escape(urllib.parse.quote(parent))}">'
                 f'../</a></td><td></td><td></td></tr>\n')
    return head


def index_rows(entries: list[dict[str, Any]]) -> str:
    """Table rows, in the order given (the page's script sorts them: folders first)."""
    rows = []
    for entry in entries:
        leaf = entry["name"].rsplit("/", 1)[-1]
        is_dir = entry["type"] == "dir"
        href = urllib.parse.quote("/" + entry["name"] + ("/" if is_dir else ""))
        label = html.escape(printable(leaf) + ("/" if is_dir else ""))
        size = "" if entry["type"] != "file" else f'{entry["size"]:,}'
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["mtime"]))
        rows.append(f'<tr data-dir="{int(is_dir)}" data-name="{html.escape(leaf)}">'
                    f'<td><a href="{html.escape(href)}">{label}</a></td>'
                    f'<td class="num">{size}</td><td>{when}</td></tr>\n')
    return "".join(rows)


def index_tail(name: str, count: int, error: str = "", drop_box: bool = False) -> str:
    """The rest of the page after ``count`` rows; ``error``: why the listing stopped
    short (the status line was sent already, so the page itself says it); ``drop_box``:
    the server takes uploads and shows nothing."""
    rows = ""
    if drop_box:
        rows = ('<tr><td colspan="3"><em>This is a drop box: you can upload files here, '
                'but not see what is in it.</em></td></tr>\n')
    elif error:
        rows = (f'<tr><td colspan="3" class="err">The listing is incomplete: '
                f'{html.escape(error)}</td></tr>\n')
    elif not count:
        rows = '<tr><td colspan="3"><em>empty</em></td></tr>\n'
    title = "/" + name + ("/" if name else "")
    base = urllib.parse.quote(title)
    tail = INDEX_TEMPLATE[INDEX_TEMPLATE.index("{rows}") + len("{rows}"):]
    return rows + tail.format(base=html.escape(base, quote=True), version=__version__)


INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - muxserver</title>
<link rel="icon" href="data:,">
<style>
body {{ font: 16px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
        padding: 0 1rem; color: #1b1b1b; background: #fff; }}
h1 {{ font-size: 1.4rem; word-break: break-all; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
a {{ color: #0645ad; }} a:focus, button:focus, input:focus {{ outline: 3px solid #ffbf47; }}
section {{ margin-top: 2rem; padding: 1rem; border: 1px solid #ccc; border-radius: 6px; }}
ul#uploads {{ list-style: none; padding: 0; }} ul#uploads li {{ margin: .4rem 0; }}
progress {{ width: 14rem; vertical-align: middle; }}
.ok {{ color: #136f2d; }} .err {{ color: #b00020; }}
</style></head>
<body>
<h1>Index of {title}</h1>
<table><thead><tr><th scope="col">Name</th><th scope="col">Size (bytes)</th>
<th scope="col">Modified</th></tr></thead>
<tbody id="entries">
{rows}</tbody></table>
<section aria-labelledby="up">
<h2 id="up">Upload to this directory</h2>
<label for="files">Files:</label>
<input id="files" type="file" multiple>
<button id="send" type="button">Upload</button>
<ul id="uploads" aria-live="polite"></ul>
</section>
<p><small>muxserver {version}</small></p>
<script>
"use strict";
const base = "{base}";
(function sortRows() {{  // the server sends rows as the directory lists them
  const body = document.getElementById("entries");
  const rows = Array.from(body.querySelectorAll("tr[data-name]"));
  const key = r => (r.dataset.dir === "1" ? "0" : "1") + r.dataset.name;
  rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  for (const row of rows) body.append(row);
}})();
function upload(file) {{
  const item = document.createElement("li");
  const bar = document.createElement("progress");
  const label = document.createElement("span");
  bar.max = file.size || 1; bar.value = 0;
  label.textContent = " " + file.name + ": waiting";
  bar.setAttribute("aria-label", "upload of " + file.name);
  item.append(bar, label);
  document.getElementById("uploads").append(item);
  return new Promise(resolve => {{
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", base + encodeURIComponent(file.name));
    xhr.upload.onprogress = e => {{
      bar.value = e.loaded;
      const percent = Math.floor(100 * e.loaded / (e.total || 1));
      label.textContent = " " + file.name + ": " + percent + " %";
    }};
    xhr.onload = () => {{
      const ok = xhr.status < 300;
      bar.value = bar.max;
      label.className = ok ? "ok" : "err";
      label.textContent = " " + file.name + ": "
        + (ok ? "done" : xhr.status + " " + xhr.responseText);
      resolve(ok);
    }};
    xhr.onerror = () => {{ label.className = "err";
      label.textContent = " " + file.name + ": connection failed"; resolve(false); }};
    xhr.send(file);
  }});
}}
document.getElementById("send").addEventListener("click", async () => {{
  const files = Array.from(document.getElementById("files").files);
  let all = true;
  for (const f of files) {{ all = (await upload(f)) && all; }}
  if (files.length && all) setTimeout(() => location.reload(), 400);
}});
</script>
</body></html>
"""
