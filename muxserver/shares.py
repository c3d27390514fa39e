"""Share links: a URL that opens one file or one folder, read-only, or a drop box into
one folder, for anyone who has it, until it expires or is revoked.

A link is a capability: what it opens, its rights and its expiry are in the link itself,
signed with the server secret (seals.py), so a changed byte or a made-up link is refused
without looking anything up. What the server must remember is which links exist and
which were revoked (``share --list``, ``share --revoke ID``): the book, a file of JSON
lines in the served root (``.muxserver-shares``, a name no request can reach), appended
to and never rewritten, so that every process and every server on the same root sees
the same links. Like the user file it is read again when it changed, at most about once
a second, and at once when a well-signed link is not in it yet (made a moment ago by
another process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import time
from typing import Callable

from .seals import SHARE, Seal

log = logging.getLogger("muxserver")

BOOK_NAME = ".muxserver-shares"
DEFAULT_EXPIRY = 7 * 86400
MAX_EXPIRY = 366 * 86400
CHECK_INTERVAL = 1.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    id: str
    path: str  # the file or folder below the root ("" is the root)
    write: bool  # a drop box into the folder (else read-only)
    expires: float  # time.time()
    file: bool  # it opens one file (else a folder)
    by: str = ""  # who made it (the label of its maker's account)
    made: float = 0.0

    def fields(self) -> dict[str, object]:
        return {"id": self.id, "name": self.path, "write": self.write,
                "expires": self.expires, "file": self.file, "by": self.by, "made": self.made}


def parse_expiry(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``2w``, ``3600`` (seconds): how long a link lives;
    ValueError for anything else, or for more than a year."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration: say 30m, 12h, 7d or 2w")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_EXPIRY:
        raise ValueError("a link lives at least a second and at most a year")
    return seconds


class ShareBook:
    """The links made and revoked (see the module docstring)."""

    def __init__(self, path: str, seal: Seal, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self.seal = seal
        self._clock, self._wall = clock, wall
        self._links: dict[str, Link] = {}
        self._revoked: set[str] = set()
        self._identity: tuple[int, ...] | None = None
        self._checked = -CHECK_INTERVAL
        self._refresh(force=True)

    # -- making and revoking

    def make(self, path: str, *, write: bool, file: bool, lifetime: float,
             by: str) -> tuple[Link, str]:
        """A new link, written to the book; (the link, its capability for the URL).
        OSError if the book cannot be written."""
        now = self._wall()
        link = Link(secrets.token_hex(6), path, write, round(now + lifetime), file, by,
                    round(now))
        self._append({"made": link.fields()})
        self._links[link.id] = link
        return link, self.capability(link)

    def capability(self, link: Link) -> str:
        return self.seal.sign(SHARE, [link.id, link.path, int(link.write), link.expires,
                                      int(link.file)])

    def revoke(self, link_id: str) -> None:
        self._append({"revoked": link_id})
        self._revoked.add(link_id)

    def links(self, by: str | None = None) -> list[Link]:
        """The links not revoked and not expired, oldest first; only ``by``'s if given."""
        self._refresh()
        now = self._wall()
        return [link for link in self._links.values()
                if link.id not in self._revoked and link.expires > now
                and (by is None or link.by == by)]

    def find(self, link_id: str) -> Link | None:
        self._refresh()
        return self._links.get(link_id)

    # -- checking

    def check(self, capability: str) -> Link | str:
        """The link a capability stands for, or why it opens nothing (a sentence)."""
        fields = self.seal.open(SHARE, capability)
        if (fields is None or len(fields) != 5 or not isinstance(fields[0], str)
                or not isinstance(fields[1], str) or not isinstance(fields[3], (int, float))):
            return "this link is not valid: it was changed, cut short or made up"
        link_id, path, write, expires, file = fields
        if expires <= self._wall():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
            return f"this link expired on {when}"
        self._refresh()
        if link_id not in self._links and link_id not in self._revoked:
            self._refresh(force=True)  # (made a moment ago by another process?)
        if link_id in self._revoked or link_id not in self._links:
            return "this link was revoked by the person who shared it"
        return Link(link_id, path, bool(write), expires, bool(file),
                    self._links[link_id].by, self._links[link_id].made)

    # -- the file

    def _append(self, record: dict[str, object]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)  # (one write of one line: O_APPEND keeps lines whole)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._links, self._revoked, self._identity = {}, set(), None
            return
        except OSError as exc:
            log.warning("cannot read the share links %s: %s", self.path, exc.strerror)
            return
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._identity:
            return
        links: dict[str, Link] = {}
        revoked: set[str] = set()
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    _read_record(line, links, revoked)
        except OSError as exc:
            log.warning("cannot read the share links %s: %s", self.path, exc.strerror)
            return
        self._identity, self._links, self._revoked = identity, links, revoked


def _read_record(line: str, links: dict[str, Link], revoked: set[str]) -> None:
    """One line of the book; a line that is not one (cut short by a crash) is skipped."""
    try:
        record = json.loads(line)
        if "made" in record:
            made = record["made"]
            links[made["id"]] = Link(str(made["id"]), str(made["name"]), bool(made["write"]),
                                     float(made["expires"]), bool(made["file"]),
                                     str(made.get("by", "")), float(made.get("made", 0)))
        elif "revoked" in record:
            revoked.add(str(record["revoked"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
