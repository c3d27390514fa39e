"""A directory listing over HTTP, in the form the client asked for: the HTML index page
for a browser, JSON (``?format=json``) for programs, plain text for curl (``Accept:
text/plain``, or ``?format=text``).

Each form is written in three parts (head, rows a page at a time, tail), so ``http_folders.py``
can send a directory of any size a page per loop step. The rows come in the order the
directory lists them; the HTML page's script sorts them. An error in the middle of a
listing (the status line was sent long before) ends it with the form's own way of
saying "incomplete".
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Callable, ContextManager, Generator

from .index_page import INDEX_CSP, PageRights, index_head, index_rows, index_tail
from .names import printable
from .storage import Entry, LeftOut
from .units import format_bytes

log = logging.getLogger("muxserver")


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

    def tail(self, count: int, error: str, left_out: str = "") -> str:
        return index_tail(self.name, count, error, left_out=left_out)


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

    def tail(self, count: int, error: str, left_out: str = "") -> str:
        more = (', "error": ' + json.dumps(error, ensure_ascii=False) if error else "") + (
            ', "left_out": ' + json.dumps(left_out, ensure_ascii=False) if left_out else "")
        return "\n]" + more + "}\n"


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

    def tail(self, count: int, error: str, left_out: str = "") -> str:
        return (f"# the listing is incomplete: {error}\n" if error else "") + (
            f"# {left_out}\n" if left_out else "")


Listing = HtmlListing | JsonListing | TextListing


class LeftOutLog:
    """The entries a listing or an archive left out (storage.LeftOut: names the rules
    refuse, put there by other programs): counted, the first ``KEEP`` remembered with
    their reasons, one log line at the end. ``archive``: "zip" or "tar", or "" for a
    listing; ``wire``: "HTTP " or "" (the native protocol)."""

    KEEP = 1000  # names remembered (an archive lists them in a member of its own)

    def __init__(self, peer: str, conn: int, wire: str, path: str, archive: str = "") -> None:
        self.peer, self.conn, self.wire, self.path, self.archive = peer, conn, wire, path, archive
        self.count = 0
        self.kept: list[LeftOut] = []

    def add(self, entry: LeftOut) -> None:
        self.count += 1
        if len(self.kept) < self.KEEP:
            self.kept.append(entry)

    def report(self) -> None:
        if not self.count:
            return
        first = ", ".join(entry.name for entry in self.kept[:5])
        extra = {"event": "refused", "conn": self.conn}
        if self.archive:
            log.warning("%s HTTP %s archive of %s: left out %d entries whose names are not "
                        "allowed here, first %s", self.peer, self.archive,
                        printable(self.path or "/"), self.count, first, extra=extra)
        else:
            log.warning("%s %slisting of %s: left out %d entries whose names are not "
                        "allowed here, first %s", self.peer, self.wire,
                        printable(self.path or "/"), self.count, first, extra=extra)

    def sentence(self) -> str:
        """What a reader of the listing is told."""
        return (f"{self.count} {'entry' if self.count == 1 else 'entries'} left out: "
                "their names are not allowed here (put there by another program)")

    def text(self) -> str:
        """The whole account, one line per entry (an archive's member of its own)."""
        lines = [f"muxserver left out of this archive {self.count} "
                 f"{'entry' if self.count == 1 else 'entries'} whose names it does not "
                 "serve (they break its name rules; another program put them there):", ""]
        lines += [f"{entry.name}\t{entry.why}" for entry in self.kept]
        if self.count > len(self.kept):
            lines.append(f"... and {self.count - len(self.kept)} more")
        return "\n".join(lines) + "\n"


def listing_for(name: str, query: dict[str, str], accept: str,
                rights: PageRights) -> Listing:
    """The form a request asked for: ?format=json or text, else by Accept, else HTML."""
    wanted = query.get("format", "")
    if wanted == "json":
        return JsonListing(name)
    if wanted == "text" or ("text/plain" in accept and "text/html" not in accept):
        return TextListing(name)
    return HtmlListing(name, rights)


def passed_through(entries: Generator[Entry, None, None], change: Callable[[Entry], Entry],
                   *, last: Callable[[Entry], bool] = lambda entry: False,
                   guard: Callable[[], ContextManager[None]] = contextlib.nullcontext
                   ) -> Generator[Entry, None, None]:
    """A listing's walk seen through ``change`` (an entry, another, or None: a unit of
    work that shows nothing, so a step stays bounded), ending after the entry ``last``
    says is the last; errors of the walk raised inside ``guard()``. Begun, as
    iter_entries' walks are: closing it, even before its first entry, closes the walk."""
    def walk() -> Generator[Entry, None, None]:
        try:
            yield None
            with guard():
                for entry in entries:
                    entry = change(entry)
                    yield entry
                    if last(entry):
                        return
        finally:
            entries.close()

    walked = walk()
    next(walked)
    return walked
