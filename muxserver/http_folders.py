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

from .access import DELETE, READ, WRITE
from .archive import TarStream, ZipStream
from .archive import crc32 as archive_crc32
from .http_codec import HttpCodec
from .index_page import INDEX_CSP, ROWS_PER_STEP, PageRights, index_head, index_tail
from .listings import LeftOutLog, Listing
from .names import printable
from .session import Job, Transfer
from .storage import Entry, LeftOut, StorageError

log = logging.getLogger("muxserver")

#: Folder downloads (?download=...), and their media types.
ARCHIVES = {"zip": "application/zip", "tar": "application/x-tar"}
ARCHIVE_STEP = 256 * 1024  # bytes of a file read and sent per loop step
#: Members per loop step, at most: 40,000 empty files took 1.2-1.7 s of one step when
#: only file bytes counted (each member costs an open, a stat and a few headers).
MEMBERS_PER_STEP = 32
ARCHIVE_GATHER = 16 * 1024  # pieces smaller than this are queued together


class _ArchiveStep:
    """What an archive's current loop step has done: a step ends at ARCHIVE_STEP bytes
    or MEMBERS_PER_STEP members, whichever comes first."""

    __slots__ = ("bytes", "members", "gathered")

    def __init__(self) -> None:
        self.bytes = self.members = 0
        self.gathered = bytearray()  # small pieces not queued yet (see send)

    def full(self) -> bool:
        return self.bytes >= ARCHIVE_STEP or self.members >= MEMBERS_PER_STEP

    def clear(self) -> None:
        self.bytes = self.members = 0


class FolderReplies(HttpCodec):
    """Listings, the drop box's page, and folders as archives."""

    def page_rights(self) -> PageRights:
        """What the index page offers this request (nothing it would refuse)."""
        grant = self.grant
        return PageRights(read=grant.allows(READ), write=grant.allows(WRITE),
                          delete=grant.allows(DELETE), replace=grant.replace)

    def send_drop_box(self, name: str) -> None:
        """The index page of a server that takes uploads but shows nothing: its upload
        form, whatever the path (whether it exists is not for this client to learn)."""
        page = (index_head(name, self.page_rights())
                + index_tail(name, 0, drop_box=True)).encode()
        self.respond(200, [("Content-Type", "text/html; charset=utf-8"),
                           ("Cache-Control", "no-store"),
                           ("Content-Security-Policy", INDEX_CSP)], page)

    def send_listing(self, form: Listing) -> None:
        """A directory listing (HTML, JSON or text), streamed a page per loop step."""
        entries = self.entries(form.name)  # (not found, not permitted: raised now)
        self.queue(h11.Response(status_code=200, headers=self.base_headers(None) + [
            ("Content-Type", form.media_type), ("Cache-Control", "no-store"),
            *form.headers]))
        if self.head:
            entries.close()
            self.queue(h11.EndOfMessage())
            self.responded(200, 0)
            return
        self.start_job(self.listing_in_steps(form, entries))

    def listing_in_steps(self, form: Listing,
                         entries: Generator[Entry, None, None]) -> Job:
        """The rows, ROWS_PER_STEP entries met per loop step (session.listing_job)."""
        left_out = LeftOutLog(self.channel.peer, self.channel.id, self.wire, form.name)
        shown = 0
        self.queue(h11.Data(data=form.head().encode()))

        def page(batch: list[dict[str, Any]], more: bool) -> None:
            nonlocal shown
            rows = form.rows(batch, not shown)
            shown += len(batch)
            if not more:
                rows += form.tail(shown, "", left_out.sentence() if left_out.count else "")
            self.send_rows(rows, more, shown)

        def failed(batch: list[dict[str, Any]], exc: StorageError) -> None:
            log.warning("%s HTTP listing of %s incomplete: %s", self.channel.peer,
                        printable(form.name or "/"), exc.message,
                        extra={"event": "refused", "conn": self.channel.id})
            self.send_rows(form.tail(shown, exc.message), False, shown)

        return self.listing_job(entries, ROWS_PER_STEP, left_out, page, failed)

    def send_rows(self, text: str, more: bool, shown: int) -> None:
        if text:
            self.queue(h11.Data(data=text.encode()))
        if not more:
            self.queue(h11.EndOfMessage())
            self.responded(200, shown)

    def send_archive(self, name: str, kind: str) -> None:
        """A folder as one zip or tar stream, built as it goes (archive.py): a piece of a
        file per loop step, no temporary file, memory bounded by the send queue."""
        entries = self.entries(name, recursive=True)  # (not found, not permitted: now)
        base = name.rsplit("/", 1)[-1] or os.path.basename(self.services.root.path) or "files"
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

        Every loop step is bounded: at most ARCHIVE_STEP bytes of files, or
        MEMBERS_PER_STEP members (empty files and folders cost a step too), and between
        steps the job waits while the send queue is over its high-water mark. Entries
        whose names the rules refuse are left out, and a last member lists them: the
        stream is never cut for them."""
        writer: ZipStream | TarStream = ZipStream() if kind == "zip" else TarStream()
        skip = len(top) + 1 if top else 0
        step = _ArchiveStep()
        left_out = LeftOutLog(self.channel.peer, self.channel.id, self.wire, top, kind)
        names_at_top: set[str] = set()  # members that the list's own name must not take

        def send(data: bytes) -> None:
            """Queue ``data``; a member's small pieces (headers, descriptors) gather in
            one buffer per step: a queued chunk costs about 200 bytes of its own, more
            than an empty member's headers."""
            step.bytes += len(data)
            transfer.received += len(data)
            if len(data) < ARCHIVE_GATHER:
                step.gathered += data
                if len(step.gathered) < ARCHIVE_GATHER:
                    return
                data = b""
            flush()
            if data:
                self.queue(h11.Data(data=data))

        def flush() -> None:
            if step.gathered:
                self.queue(h11.Data(data=bytes(step.gathered)))
                step.gathered.clear()

        try:
            top_mtime = (self.services.root.stat(top)["mtime"] if top
                         else os.stat(self.services.root.path).st_mtime)
            folder: dict[str, Any] = {"name": top, "type": "dir", "mtime": top_mtime}
            for entry in itertools.chain([folder], entries):
                if isinstance(entry, LeftOut):
                    left_out.add(entry)
                else:
                    rel = (base + "/" + entry["name"][skip:]).rstrip("/")
                    if rel.startswith(f"{base}/muxserver-left-out"):
                        names_at_top.add(rel)  # (the list of what was left out goes beside)
                    if entry["type"] == "dir":
                        send(writer.member_start(rel, entry["mtime"], directory=True))
                        if isinstance(writer, ZipStream):
                            send(writer.member_end(0, 0, 0))
                    elif entry["type"] == "file":
                        yield from self.archive_member(writer, entry["name"], rel, send,
                                                       flush, step)
                step.members += 1
                if step.full():
                    flush()
                    step.clear()
                    yield
            if left_out.count:
                left_out.report()
                name = next(n for n in (f"{base}/muxserver-left-out{suffix}.txt"
                                        for suffix in itertools.chain([""], (
                                            f" ({i})" for i in itertools.count(2))))
                            if n not in names_at_top)
                self.archive_text(writer, name, left_out.text().encode(), send)
            for piece in writer.finish_in_pieces(ARCHIVE_STEP):  # (a zip's central directory)
                send(piece)
                flush()
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
                       send: Callable[[bytes], None], flush: Callable[[], None],
                       step: "_ArchiveStep") -> Job:
        """One file into the archive, a step whenever ARCHIVE_STEP bytes have gone."""
        try:
            opened = self.services.root.open_file(name)
        except StorageError as exc:  # gone, or no longer a plain file, since listed
            log.info("%s HTTP archive: left out %s: %s", self.channel.peer, printable(name),
                     exc.message, extra={"event": "refused", "conn": self.channel.id})
            return
        try:
            size = opened.size
            if isinstance(writer, ZipStream):
                send(writer.member_start(rel, opened.mtime))
            else:
                send(writer.member_start(rel, opened.mtime, size))
            crc = done = 0
            while done < size:
                try:
                    chunk = os.pread(opened.fd, min(ARCHIVE_STEP, size - done), done)
                except OSError as exc:
                    raise StorageError("io_error", f"{name!r}: {exc.strerror}") from None
                if not chunk:  # it shrank since it was opened
                    break
                crc = archive_crc32(crc, chunk)
                send(chunk)
                done += len(chunk)
                if step.full():
                    flush()
                    step.clear()
                    yield
            if isinstance(writer, ZipStream):
                send(writer.member_end(crc, done, done))
            else:  # a tar header promised ``size`` bytes: keep the promise
                send(b"\0" * (size - done) + writer.padding(size))
        finally:
            opened.close()
