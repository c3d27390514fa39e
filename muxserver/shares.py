"""Share links: a URL that opens one file or one folder, read-only, or a drop box into
one folder, for anyone who has it, until it expires or is revoked.

A link is a capability: what it opens, its rights and its expiry are in the link itself,
signed with the server secret (seals.py), so a changed byte or a made-up link is refused
without looking anything up. What the server must remember is which links exist and
which were revoked (``share --list``, ``share --revoke ID``): the book, a file of JSON
lines in the served root (``.muxserver-shares``, a name no request can reach), appended
to and never rewritten, so that every process and every server on the same root sees
the same links. Like the user file it is looked at at most about once a second (only
the lines added since are read), and at once when a link is not in it yet (made a
moment ago by another process). One account may have 1,000 links working at once.

The URL shows the link's id, its expiry and the name of what it opens; the folder it is
in, its rights and its kind are bound into the signature from the book, so a friend
given a link to ``photos/2026`` does not learn the folders above it, and a changed byte
of either is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import time
from typing import Callable

from .seals import SHARE, Seal, peek

log = logging.getLogger("muxserver")

BOOK_NAME = ".muxserver-shares"
DEFAULT_EXPIRY = 7 * 86400
MAX_EXPIRY = 366 * 86400
CHECK_INTERVAL = 1.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    id: str
    path: str  # the file or folder below the root ("" is the root)
    write: bool  # a drop box into the folder (else read-only)
    expires: int  # time.time(), whole seconds
    file: bool  # it opens one file (else a folder)
    by: str = ""  # who made it (the label of its maker's account)
    made: float = 0.0

    def fields(self) -> dict[str, object]:
        return {"id": self.id, "name": self.path, "write": self.write,
                "expires": self.expires, "file": self.file, "by": self.by, "made": self.made}


def parse_expiry(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``2w``, ``3600`` (seconds): how long a link lives;
    ValueError for anything else, or for more than a year."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdwy]?)\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration: say 30m, 12h, 7d, 2w or 1y")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_EXPIRY:
        raise ValueError("a link lives at least a second and at most a year")
    return seconds


class ShareBook:
    """The links made and revoked (see the module docstring)."""

    #: Links one account may have working at once (an unbounded book is read in full
    #: by every process on start, and a book line costs nothing to make).
    PER_MAKER = 1000

    def __init__(self, path: str, seal: Seal, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self.seal = seal
        self._clock, self._wall = clock, wall
        self._links: dict[str, Link] = {}
        self._revoked: set[str] = set()
        self._inode = 0
        self._read_to = 0  # bytes of the book read so far (it only grows: appended to)
        self._checked = -CHECK_INTERVAL
        self._refresh(force=True)

    # -- making and revoking

    def make(self, path: str, *, write: bool, file: bool, lifetime: float,
             by: str) -> tuple[Link, str]:
        """A new link, written to the book; (the link, its capability for the URL).
        OSError if the book cannot be written; ValueError if its maker has too many."""
        if len(self.links(by)) >= self.PER_MAKER:
            raise ValueError(f"you have {self.PER_MAKER} links working: revoke some first "
                             "(share --list, share --revoke ID)")
        now = self._wall()
        link = Link(secrets.token_hex(6), path, write, round(now + lifetime), file, by,
                    round(now))
        self._append({"made": link.fields()})
        self._links[link.id] = link
        return link, self.capability(link)

    def capability(self, link: Link) -> str:
        """What the URL carries: the link's id, expiry and leaf name, readable; its
        folder, rights and kind bound into the signature but not shown (a friend given
        a link to photos/2026 need not learn the folders above it)."""
        leaf = link.path.rsplit("/", 1)[-1]
        return self.seal.sign(SHARE, [link.id, link.expires, leaf],
                              bound=[link.path, int(link.write), int(link.file)])

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

    def revoked(self, link_id: str) -> bool:
        return link_id in self._revoked

    # -- checking

    def check(self, capability: str) -> Link | str:
        """The link a capability stands for, or why it opens nothing (a sentence)."""
        invalid = "this link is not valid: it was changed, cut short or made up"
        fields = peek(capability)
        if (fields is None or len(fields) != 3 or not isinstance(fields[0], str)
                or type(fields[1]) is not int):
            return invalid
        link_id, expires = fields[0], fields[1]
        self._refresh()
        if link_id not in self._links and link_id not in self._revoked:
            self._refresh(force=True)  # (made a moment ago by another process?)
        link = self._links.get(link_id)
        if link is None or link.expires != expires or self.seal.open(
                SHARE, capability, bound=[link.path, int(link.write), int(link.file)]) is None:
            return invalid
        if link_id in self._revoked:
            return "this link was revoked by the person who shared it"
        if expires <= self._wall():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
            return f"this link expired on {when}"
        return link

    # -- the file

    def _append(self, record: dict[str, object]) -> None:
        """One line at the book's end, whole (a line cut short by a full disk or a crash
        before it is ended first, so it cannot swallow this one), then flushed."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:  # (O_APPEND: every write goes to the end)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # (what was written must not pass for a line)
                os.write(fd, b"\n")
            raise
        finally:
            os.close(fd)

    def _refresh(self, force: bool = False) -> None:
        """Read what was added to the book since the last look (it is only appended to:
        a step reads the new lines, not the whole book again)."""
        now = self._clock()
        if not force and now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._links, self._revoked, self._inode, self._read_to = {}, set(), 0, 0
            return
        except OSError as exc:
            log.warning("cannot read the share links %s: %s", self.path, exc.strerror)
            return
        try:
            st = os.fstat(fd)
            if st.st_ino != self._inode or st.st_size < self._read_to:  # (a new book)
                self._links, self._revoked, self._inode, self._read_to = {}, set(), st.st_ino, 0
            if st.st_size == self._read_to:
                return
            data = os.pread(fd, st.st_size - self._read_to, self._read_to)
        except OSError as exc:
            log.warning("cannot read the share links %s: %s", self.path, exc.strerror)
            return
        finally:
            os.close(fd)
        whole = data.rfind(b"\n") + 1  # (a last line still being written: next time)
        for line in data[:whole].decode("utf-8", "replace").splitlines():
            _read_record(line, self._links, self._revoked)
        self._read_to += whole


def _read_record(line: str, links: dict[str, Link], revoked: set[str]) -> None:
    """One line of the book; a line that is not one (cut short by a crash) is skipped."""
    try:
        record = json.loads(line)
        if "made" in record:
            made = record["made"]
            links[made["id"]] = Link(str(made["id"]), str(made["name"]), bool(made["write"]),
                                     int(made["expires"]), bool(made["file"]),
                                     str(made.get("by", "")), float(made.get("made", 0)))
        elif "revoked" in record:
            revoked.add(str(record["revoked"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
