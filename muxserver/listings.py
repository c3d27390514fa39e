"""A directory listing over HTTP, in the form the client asked for: the HTML index page
for a browser, JSON (``?format=json``) for programs, plain text for curl (``Accept:
text/plain``, or ``?format=text``).

Each form is written in three parts (head, rows a page at a time, tail), so ``http.py``
can send a directory of any size a page per loop step. The rows come in the order the
directory lists them; the HTML page's script sorts them. An error in the middle of a
listing (the status line was sent long before) ends it with the form's own way of
saying "incomplete".
"""

from __future__ import annotations

import json
import time
from typing import Any

from .index_page import INDEX_CSP, PageRights, index_head, index_rows, index_tail
from .names import printable
from .units import format_bytes


class HtmlListing:
    media_type = "text/html; charset=utf-8"
    headers = [("Content-Security-Policy", INDEX_CSP)]

    def __init__(self, name: str, rights: PageRights = PageRights()) -> None:
        self.name = name
        self.rights = rights

    def head(self) -> str:
        return index_head(self.name, self.rights)

    def rows(self, entries: list[dict[str, Any]], first: bool) -> str:
        return index_rows(entries)

    def tail(self, count: int, error: str) -> str:
        return index_tail(self.name, count, error)


class JsonListing:
    """``{"path": ..., "entries": [...]}``; an incomplete one also has "error"."""

    media_type = "application/json"
    headers: list[tuple[str, str]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def head(self) -> str:
        return '{"path": ' + json.dumps(self.name, ensure_ascii=False) + ', "entries": ['

    def rows(self, entries: list[dict[str, Any]], first: bool) -> str:
        text = ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries)
        return ("\n" if first else ",\n") + text if entries else ""

    def tail(self, count: int, error: str) -> str:
        if error:
            return "\n], " + '"error": ' + json.dumps(error, ensure_ascii=False) + "}\n"
        return "\n]}\n"


class TextListing:
    """One line per entry, as ``python -m muxserver ls`` prints them."""

    media_type = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def head(self) -> str:
        return ""

    def rows(self, entries: list[dict[str, Any]], first: bool) -> str:
        lines = []
        for entry in entries:
            size = format_bytes(entry["size"]) if entry["type"] == "file" else "-"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["mtime"]))
            slash = "/" if entry["type"] == "dir" else ""
            lines.append(f"{size:>10}  {when}  {printable(entry['name'])}{slash}\n")
        return "".join(lines)

    def tail(self, count: int, error: str) -> str:
        return f"# the listing is incomplete: {error}\n" if error else ""


Listing = HtmlListing | JsonListing | TextListing


def listing_for(name: str, query: dict[str, str], accept: str,
                rights: PageRights) -> Listing:
    """The form a request asked for: ?format=json or text, else by Accept, else HTML."""
    wanted = query.get("format", "")
    if wanted == "json":
        return JsonListing(name)
    if wanted == "text" or ("text/plain" in accept and "text/html" not in accept):
        return TextListing(name)
    return HtmlListing(name, rights)
