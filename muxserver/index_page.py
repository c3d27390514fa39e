"""The HTML index of a directory: its listing, and everything a person does there.

The page is a document and two files of its own, its style and its script, in
``page/`` (package data: they can be read, linted and cached), served from this
server at ``/.muxserver-page/`` (a name no user file can have) with an ETag, so the
page works offline and its policy allows no inline script or style: uploads first (its
buttons at the top, a queue with a row per file and a line for all of them; files and
whole folders, picked or dropped on the page, through tus in pieces of 8 MiB, their
times kept; a name that is taken asked about: replace, keep both, skip), then a table of
the directory (sizes in KiB and MiB like ``ls``, how many entries each folder holds,
columns that sort, a filter box whose Enter searches below, the SHA-256 of a file on
demand, a zip or tar of any folder) and, where the server's rights allow, "new folder",
rename and delete in the page's own dialogs (what is not allowed is not shown). It
follows the system's dark mode and fits a phone (44 px controls).

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
import hashlib
import html
import importlib.resources
import json
import re
import time
import urllib.parse
from typing import Any

from . import __version__
from .names import printable
from .units import format_bytes

#: The index page's own policy: its script and style from this server only (no inline
#: code at all), requests to this origin.
INDEX_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
             "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
             "base-uri 'none'; frame-ancestors 'none'")
#: Where the page's own files are served (names.RESERVED_PREFIX: no user file's name).
ASSETS_PATH = "/.muxserver-page/"


@dataclasses.dataclass(frozen=True)
class Asset:
    """One of the page's files: its bytes, its media type, and its ETag (a digest of
    the bytes: a new version is a new ETag, and a new ``?v=`` in the page)."""

    data: bytes
    media_type: str
    etag: str


def _asset(name: str, media_type: str) -> Asset:
    data = (importlib.resources.files(__package__) / "page" / name).read_bytes()
    return Asset(data, media_type, hashlib.sha256(data).hexdigest()[:16])


#: The page's style and script, read once when the server starts.
ASSETS = {"index.css": _asset("index.css", "text/css; charset=utf-8"),
          "index.js": _asset("index.js", "text/javascript; charset=utf-8"),
          "signin.js": _asset("signin.js", "text/javascript; charset=utf-8")}
def _page(name: str) -> str:
    """One of the page's HTML files, its ``{document}`` (the ``<head>`` every page of
    ours begins with, page/document.html) filled in."""
    files = importlib.resources.files(__package__) / "page"
    document = (files / "document.html").read_text(encoding="utf-8").replace(
        "{css_version}", ASSETS["index.css"].etag)
    return (files / name).read_text(encoding="utf-8").replace("{document}\n", document, 1)


HEAD = _page("head.html")
TAIL = _page("tail.html").replace("{js_version}", ASSETS["index.js"].etag)

SIGNIN = _page("signin.html").replace("{js_version}", ASSETS["signin.js"].etag)
_SIGNIN_SLOT = re.compile(r"\{(title|note|note_class|next|form_hidden|password_hidden|"
                          r"token_hidden|switch_hidden|onward_hidden|version|recheck|onward|token)\}")

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
    who: str = ""  # who is signed in ("" on a server without accounts)
    link: bool = False  # a share link is looking
    signed_in: bool = False  # by a session cookie: the page offers "sign out"
    share: bool = False  # may make share links


def index_head(name: str, rights: PageRights = PageRights()) -> str:
    """The page up to its first row (and the row to the parent directory)."""
    title = "/" + name + ("/" if name else "")
    settings = {"dir": name, "base": urllib.parse.quote(title), "read": rights.read,
                "write": rights.write, "delete": rights.delete, "replace": rights.replace,
                "who": rights.who, "link": rights.link, "signedIn": rights.signed_in,
                "share": rights.share}
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


def signin_page(note: str, *, has_users: bool, link_refused: bool = False,
                next_url: str = "", recheck: bool = False, token: str = "",
                confirm_url: str = "") -> str:
    """The sign-in page (http_signin.py): ``note`` says why it is shown; with
    ``has_users`` it asks for a name and password first (else for a token);
    ``link_refused``: a share link did not open; ``next_url``: no form, the page moves
    on there (a share link's first answer); ``recheck``: nothing was offered, so the
    browser may be signed in already, its cookie held back (SameSite): the page asks;
    ``token``: the token field filled (a ``?token=`` link from another site, signed in
    only when the person says so); ``confirm_url``: no form, a link to go on there."""
    hidden = ' hidden'
    if token:
        has_users = False
    values = {
        "title": ("Shared with you" if next_url else "Link refused" if link_refused
                  else "Sign in"),
        "note": html.escape(note), "note_class": "err" if link_refused else "muted",
        "next": html.escape(next_url, quote=True),
        "onward": html.escape(next_url or confirm_url, quote=True),
        "token": html.escape(token, quote=True),
        "form_hidden": hidden if next_url or confirm_url else "",
        "password_hidden": "" if has_users else hidden,
        "token_hidden": hidden if has_users else "",
        "switch_hidden": "" if has_users else hidden,
        "onward_hidden": "" if next_url or confirm_url else hidden,
        "version": __version__, "recheck": "1" if recheck else ""}
    return _SIGNIN_SLOT.sub(lambda slot: values[slot.group(1)], SIGNIN)
