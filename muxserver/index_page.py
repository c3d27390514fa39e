"""The HTML index of a directory: its listing, and everything a person does there.

The page is one document with no external assets (it works offline): a table of the
directory (sizes in KiB and MiB like ``ls``, columns that sort, a filter box, the
SHA-256 of a file on demand, a zip or tar of any folder), uploads of files and whole
folders (picked, or dropped on the page) through tus in pieces of 8 MiB, each with its
own bar, rate and time left, and, where the server's rights allow, "new folder",
rename and delete (what is not allowed is not shown). It follows the system's dark
mode and fits a phone.

Uploads are resumable: the page remembers each unfinished upload (in the browser's
localStorage, by the file's path, size and date), and when the same file is picked or
dropped again, after a reload, a lost network or a closed laptop lid, it asks the
server how much it holds and sends only the rest. Every piece carries its SHA-256,
computed in the page (``crypto.subtle``: browsers offer it on HTTPS and on localhost;
elsewhere pieces go without one), and the server checks it before it keeps the piece;
the whole file's SHA-256 is computed by the server when the last piece arrives.

Every name is escaped for HTML and every link percent-encoded; the script builds rows
with ``textContent``, never ``innerHTML``. ``http_folders.py`` sends the page in pieces: a head,
``ROWS_PER_STEP`` rows per loop step, a tail. The rows come in directory order; the
script sorts them (folders first).
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import time
import urllib.parse
from typing import Any

from . import __version__
from .names import printable
from .units import format_bytes

#: The index page's own policy: its inline script and style, requests to this origin.
INDEX_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
             "base-uri 'none'; frame-ancestors 'none'")

#: The places in HEAD filled in for each page.
_SLOT = re.compile(r"\{(title|crumbs|settings|newfolder|reading)\}")

#: Rows rendered per loop step: a directory of 100,000 entries must not hold the loop.
ROWS_PER_STEP = 500


@dataclasses.dataclass(frozen=True)
class PageRights:
    """What the page offers: only what the request's grant allows."""

    read: bool = True
    write: bool = True
    delete: bool = False
    replace: bool = False


def index_head(name: str, rights: PageRights = PageRights()) -> str:
    """The page up to its first row (and the row to the parent directory)."""
    title = "/" + name + ("/" if name else "")
    settings = {"dir": name, "base": urllib.parse.quote(title), "read": rights.read,
                "write": rights.write, "delete": rights.delete, "replace": rights.replace}
    values = {"title": html.escape(printable(title)), "crumbs": breadcrumbs(name),
              "settings": html.escape(json.dumps(settings), quote=True),
              "newfolder": "" if rights.write and rights.read else " hidden",
              "reading": "" if rights.read else " hidden"}
    # One pass: a folder named "{settings}" stays a name.
    head = _SLOT.sub(lambda slot: values[slot.group(1)], HEAD)
    if name:
        parent = "/" + name.rsplit("/", 1)[0] + "/" if "/" in name else "/"
        head += (f'<tr class="up"><td colspan="4"><a href="'
                 f'{html.escape(urllib.parse.quote(parent))}">../ (up)</a></td></tr>\n')
    return head


def breadcrumbs(name: str) -> str:
    """The path of the folder, each part a link to that folder: / photos / 2024 /"""
    links = ['<a href="/" aria-label="the top folder">/</a>']
    parts = name.split("/") if name else []
    for depth, part in enumerate(parts, 1):
        href = html.escape(urllib.parse.quote("/" + "/".join(parts[:depth]) + "/"))
        current = ' aria-current="page"' if depth == len(parts) else ""
        links.append(f'<a href="{href}"{current}>{html.escape(printable(part))}</a>/')
    return "".join(links)


def index_rows(entries: list[dict[str, Any]]) -> str:
    """Table rows, in the order given (the page's script sorts them: folders first)."""
    rows = []
    for entry in entries:
        leaf = entry["name"].rsplit("/", 1)[-1]
        is_dir = entry["type"] == "dir"
        href = html.escape(urllib.parse.quote("/" + entry["name"] + ("/" if is_dir else "")))
        label = html.escape(printable(leaf) + ("/" if is_dir else ""))
        size = format_bytes(entry["size"]) if entry["type"] == "file" else ""
        when = time.strftime('%Y-%m-%d <span class="hm">%H:%M</span>',
                             time.localtime(entry["mtime"]))
        rows.append(f'<tr data-dir="{int(is_dir)}" data-name="{html.escape(leaf)}" '
                    f'data-size="{entry["size"]}" data-mtime="{entry["mtime"]:.0f}">'
                    f'<td class="name"><a href="{href}">{label}</a></td>'
                    f'<td class="num">{size}</td><td class="when">{when}</td>'
                    f'<td class="acts"></td></tr>\n')
    return "".join(rows)


def index_tail(name: str, count: int, error: str = "", drop_box: bool = False,
               left_out: str = "") -> str:
    """The rest of the page after ``count`` rows; ``error``: why the listing stopped
    short (the status line was sent already, so the page itself says it); ``drop_box``:
    the server takes uploads and shows nothing; ``left_out``: what the listing did not
    show, and why."""
    rows = ""
    if drop_box:
        rows = ('<tr class="note"><td colspan="4">This is a drop box: you can upload files '
                'here, but not see what is in it.</td></tr>\n')
    elif error:
        rows = (f'<tr class="note err"><td colspan="4">The listing is incomplete: '
                f'{html.escape(error)}</td></tr>\n')
    elif not count and not left_out:
        rows = '<tr class="note empty"><td colspan="4">This folder is empty.</td></tr>\n'
    if left_out and not drop_box:
        rows += f'<tr class="note"><td colspan="4">{html.escape(left_out)}.</td></tr>\n'
    return rows + TAIL.replace("{version}", __version__)


HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} - muxserver</title>
<link rel="icon" href="data:,">
<style>
:root { --folder: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath fill='%23e8a33d' d='M2 5.5A1.5 1.5 0 0 1 3.5 4h5l2 2.5h10A1.5 1.5 0 0 1 22 8v10.5a1.5 1.5 0 0 1-1.5 1.5h-17A1.5 1.5 0 0 1 2 18.5z'/%3E%3C/svg%3E");
        --file: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath fill='none' stroke='%238a9099' stroke-width='1.6' d='M6 2.8h8l4.2 4.2v14.2H6z M14 2.8V7h4.2'/%3E%3C/svg%3E"); }
:root { --fg: #1b1b1b; --bg: #fff; --muted: #5f6368; --line: #e2e4e8; --accent: #0b57d0;
        --ok: #136f2d; --err: #b3261e; --panel: #f5f7fa; --focus: #ffbf47; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e6e6; --bg: #15171a; --muted: #a0a4ab; --line: #2c3036; --accent: #8ab4f8;
          --ok: #81c995; --err: #f28b82; --panel: #1e2126; }
}
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: var(--fg); background: var(--bg); }
main { max-width: 64rem; margin: 0 auto; padding: 1rem; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center;
         justify-content: space-between; }
h1 { font-size: 1.25rem; margin: .25rem 0; overflow-wrap: anywhere; }
h1 a[aria-current] { color: var(--fg); }
.muted { color: var(--muted); font-weight: normal; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 1px; }
button, .button { font: inherit; color: var(--fg); background: var(--panel);
  border: 1px solid var(--line); border-radius: 6px; padding: .3rem .7rem; cursor: pointer; }
button:hover, .button:hover { border-color: var(--accent); text-decoration: none; }
.small { padding: .1rem .45rem; font-size: .85rem; }
.toolbar { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .75rem 0; }
#filter { flex: 1 1 12rem; font: inherit; padding: .35rem .6rem; color: var(--fg);
          background: var(--bg); border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line); }
th button { background: none; border: 0; padding: 0; font-weight: 600; }
th[aria-sort="ascending"] button::after { content: " \\2191"; }
th[aria-sort="descending"] button::after { content: " \\2193"; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.when { color: var(--muted); white-space: nowrap; }
td.name { overflow-wrap: anywhere; }
td.name a::before { content: ""; display: inline-block; width: 1.1em; height: 1.1em;
  margin-right: .4em; vertical-align: -.2em; background: var(--file) no-repeat center/contain; }
tr[data-dir="1"] td.name a::before { background-image: var(--folder); }
tr.up td.name a::before, tr.up a::before { display: none; }
td.acts { text-align: right; white-space: nowrap; }
td.acts button, td.acts a { margin-left: .25rem; }
tr.note td { color: var(--muted); font-style: italic; }
tr[hidden] { display: none; }
code.sha { font-size: .8rem; word-break: break-all; }
#drop { margin-top: 1.25rem; padding: 1rem; border: 2px dashed var(--line); border-radius: 10px;
        background: var(--panel); }
body.dragging #drop { border-color: var(--accent); }
#drop h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
#uploads { list-style: none; padding: 0; margin: .5rem 0 0; }
#uploads li { display: grid; grid-template-columns: 1fr auto; gap: .15rem .75rem;
              padding: .4rem 0; border-bottom: 1px solid var(--line); }
#uploads progress { grid-column: 1 / -1; width: 100%; height: .6rem; }
#uploads .state { color: var(--muted); font-variant-numeric: tabular-nums; }
.ok { color: var(--ok); } .err { color: var(--err); }
#message { min-height: 1.5em; }
footer { color: var(--muted); font-size: .8rem; margin-top: 1.5rem; }
@media (max-width: 40rem) {  /* a phone: each entry two lines, its name whole on the first */
  main { padding: .6rem; }
  thead tr { display: flex; gap: 1rem; }
  thead th { border: 0; padding: .3rem .2rem; }
  thead th:last-child { display: none; }
  #entries tr[data-name] { display: grid; grid-template-columns: auto 1fr auto; align-items: center;
                           column-gap: .5rem; border-bottom: 1px solid var(--line); padding: .3rem 0; }
  #entries tr[data-name] td { border: 0; padding: .1rem 0; }
  #entries td.acts .small { font-size: .8rem; padding: .1rem .35rem; }
  #entries tr[data-name][hidden] { display: none; }
  #entries td.name { grid-column: 1 / -1; }
  #entries td.num { text-align: left; font-size: .85rem; color: var(--muted); }
  #entries td.when { font-size: .85rem; }
  #entries td.when .hm { display: none; }
  #entries td.acts { white-space: normal; grid-column: 3; justify-self: end; }
  #entries tr[data-dir="1"] td.num { display: none; }
}
</style></head>
<body data-settings="{settings}">
<main>
<header><h1><span class="muted">Index of</span> {crumbs}</h1>
<div{reading}><a class="button" href="?download=zip" download>Download folder (zip)</a>
<a class="button" href="?download=tar" download>(tar)</a></div></header>
<div class="toolbar">
<input id="filter" type="search" placeholder="Filter names" aria-label="Filter names"{reading}>
<button id="newfolder" type="button"{newfolder}>New folder</button>
<span id="summary" class="muted"{reading}></span>
</div>
<div id="message" role="status" aria-live="polite"></div>
<table><thead><tr>
<th scope="col" data-key="name" aria-sort="ascending"><button type="button">Name</button></th>
<th scope="col" class="num" data-key="size"><button type="button">Size</button></th>
<th scope="col" class="when" data-key="mtime"><button type="button">Modified</button></th>
<th scope="col"><span hidden>Actions</span></th></tr></thead>
<tbody id="entries">
"""

TAIL = """</tbody></table>
<section id="drop" aria-labelledby="up">
<h2 id="up">Upload here</h2>
<p>Drop files or folders anywhere on this page, or choose them:
<button id="pick-files" type="button">Files…</button>
<input id="files" type="file" multiple hidden>
<button id="pick-folder" type="button">A folder…</button>
<input id="folder" type="file" webkitdirectory multiple hidden></p>
<p id="resumable" hidden></p>
<ul id="uploads" aria-live="polite"></ul>
</section>
<footer>muxserver {version}: every file is checked with SHA-256; uploads resume where
they stopped.</footer>
</main>
<script>
"use strict";
const cfg = JSON.parse(document.body.dataset.settings);
const body = document.getElementById("entries");
const message = document.getElementById("message");
const TUS = {"Tus-Resumable": "1.0.0"};
const PIECE = 8 * 1024 * 1024;
const KEY = "muxserver-upload:";
const RETRIES = [1, 2, 4, 8, 16];  // seconds to wait before asking again after a lost connection
document.getElementById("drop").hidden = !cfg.write;

function human(n) {  // the units of ls and the console: B, KiB, MiB, GiB
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? n.toFixed(1) + " " + units[i] : n + " B";
}
function duration(s) {
  if (!isFinite(s) || s < 0) return "";
  s = Math.round(s);
  return s >= 3600 ? Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"
       : s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}
function say(text, kind) { message.textContent = text; message.className = kind || ""; }
function why(status, text) {  // the server's sentence, said once, without its number
  return (text || "").replace(/^\\d{3} /, "").trim() || ("HTTP " + status);
}
function urlOf(name, dir) {
  return cfg.base + encodeURIComponent(name).replace(/%2F/g, "/") + (dir ? "/" : "");
}

// ---- the table: sorting, filtering, actions, refreshing after changes
let sortKey = "name", sortDir = 1;
function summarize() {  // "2 folders, 5 files, 24.3 MiB"
  let dirs = 0, files = 0, bytes = 0;
  for (const row of body.querySelectorAll("tr[data-name]")) {
    if (row.hidden) continue;
    if (row.dataset.dir === "1") dirs++; else { files++; bytes += +row.dataset.size; }
  }
  const count = (n, what) => n + " " + what + (n === 1 ? "" : "s");
  document.getElementById("summary").textContent =
    count(dirs, "folder") + ", " + count(files, "file") + ", " + human(bytes);
}
function sortRows() {
  const rows = Array.from(body.querySelectorAll("tr[data-name]"));
  const value = r => sortKey === "name" ? r.dataset.name.toLowerCase() : +r.dataset[sortKey];
  rows.sort((a, b) => (b.dataset.dir - a.dataset.dir)
    || (value(a) < value(b) ? -sortDir : value(a) > value(b) ? sortDir : 0));
  for (const row of rows) body.append(row);
  for (const note of body.querySelectorAll("tr.note")) body.append(note);
}
for (const th of document.querySelectorAll("th[data-key]")) {
  th.querySelector("button").addEventListener("click", () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1;
    sortKey = th.dataset.key;
    for (const other of document.querySelectorAll("th[data-key]")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
    sortRows();
  });
}
const filter = document.getElementById("filter");
function applyFilter() {
  const wanted = filter.value.trim().toLowerCase();
  for (const row of body.querySelectorAll("tr[data-name]")) {
    row.hidden = wanted !== "" && !row.dataset.name.toLowerCase().includes(wanted);
  }
  summarize();
}
filter.addEventListener("input", applyFilter);

function button(label, title, action) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "small"; b.textContent = label; b.title = title;
  b.addEventListener("click", action);
  return b;
}
function addActions(row) {
  const cell = row.querySelector("td.acts");
  const name = row.dataset.name, dir = row.dataset.dir === "1";
  if (dir) {
    const zip = document.createElement("a");
    zip.href = urlOf(name, true) + "?download=zip"; zip.textContent = "zip";
    zip.title = "download " + name + " as one zip"; zip.className = "button small";
    zip.setAttribute("download", "");
    cell.append(zip);
  } else {
    cell.append(button("SHA-256", "show the SHA-256 of " + name, () => showHash(row)));
  }
  if (cfg.delete && cfg.write) cell.append(button("Rename", "rename " + name, () => rename(row)));
  if (cfg.delete) cell.append(button("Delete", "delete " + name, () => remove(row)));
}
async function showHash(row) {
  const name = row.dataset.name;
  say("hashing " + name + "…");
  const r = await fetch(urlOf(name), {method: "HEAD", cache: "no-store"});
  const sha = (r.headers.get("ETag") || "").replace(/"/g, "");
  if (!r.ok || !sha) { say(name + ": " + why(r.status, ""), "err"); return; }
  const cell = row.querySelector("td.name");
  let code = cell.querySelector("code.sha");
  if (!code) {
    code = document.createElement("code"); code.className = "sha";
    cell.append(document.createElement("br"), code);
    const copy = button("Copy", "copy the SHA-256", async () => {
      try { await navigator.clipboard.writeText(sha); say("copied the SHA-256 of " + name, "ok"); }
      catch (e) { window.getSelection().selectAllChildren(code); say("selected: press Ctrl-C to copy"); }
    });
    cell.append(" ", copy);
  }
  code.textContent = sha;
  say("");
}
async function rename(row) {
  const old = row.dataset.name, dir = row.dataset.dir === "1";
  const fresh = prompt("New name for " + old, old);
  if (!fresh || fresh === old) return;
  const r = await fetch(urlOf(old, dir), {method: "MOVE", headers: {
    "Destination": urlOf(fresh, dir), "Overwrite": "F"}});
  if (r.ok) { say("renamed " + old + " to " + fresh, "ok"); refresh(); }
  else say(r.status === 412 ? fresh + " exists already" : old + ": " + why(r.status, await r.text()), "err");
}
async function remove(row) {
  const name = row.dataset.name, dir = row.dataset.dir === "1";
  if (!confirm("Delete " + name + (dir ? " and everything in it" : "") + "?")) return;
  const r = await fetch(urlOf(name, dir), {method: "DELETE"});
  if (r.ok) { say("deleted " + name, "ok"); refresh(); }
  else say(name + ": " + why(r.status, await r.text()), "err");
}
document.getElementById("newfolder").addEventListener("click", async () => {
  const name = prompt("Name of the new folder");
  if (!name) return;
  const r = await fetch(urlOf(name, true), {method: "MKCOL"});
  if (r.ok) { say("made " + name + "/", "ok"); refresh(); }
  else say(r.status === 405 ? name + " exists already" : name + ": " + why(r.status, await r.text()), "err");
});

function stamp(row) {  // the time of a row in this browser's time zone: 2026-11-25 17:34
  const d = new Date(row.dataset.mtime * 1000), two = n => String(n).padStart(2, "0");
  const hm = document.createElement("span"); hm.className = "hm";
  hm.textContent = two(d.getHours()) + ":" + two(d.getMinutes());
  row.querySelector("td.when").replaceChildren(
    d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " ", hm);
}
function rowFor(entry) {
  const leaf = entry.name.split("/").pop(), dir = entry.type === "dir";
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, {dir: dir ? "1" : "0", name: leaf, size: entry.size,
                             mtime: Math.round(entry.mtime)});
  const link = document.createElement("a");
  link.href = urlOf(leaf, dir); link.textContent = leaf + (dir ? "/" : "");
  const cells = [link, entry.type === "file" ? human(entry.size) : "", "", ""];
  ["name", "num", "when", "acts"].forEach((cls, i) => {
    const td = document.createElement("td"); td.className = cls; td.append(cells[i]); tr.append(td);
  });
  stamp(tr);
  addActions(tr);
  return tr;
}
async function refresh() {
  if (!cfg.read) return;  // (a drop box: nothing to show)
  const r = await fetch(cfg.base + "?format=json", {cache: "no-store"});
  if (!r.ok) return;
  const listing = await r.json();
  for (const row of body.querySelectorAll("tr[data-name], tr.empty")) row.remove();
  for (const entry of listing.entries) body.append(rowFor(entry));
  sortRows(); applyFilter();
}
for (const row of body.querySelectorAll("tr[data-name]")) { addActions(row); stamp(row); }
sortRows(); summarize();

// ---- uploads: tus, in pieces, each with its SHA-256; resumed from where they stopped
function b64(bytes) { let s = ""; for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b); return btoa(s); }
function b64text(text) { return b64(new TextEncoder().encode(text)); }
function remembered(file, target) { return KEY + target + "|" + file.size + "|" + file.lastModified; }
function patch(url, offset, data, checksum, onProgress) {
  return new Promise(resolve => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    xhr.setRequestHeader("Tus-Resumable", "1.0.0");
    xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
    xhr.setRequestHeader("Upload-Offset", String(offset));
    if (checksum) xhr.setRequestHeader("Upload-Checksum", "sha256 " + checksum);
    xhr.upload.onprogress = e => onProgress(e.loaded);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = xhr.onabort = () => resolve(null);
    xhr.send(data);
  });
}
async function heldOf(url) {  // what the server holds of an upload; null: nothing (any more)
  for (let waits = 0; ; waits++) {
    const h = await fetch(url, {method: "HEAD", headers: TUS, cache: "no-store"}).catch(() => null);
    if (!h || h.status !== 423 || waits >= 60) return h && h.ok ? +h.headers.get("Upload-Offset") : null;
    // 423: a request of ours that the network lost is still writing it on the server
    await new Promise(wake => setTimeout(wake, 1000 * (+h.headers.get("Retry-After") || 1)));
  }
}
function uploadItem(label, size) {
  const li = document.createElement("li");
  const name = document.createElement("span"); name.textContent = label;
  const state = document.createElement("span"); state.className = "state"; state.textContent = "waiting";
  const bar = document.createElement("progress"); bar.max = size || 1; bar.value = 0;
  bar.setAttribute("aria-label", "upload of " + label);
  li.append(name, state, bar);
  document.getElementById("uploads").append(li);
  return {li, state, bar};
}
async function upload(file, relative) {
  const target = cfg.dir ? cfg.dir + "/" + relative : relative;
  const ui = uploadItem(relative, file.size);
  const key = remembered(file, target);
  let url = localStorage.getItem(key), offset = 0;
  if (url) {
    const held = await heldOf(url);
    if (held === null) url = null; else offset = held;
  }
  if (!url) {
    const meta = "filename " + b64text(target) + (cfg.replace ? ",overwrite " + b64text("1") : "");
    const r = await fetch("/.tus/", {method: "POST", headers: Object.assign(
      {"Upload-Length": String(file.size), "Upload-Metadata": meta}, TUS)});
    if (!r.ok) {
      ui.state.className = "state err";
      ui.state.textContent = r.status === 409 ? relative + " exists; the server does not overwrite files"
                                              : why(r.status, await r.text());
      return false;
    }
    url = r.headers.get("Location");
    localStorage.setItem(key, url);
  } else if (offset) {
    ui.state.textContent = "resuming at " + human(offset);
  }
  const started = performance.now(), from = offset;
  let rate = 0, damaged = 0, lost = 0;
  do {
    const piece = await file.slice(offset, offset + PIECE).arrayBuffer();
    const checksum = crypto.subtle ? b64(await crypto.subtle.digest("SHA-256", piece)) : null;
    const xhr = await patch(url, offset, piece, checksum, loaded => {
      const done = offset + loaded, seconds = (performance.now() - started) / 1000;
      rate = seconds > 0.5 ? (done - from) / seconds : rate;
      ui.bar.value = done;
      ui.state.textContent = Math.floor(100 * done / (file.size || 1)) + " %  " +
        (rate ? human(rate) + "/s, " + duration((file.size - done) / rate) + " left" : "");
    });
    if (!xhr) {  // the network went away: ask again a few times, then leave it to the person
      if (++lost > RETRIES.length) { ui.state.className = "state err";
        ui.state.textContent = "connection lost at " + human(offset) + ": choose the file again to resume";
        return false; }
      ui.state.textContent = "connection lost; trying again in " + RETRIES[lost - 1] + " s";
      await new Promise(wake => setTimeout(wake, RETRIES[lost - 1] * 1000));
      const held = await heldOf(url);
      if (held !== null) offset = held;
      continue;
    }
    lost = 0;
    if (xhr.status === 204 || xhr.status === 409) {  // (409: the server holds another amount)
      offset = +xhr.getResponseHeader("Upload-Offset");
    } else if (xhr.status === 423) {  // an earlier request of ours still writes it: wait
      const held = await heldOf(url);
      if (held !== null) offset = held;
    } else if (xhr.status !== 460 || ++damaged > 3) {  // (460: damaged on the way: again)
      ui.state.className = "state err"; ui.state.textContent = why(xhr.status, xhr.responseText);
      if (xhr.status === 404) localStorage.removeItem(key);
      return false;
    }
  } while (offset < file.size);
  localStorage.removeItem(key);
  ui.bar.value = ui.bar.max;
  ui.state.className = "state ok"; ui.state.textContent = "done, " + human(file.size) + ", verified";
  return true;
}
async function uploadAll(files) {
  let all = true;
  for (const [file, relative] of files) all = (await upload(file, relative)) && all;
  await refresh();
  showResumable();
  if (all && files.length) say(files.length + " file" + (files.length > 1 ? "s" : "") + " uploaded", "ok");
}
function picked(input) {
  const files = Array.from(input.files).map(f => [f, f.webkitRelativePath || f.name]);
  input.value = "";
  uploadAll(files);
}
for (const kind of ["files", "folder"]) {  // (buttons, not labels: reachable by keyboard)
  const input = document.getElementById(kind);
  input.addEventListener("change", () => picked(input));
  document.getElementById("pick-" + kind).addEventListener("click", () => input.click());
}

function readEntry(entry, path, out) {  // a dropped folder, all the way down
  return new Promise(resolve => {
    if (entry.isFile) { entry.file(f => { out.push([f, path + f.name]); resolve(); }, resolve); return; }
    const reader = entry.createReader();
    const more = () => reader.readEntries(async batch => {
      if (!batch.length) { resolve(); return; }
      for (const child of batch) await readEntry(child, path + entry.name + "/", out);
      more();
    }, resolve);
    more();
  });
}
if (cfg.write) {
  document.addEventListener("dragover", e => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", async e => {
    e.preventDefault(); document.body.classList.remove("dragging");
    const out = [];
    const entries = Array.from(e.dataTransfer.items || []).map(i => i.webkitGetAsEntry && i.webkitGetAsEntry());
    if (entries.every(Boolean)) { for (const entry of entries) await readEntry(entry, "", out); }
    else for (const f of e.dataTransfer.files) out.push([f, f.name]);
    uploadAll(out);
  });
}
function showResumable() {  // unfinished uploads to this folder, from before a reload
  const names = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key.startsWith(KEY)) continue;
    const target = key.slice(KEY.length).split("|")[0];
    if (target.slice(0, target.lastIndexOf("/") + 1) === (cfg.dir ? cfg.dir + "/" : "")) names.push(target.split("/").pop());
  }
  const p = document.getElementById("resumable");
  p.hidden = !names.length;
  p.textContent = names.length ? "Unfinished: " + names.join(", ") +
    ". Choose or drop the same file again: it continues where it stopped." : "";
}
showResumable();
</script>
</body></html>
"""
