"""Folders over HTTP: listings (the index page, JSON, text), the drop box's page, and
whole folders as one zip or tar stream.

Each is a job (session.py): a bounded step per loop turn, and the next step waits
while the connection's send queue is over its high-water mark. Archives are built as
they go (archive.py): a piece of a file per step, no temporary file, memory bounded by
the send queue.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import urllib.parse
from typing import Any, Callable, Generator

import h11

from .access import DELETE, LINK, READ, SESSION, WRITE
from .archive import TarStream, ZipStream
from .archive import crc32 as archive_crc32
from .http_codec import HttpCodec
from .index_page import INDEX_CSP, ROWS_PER_STEP, PageRights, index_head, index_tail
from .listings import LeftOutLog, Listing, passed_through
from .names import printable
from .session import Job, Transfer
from .storage import Entry, LeftOut, StorageError

log = logging.getLogger("muxserver")

#: Folder downloads (?download=...), and their media types.
ARCHIVES = {"zip": "application/zip", "tar": "application/x-tar"}
ARCHIVE_STEP = 256 * 1024  # bytes of a file read and sent per loop step
_ZEROS = bytes(ARCHIVE_STEP)  # what a tar member whose file shrank is filled with
#: Members per loop step, at most: 40,000 empty files took 1.2-1.7 s of one step when
#: only file bytes counted (each member costs an open, a stat and a few headers).
MEMBERS_PER_STEP = 32
ARCHIVE_GATHER = 16 * 1024  # pieces smaller than this are queued together
LEFT_OUT_MEMBER = "muxserver-left-out"  # the member listing what the rules left out


class ArchiveOutput:
    """Where an archive's bytes go, and what its current loop step has done: a step
    ends at ARCHIVE_STEP bytes or MEMBERS_PER_STEP members, whichever comes first. A
    member's small pieces (headers, descriptors) gather in one buffer per step: a queued
    chunk costs about 200 bytes of its own, more than an empty member's headers."""

    __slots__ = ("queue", "transfer", "bytes", "members", "gathered")

    def __init__(self, queue: Callable[[bytes], None], transfer: Transfer) -> None:
        self.queue, self.transfer = queue, transfer
        self.bytes = self.members = 0
        self.gathered = bytearray()  # small pieces not queued yet

    def send(self, data: bytes) -> None:
        self.bytes += len(data)
        self.transfer.received += len(data)
        if len(data) < ARCHIVE_GATHER:
            self.gathered += data
            if len(self.gathered) < ARCHIVE_GATHER:
                return
            data = b""
        self.flush()
        if data:
            self.queue(data)

    def flush(self) -> None:
        if self.gathered:
            self.queue(bytes(self.gathered))
            self.gathered.clear()

    def step_done(self) -> bool:
        """True when this step did its share: what it gathered is queued, and the
        caller yields (the next step waits while the queue is over high water)."""
        if self.bytes < ARCHIVE_STEP and self.members < MEMBERS_PER_STEP:
            return False
        self.flush()
        self.bytes = self.members = 0
        return True


class FolderReplies(HttpCodec):
    """Listings, the drop box's page, and folders as archives."""

    def page_rights(self) -> PageRights:
        """What the index page offers this request (nothing it would refuse)."""
        grant = self.grant
        link = grant.principal[:1] == (LINK,)
        return PageRights(read=grant.allows(READ), write=grant.allows(WRITE),
                          delete=grant.allows(DELETE), replace=grant.replace, who=grant.who,
                          link=link, signed_in=self.offered_kind == SESSION,
                          share=(self.services.access.shares is not None and not link
                                 and grant.allows(READ)))

    def send_drop_box(self, name: str) -> None:
        """The index page of a server that takes uploads but shows nothing: its upload
        form, whatever the path (whether it exists is not for this client to learn)."""
        page = (index_head(name, self.page_rights())
                + index_tail(name, 0, drop_box=True)).encode()
        self.respond(200, [("Content-Type", "text/html; charset=utf-8"),
                           ("Cache-Control", "no-store"),
                           ("Content-Security-Policy", INDEX_CSP)], page)

    def send_listing(self, form: Listing, search: str = "") -> None:
        """A directory listing (HTML, JSON or text), streamed a page per loop step; with
        ``search``, the entries below it, at any depth, whose names hold that text (in
        any case): every step still handles a bounded number of entries met."""
        entries = self.entries(form.name, recursive=bool(search))  # (refusals: now)
        if search:
            entries = matching(entries, search)
        self.queue(h11.Response(status_code=200, headers=self.base_headers(None) + [
            ("Content-Type", form.media_type), ("Cache-Control", "no-store"),
            *form.headers]))
        if self.head:
            entries.close()
            self.stream_body(b"", last=True)
            return
        self.start_job(self.listing_in_steps(form, entries))

    def listing_in_steps(self, form: Listing,
                         entries: Generator[Entry, None, None]) -> Job:
        """The rows, ROWS_PER_STEP entries met per loop step (session.listing_job)."""
        left_out = LeftOutLog(self.channel.peer, self.channel.id, self.wire, form.name)
        shown = 0
        self.stream_body(form.head().encode(), last=False)

        def page(batch: list[dict[str, Any]], more: bool) -> None:
            nonlocal shown
            rows = form.rows(batch, not shown)
            shown += len(batch)
            if not more:
                rows += form.tail(shown, "", left_out.sentence() if left_out.count else "")
            self.send_rows(rows, more)

        def failed(batch: list[dict[str, Any]], exc: StorageError) -> None:
            log.warning("%s HTTP listing of %s incomplete: %s", self.channel.peer,
                        printable(form.name or "/"), exc.message,
                        extra={"event": "refused", "conn": self.channel.id})
            self.send_rows(form.tail(shown, exc.message), False)

        return self.listing_job(entries, ROWS_PER_STEP, left_out, page, failed)

    def send_count(self, name: str) -> None:
        """``?count``: how many entries a folder holds (JSON ``{"count": N, "more": B}``),
        counted in the listing's bounded steps, at most COUNT_UP_TO (then ``more``)."""
        entries = self.entries(name)  # (not found, not permitted: raised now)
        counted = [0]

        def page(batch: list[dict[str, Any]], more: bool) -> None:
            counted[0] += len(batch)

        def failed(batch: list[dict[str, Any]], exc: StorageError) -> None:
            counted[0] = -1

        def count() -> Job:
            yield from self.listing_job(_at_most(entries, COUNT_UP_TO + 1), ROWS_PER_STEP,
                                        LeftOutLog(self.channel.peer, self.channel.id,
                                                   self.wire, name), page, failed)
            if counted[0] < 0:
                self.send_json(500, {"error": "the folder could not be counted"})
            else:
                self.send_json(200, {"count": min(counted[0], COUNT_UP_TO),
                                     "more": counted[0] > COUNT_UP_TO})

        self.start_job(count())

    def send_rows(self, text: str, more: bool) -> None:
        self.stream_body(text.encode(), last=not more)

    def send_archive(self, name: str, kind: str) -> None:
        """A folder as one zip or tar stream, built as it goes (archive.py): a piece of a
        file per loop step, no temporary file, memory bounded by the send queue."""
        entries = self.entries(name, recursive=True)  # (not found, not permitted: now)
        base = (name or self.grant.scope).rsplit("/", 1)[-1] or os.path.basename(
            self.services.root.path) or "files"
        filename = urllib.parse.quote(f"{base}.{kind}")
        self.queue(h11.Response(status_code=200, headers=self.base_headers(None) + [
            ("Content-Type", ARCHIVES[kind]), ("Cache-Control", "no-store"),
            ("Content-Disposition", f"attachment; filename*=UTF-8''{filename}")]))
        if self.head:
            entries.close()
            self.queue(h11.EndOfMessage())
            self.responded(200, 0)
            return
        transfer = self.begin_transfer("get", f"{name or '/'} ({kind})")
        self.start_job(self.archive_in_steps(name, base, entries, kind, transfer),
                       label="archiving")

    def archive_in_steps(self, top: str, base: str, entries: Generator[Entry, None, None],
                         kind: str, transfer: Transfer) -> Job:
        """The archive's members are named below one folder, ``base`` (the folder's own
        name), so that unpacking it makes that folder instead of spilling its files.

        Every loop step is bounded (ArchiveOutput), empty files and folders included.
        Entries whose names the rules refuse are left out, and a last member lists
        them: the stream is never cut for them."""
        writer: ZipStream | TarStream = ZipStream() if kind == "zip" else TarStream()
        out = ArchiveOutput(lambda data: self.queue(h11.Data(data=data)), transfer)
        left_out = LeftOutLog(self.channel.peer, self.channel.id, self.wire, top, kind)
        taken: set[str] = set()  # members named like the list of what was left out
        skip = len(top) + 1 if top else 0  # (the folder's own path, before each name)
        try:
            top_mtime = (self.describe(top)["mtime"] if top or self.grant.scope
                         else os.fstat(self.services.root.dir_fd).st_mtime)
            folder: dict[str, Any] = {"name": top, "type": "dir", "mtime": top_mtime}
            for entry in itertools.chain([folder], entries):
                if isinstance(entry, LeftOut):
                    left_out.add(entry)
                elif entry is not None:  # (None: work that shows nothing, counted below)
                    rel = (base + "/" + entry["name"][skip:]).rstrip("/")
                    if rel.startswith(f"{base}/{LEFT_OUT_MEMBER}"):
                        taken.add(rel)
                    yield from self.archive_entry(writer, entry, rel, out)
                out.members += 1
                if out.step_done():
                    yield
            if left_out.count:
                left_out.report()
                self.archive_text(writer, left_out_name(base, taken),
                                  left_out.text().encode(), out.send)
            for piece in writer.finish_in_pieces(ARCHIVE_STEP):  # (a zip's central directory)
                out.send(piece)
                out.flush()
                yield
        except StorageError as exc:  # the status line went long ago: cut the stream
            log.warning("%s HTTP %s archive of %s cut short: %s", self.channel.peer, kind,
                        printable(top or "/"), exc.message,
                        extra={"event": "refused", "conn": self.channel.id})
            self.transfer_failed(transfer)
            self.channel.abort("archive incomplete")
            return
        finally:
            entries.close()
        self.queue(h11.EndOfMessage())
        self.responded(200, transfer.received)
        self.transfer_done(transfer, transfer.received, None)

    def archive_entry(self, writer: ZipStream | TarStream, entry: dict[str, Any], rel: str,
                      out: ArchiveOutput) -> Job:
        """One entry of the folder as a member (a folder, or a file: archive_member)."""
        if entry["type"] == "dir":
            out.send(writer.member_start(rel, entry["mtime"], directory=True))
            if isinstance(writer, ZipStream):
                out.send(writer.member_end(0, 0, 0))
        elif entry["type"] == "file":
            yield from self.archive_member(writer, entry["name"], rel, out)

    @staticmethod
    def archive_text(writer: ZipStream | TarStream, rel: str, data: bytes,
                     send: Callable[[bytes], None]) -> None:
        """A member made here, from memory (the list of what was left out)."""
        now = time.time()
        if isinstance(writer, ZipStream):
            send(writer.member_start(rel, now))
            send(data)
            send(writer.member_end(archive_crc32(0, data), len(data), len(data)))
        else:
            send(writer.member_start(rel, now, len(data)))
            send(data + writer.padding(len(data)))

    def archive_member(self, writer: ZipStream | TarStream, name: str, rel: str,
                       out: ArchiveOutput) -> Job:
        """One file into the archive, a step whenever ARCHIVE_STEP bytes have gone."""
        try:
            opened = self.open_download(name)
        except StorageError as exc:  # gone, or no longer a plain file, since listed
            log.info("%s HTTP archive: left out %s: %s", self.channel.peer, printable(name),
                     exc.message, extra={"event": "refused", "conn": self.channel.id})
            return
        try:
            size = opened.size
            if isinstance(writer, ZipStream):
                out.send(writer.member_start(rel, opened.mtime))
            else:
                out.send(writer.member_start(rel, opened.mtime, size))
            crc = done = 0
            while done < size:
                try:
                    chunk = os.pread(opened.fd, min(ARCHIVE_STEP, size - done), done)
                except OSError as exc:
                    raise StorageError("io_error", f"{name!r}: {exc.strerror}") from None
                if not chunk:  # it shrank since it was opened
                    if isinstance(writer, ZipStream):
                        break  # (a zip says the size after the data)
                    chunk = _ZEROS[:min(ARCHIVE_STEP, size - done)]  # a tar header
                crc = archive_crc32(crc, chunk)  # promised ``size`` bytes: zeros, in steps
                out.send(chunk)
                done += len(chunk)
                if out.step_done():
                    yield
            if isinstance(writer, ZipStream):
                out.send(writer.member_end(crc, done, done))
            else:
                out.send(writer.padding(size))
        finally:
            opened.close()


def left_out_name(base: str, taken: set[str]) -> str:
    """The member that lists what was left out: muxserver-left-out.txt in the folder, or
    "... (2).txt" and on where a file of the folder has that name already."""
    for suffix in itertools.chain([""], (f" ({i})" for i in itertools.count(2))):
        name = f"{base}/{LEFT_OUT_MEMBER}{suffix}.txt"
        if name not in taken:
            return name
    raise AssertionError("unreachable: the names are endless")


def matching(entries: Generator[Entry, None, None], text: str
             ) -> Generator[Entry, None, None]:
    """The entries whose own names hold ``text`` (any case); the others pass as units of
    work that show nothing, so a search is bounded per step as a listing is."""
    wanted = text.casefold()
    return passed_through(entries, lambda entry: None if isinstance(entry, dict) and (
        wanted not in entry["name"].rsplit("/", 1)[-1].casefold()) else entry)


#: A folder's entries are counted up to this many (the page says "10000+" past it).
COUNT_UP_TO = 10_000


def _at_most(entries: Generator[Entry, None, None], count: int
             ) -> Generator[Entry, None, None]:
    """The walk until its ``count``-th entry shown."""
    shown = itertools.count(1)
    return passed_through(entries, lambda entry: entry,
                          last=lambda entry: isinstance(entry, dict) and next(shown) >= count)
