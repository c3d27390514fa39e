"""HTTP/1.1 on the same port: curl, wget and browsers can download and upload.

The native protocol frames messages with a length prefix; HTTP delimits its headers
with a blank line and then says how long the body is (Content-Length) or sends it in
chunks. Parsing that is h11's job: a sans-I/O state machine of the same shape as our
``protocol.FrameDecoder`` (bytes in, events out, never a socket). :class:`HttpSession`
drives an ``h11.Connection`` and translates its events into the shared request
lifecycle of ``session.py`` (admission, timeouts, transfers, statistics), exactly as
the native session does; this module adds only what is HTTP's own:

* ``GET``/``HEAD`` of a file: ``Content-Length``, ``Content-Type``, ``ETag`` (its
  SHA-256), ``Last-Modified``, one ``Range`` (206, for ``curl -C -``), ``If-None-Match``;
  the body goes out with ``os.sendfile`` (h11 passes our file region through untouched).
  User files carry ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy:
  sandbox``: an uploaded page or SVG cannot script the index page, its origin.
* ``GET`` of a directory: an HTML index that lists it and uploads into it.
* ``PUT /path``: with ``Content-Length`` or chunked; committed atomically like a native
  upload; ``X-Content-SHA256`` or ``Digest``/``Repr-Digest: sha-256=...`` is verified.
* Credentials per request: ``Authorization: Bearer``, or a cookie set by visiting
  ``/?token=...`` once (the redirect goes to a path on this server, never elsewhere).
* What a request must not do is refused before its body is read, with the connection
  closed after the answer: a foreign ``Host`` (DNS rebinding), missing credentials,
  ``Content-Length`` together with ``Transfer-Encoding`` (RFC 9112, section 6.1), a
  ``PUT`` with ``Content-Range`` (a part is not a whole file: RFC 9110, section 14.4).

Requests on one connection are served one after another (keep-alive, pipelining).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http
import itertools
import logging
import mimetypes
import os
import re
import time
import urllib.parse
from typing import Any, Callable, Generator, Iterator, cast

import h11

from . import __version__, tus
from .access import (
    DELETE,
    READ,
    WRITE,
    Refusal,
    changes_state,
    from_another_site,
    navigated_by_a_person,
)
from .archive import TarStream, ZipStream
from .archive import crc32 as archive_crc32
from .buffers import FileRegion
from .channel import Phase, Transport
from .digests import SHA256, Digest, is_hex64
from .index_page import INDEX_CSP, ROWS_PER_STEP, PageRights, index_head, index_tail
from .listings import LeftOutLog, Listing, listing_for
from .names import printable
from .protocol import NEED_DATA
from .lifecycle import Work
from .session import Job, Services, Session, Transfer
from .storage import Entry, LeftOut, OpenFile, StorageError, Upload, split_name
from .units import parse_count

log = logging.getLogger("muxserver")

#: HTTP status for each stable error code of the native protocol.
STATUS = {
    "bad_name": 400, "bad_request": 400, "checksum_mismatch": 400, "forbidden": 403,
    "not_a_file": 403, "not_found": 404, "is_directory": 409, "not_a_directory": 409,
    "exists": 409, "overwrite_refused": 409, "timeout": 408, "too_large": 413,
    "offset_mismatch": 416, "unauthorized": 401, "not_permitted": 403,
    "too_many_attempts": 429, "io_error": 500,
    "server_busy": 503,
    "internal": 500, "too_many_clients": 503, "shutting_down": 503, "no_space": 507,
}
TOKEN_COOKIE = "muxserver_token"
ALLOWED_METHODS = "GET, HEAD, PUT, DELETE, MKCOL, MOVE"
#: Folder downloads (?download=...), and their media types.
ARCHIVES = {"zip": "application/zip", "tar": "application/x-tar"}
ARCHIVE_STEP = 256 * 1024  # bytes of a file read and sent per loop step
#: Members per loop step, at most: 40,000 empty files took 1.2-1.7 s of one step when
#: only file bytes counted (each member costs an open, a stat and a few headers).
MEMBERS_PER_STEP = 32
ARCHIVE_GATHER = 16 * 1024  # pieces smaller than this are queued together
#: Every response: browsers must not guess a type we did not say (an upload named
#: notes.txt holding HTML stays text).
COMMON_HEADERS = [("X-Content-Type-Options", "nosniff")]
#: A user's file is shown in a sandbox: no script in it runs with this origin's rights.
USER_FILE_CSP = ("Content-Security-Policy", "sandbox")


class HttpError(Exception):
    """A request that gets an error status; ``close``: close the connection after it
    (the body, if any, is then never read)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.close = status, message, headers or [], close


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


class _FileBody:
    """A placeholder h11 passes through unchanged: the body is sent by sendfile."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class HttpSession(Session):
    """HTTP/1.1 on one channel, through h11."""

    wire = "HTTP "

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(services, channel)
        self.conn = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=self.limits.max_header_size)
        self.request: h11.Request | None = None
        self.request_headers: dict[str, str] = {}
        self.head = False  # the request is a HEAD: every answer has headers only
        self.name = ""
        self.peer_done = False  # recv returned b"" (the peer finished sending)
        #: the tus upload (and the checksum its piece declared) whose piece is arriving
        self.tus_piece: tuple[tus.TusUpload, tuple[str, bytes] | None] | None = None
        self.response_extra: list[tuple[str, str]] = []  # headers of every response now

    # -- bytes in, and h11 as the lifecycle asks for it

    def data_received(self, data: memoryview) -> None:
        self.conn.receive_data(bytes(data))
        self.process()

    def eof_received(self) -> None:
        self.peer_done = True
        self.conn.receive_data(b"")
        self.process()

    def next_event(self) -> Any:
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()  # keep-alive: the next request may begin
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            self.channel.close_when_done("HTTP connection: close")
            return None
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self.protocol_error(exc)
            return None
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:  # a response is still owed: it resumes us when done
            self.channel.pause_reading()
            return None
        return event

    def handle(self, event: Any) -> None:
        kind = type(event)
        if kind is h11.Data:
            self.body_received(event.data)
        elif kind is h11.Request:
            self.start_request(event)
        elif kind is h11.EndOfMessage:
            self.finish_request()
        elif kind is h11.ConnectionClosed:
            self.interrupt_upload()
            self.channel.close_when_done("peer finished sending")

    def header_pending(self) -> bool:
        conn = self.conn
        return conn.their_state is h11.IDLE and bool(conn.trailing_data[0])

    def reading_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    # -- requests

    def start_request(self, request: h11.Request) -> None:
        """Host, then credentials, then everything else; the body waits until then."""
        self.request = request
        self.request_headers = headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                                          for k, v in request.headers}
        self.head = request.method == b"HEAD"
        self.name = ""
        self.tus_piece = None
        self.response_extra = []
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        if self.channel.trace is not None:  # (a token in the query is never shown)
            self.channel.trace("http_request", self.channel.id, method=method,
                               target=re.sub(r"([?&]token=)[^&]*", r"\1…", target))
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        try:
            target = self.origin_form(target, headers)
            if not self.services.access.host_allowed(headers.get("host")):
                raise HttpError(403, f"this server does not answer to the host name "
                                     f"{printable(headers['host'])!r} (start it with "
                                     "--allow-host NAME to allow one)", close=True)
            foreign = from_another_site(headers)
            if foreign and changes_state(method):
                raise HttpError(403, "a page of another site may not change anything here",
                                close=True)
            if self.services.stopping:  # (before credentials, as in every protocol)
                raise HttpError(503, "the server is shutting down", close=True)
            offered, from_query = self.credentials(method, target, headers)
            if foreign and not navigated_by_a_person(headers):
                offered = None  # (not checked, so not counted: see access.py)
            if not self.admit(offered, has_body=has_body):
                return
            self.check_request(method, request, headers)
            path, query = parse_target(target)
            if from_query and self.services.access.token_required:
                self.redirect_with_cookie(path, query, offered or "")
            elif path == tus.PREFIX or path.startswith(tus.PREFIX + "/"):
                self.tus_request(method, path[len(tus.PREFIX):].strip("/"), headers, has_body)
            elif method in ("GET", "HEAD"):
                self.start_get(path, query)
            elif method == "PUT":
                self.start_put(path, headers)
            elif method in ("DELETE", "MKCOL", "MOVE") and not has_body:
                self.change(method, path, headers)
            else:
                raise HttpError(405, f"{method} is not supported here" + (
                    " with a body" if method in ("DELETE", "MKCOL", "MOVE") else ""),
                    [("Allow", ALLOWED_METHODS)], close=has_body)
        except HttpError as exc:
            self.fail_request(exc)
        except StorageError as exc:
            retry = [("Retry-After", "1")] if exc.code == "server_busy" else None
            self.fail_request(HttpError(STATUS.get(exc.code, 500), exc.message, retry,
                                        close=has_body))

    @staticmethod
    def origin_form(target: str, headers: dict[str, str]) -> str:
        """The target as a path and query. An absolute-form target (``GET
        http://host:port/x``, as proxies send) must be accepted (RFC 9112, section
        3.2.2): its authority then stands for the Host header, and is checked as one."""
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return target
        end = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
        authority, path = rest[:end], rest[end:]
        if "@" in authority or not authority:
            raise HttpError(400, "an absolute target names a host, and no user "
                                 "(RFC 9110, section 4.2.4)", close=True)
        headers["host"] = authority
        return path if path.startswith("/") else "/" + path

    def check_request(self, method: str, request: h11.Request,
                      headers: dict[str, str]) -> None:
        """What no request may do, whatever it asks for."""
        size = len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)
        if size > self.limits.max_header_size:
            # (h11 caps only an *incomplete* header; a whole one can be bigger)
            raise HttpError(431, f"request header of {size} bytes is over the limit of "
                                 f"{self.limits.max_header_size}", close=True)
        if "transfer-encoding" in headers and "content-length" in headers:
            raise HttpError(400, "Content-Length together with Transfer-Encoding: the body's "
                                 "length is ambiguous (RFC 9112, section 6.1)", close=True)
        if method == "PUT" and "content-range" in headers:
            raise HttpError(400, "a PUT with Content-Range is a part of a file, and a part "
                                 "is not stored as the whole (RFC 9110, section 14.4); "
                                 "resume uploads with the muxserver client", close=True)

    def credentials(self, method: str, target: str,
                    headers: dict[str, str]) -> tuple[str | None, bool]:
        """(the token this request offers, whether it came in the query string)."""
        if method in ("GET", "HEAD") and "?" in target:
            query = parse_query(target.partition("?")[2])
            if "token" in query:
                return query["token"], True
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return authorization[7:].strip(), False
        for cookie in headers.get("cookie", "").split(";"):
            key, _, value = cookie.strip().partition("=")
            if key == TOKEN_COOKIE:
                return urllib.parse.unquote(value), False
        return None, False

    def redirect_with_cookie(self, path: str, query: dict[str, str], token: str) -> None:
        """``/?token=T`` logs a browser in: the cookie, then the same page without the
        token in its address. The target is always a path on this server: ``//x``
        would be another site, so leading slashes go."""
        rest = {k: v for k, v in query.items() if k != "token"}
        location = "/" + urllib.parse.quote(path.lstrip("/")) + (
            "?" + urllib.parse.urlencode(rest) if rest else "")
        cookie = (f"{TOKEN_COOKIE}={urllib.parse.quote(token, safe='')}; Path=/; HttpOnly; "
                  "SameSite=Strict" + ("; Secure" if self.channel.tls else ""))
        self.respond(303, [("Location", location), ("Set-Cookie", cookie)],
                     b"token accepted\n")

    def send_refusal(self, refusal: Refusal, close: bool) -> None:
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if refusal.code == "too_many_attempts":
            headers.append(("Retry-After", str(refusal.retry_after)))
            message = refusal.message
        else:
            headers.append(("WWW-Authenticate", 'Bearer realm="muxserver"'))
            message = (f"{refusal.message}: send 'Authorization: Bearer TOKEN', or open "
                       "/?token=TOKEN once in a browser")
        if close:
            headers.append(("Connection", "close"))
        status = STATUS[refusal.code]
        self.respond(status, headers, f"{status} {message}\n".encode())

    # -- GET and HEAD

    def start_get(self, path: str, query: dict[str, str]) -> None:
        name = path.rstrip("/")
        if path == "" or path.endswith("/"):
            if query.get("download") in ARCHIVES:
                self.send_archive(name, query["download"])
            elif not self.grant.allows(READ) and self.grant.allows(WRITE):
                self.send_drop_box(name)  # uploads only: a form, and no names at all
            else:
                self.send_listing(listing_for(name, query, self.request_headers.get(
                    "accept", ""), self.page_rights()))
            return
        self.name = name
        self.begin_transfer("get", name)
        try:
            opened = self.open_download(name)
        except StorageError as exc:
            if exc.code != "is_directory":
                raise
            self.forget_transfer()
            location = "/" + urllib.parse.quote(name + "/")
            self.respond(301, [("Location", location)], b"it is a directory\n")
            return
        # (HTTP speaks SHA-256, open_download's default, and its ETag comes first)
        self.with_digest(opened, lambda: self.send_file(opened),
                         lambda exc: self.fail_request(HttpError(500, exc.message, close=True)),
                         sending=opened.size)

    def send_file(self, opened: OpenFile) -> None:
        headers = self.request_headers
        assert opened.digest is not None
        sha256 = opened.digest.hex
        etag = f'"{sha256}"'
        digest = f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode()}:"
        common = [("ETag", etag), ("Repr-Digest", digest),
                  ("Last-Modified", email.utils.formatdate(opened.mtime, usegmt=True)),
                  ("Accept-Ranges", "bytes"),
                  ("Content-Type", mimetypes.guess_type(self.name)[0]
                   or "application/octet-stream"), USER_FILE_CSP]
        if etag in headers.get("if-none-match", ""):
            opened.close()
            self.forget_transfer()
            self.respond(304, common)
            return
        start, end, status = 0, opened.size, 200
        if "range" in headers:
            span = parse_range(headers["range"], opened.size)
            if span is None:
                opened.close()
                self.fail_request(HttpError(
                    416, f"the range is outside the file's {opened.size} bytes",
                    [("Content-Range", f"bytes */{opened.size}")]))
                return
            if span != (0, opened.size):
                start, end, status = span[0], span[1], 206
                common.append(("Content-Range", f"bytes {start}-{end - 1}/{opened.size}"))
        if status == 200:  # the content is the whole representation (RFC 9530)
            common.append(("Content-Digest", digest))
        length = end - start
        transfer = self.active
        assert transfer is not None
        response = h11.Response(status_code=status, headers=self.base_headers(length) + common)
        if self.head:
            opened.close()
            self.forget_transfer()  # headers only: nothing was transferred
            self.queue(response)
        else:
            transfer.digest = opened.digest
            try:
                body = self.body_of(opened, start, length, transfer)
            except StorageError as exc:
                self.fail_request(HttpError(500, exc.message))
                return
            self.queue(response)
            self.queue_body(transfer, body)
        self.queue(h11.EndOfMessage())
        self.responded(status, length)

    def queue_body(self, transfer: Transfer, body: bytes | FileRegion) -> None:
        """A get's body through h11: bytes as they are; a file region passed through
        h11 untouched (it counts its length) to the channel, which sends it by sendfile."""
        if not isinstance(body, FileRegion):
            if body:
                self.queue(h11.Data(data=body))
            self.transfer_done(transfer, len(body), transfer.digest)
            return
        self.sending_body(transfer)
        placeholder = cast(bytes, _FileBody(body.remaining))
        for part in self.conn.send_with_data_passthrough(h11.Data(data=placeholder)) or ():
            if isinstance(part, _FileBody):
                self.channel.write_file(body)
            else:
                self.channel.write(part)

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

    # -- DELETE, MKCOL, MOVE (as WebDAV spells them: RFC 4918)

    def change(self, method: str, path: str, headers: dict[str, str]) -> None:
        name = path.rstrip("/")
        if not name:
            raise HttpError(403, "the served root itself cannot be removed, made or moved")
        self.name = name
        if method == "MKCOL":
            try:
                self.make_directory(name, parents=False)
            except StorageError as exc:
                if exc.code != "exists":
                    raise
                raise HttpError(405, exc.message, [("Allow", ALLOWED_METHODS)]) from None
            self.respond(201, [("Location", "/" + urllib.parse.quote(name) + "/")],
                         f"made {name}/\n".encode())
        elif method == "MOVE":
            self.move_to(name, headers)
        else:  # DELETE: of a directory, everything in it (RFC 4918, 9.6.1)
            self.start_removal(
                name, recursive=True,
                done=lambda removed: self.respond(204, []),
                failed=lambda exc: self.fail_request(HttpError(STATUS.get(exc.code, 500),
                                                               exc.message)))

    def move_to(self, name: str, headers: dict[str, str]) -> None:
        destination = headers.get("destination", "")
        if not destination:
            raise HttpError(400, "MOVE needs a Destination header")
        parts = urllib.parse.urlsplit(destination)
        if parts.netloc and parts.netloc.lower() != headers.get("host", "").lower():
            raise HttpError(502, "the Destination is on another server")
        target, _ = parse_target(parts.path + ("?" + parts.query if parts.query else ""))
        target = target.rstrip("/")
        overwrite = headers.get("overwrite", "T").strip().upper() != "F"  # WebDAV: T
        try:
            replaced = self.move_entry(name, target, overwrite=overwrite)
        except StorageError as exc:
            if exc.code == "exists":
                raise HttpError(412, exc.message) from None  # Overwrite: F, and it exists
            raise
        location = [("Location", "/" + urllib.parse.quote(target))]
        self.respond(204 if replaced else 201, location,
                     b"" if replaced else f"moved to {target}\n".encode())

    # -- tus (resumable uploads; the protocol's pieces are in tus.py)

    def tus_request(self, method: str, tid: str, headers: dict[str, str],
                    has_body: bool) -> None:
        self.response_extra = [("Tus-Resumable", tus.VERSION)]
        try:
            if method == "OPTIONS":
                self.respond(204, tus.capabilities(self.limits.max_file_size)[1:])
                return
            if headers.get("tus-resumable") != tus.VERSION:
                raise HttpError(412, f"this server speaks tus {tus.VERSION} (send "
                                     f"Tus-Resumable: {tus.VERSION})",
                                [("Tus-Version", tus.VERSION)], close=has_body)
            if not tid:
                if method != "POST":
                    raise HttpError(405, f"{method} of the creation URL",
                                    [("Allow", "OPTIONS, POST")], close=has_body)
                self.tus_create(headers)
                return
            if method not in ("HEAD", "PATCH", "DELETE"):
                raise HttpError(405, f"{method} of an upload",
                                [("Allow", "HEAD, PATCH, DELETE")], close=has_body)
            self.require(WRITE, "resuming an upload")  # (before the ID is even looked at)
            upload = tus.TusUpload.from_id(tid, self.grant.writer)
            self.name = upload.name
            if method == "HEAD":
                self.tus_offset(upload)
            elif method == "PATCH":
                self.tus_patch(upload, headers)
            else:
                self.services.root.drop_partial(upload.name, upload.key(self.grant.writer),
                                                beside_if_taken=self.blind)
                self.respond(204, [])
        except tus.TusRequestError as exc:
            raise HttpError(exc.status, exc.message, close=has_body) from None
        except StorageError as exc:
            status = tus.STATUS.get(exc.code, STATUS.get(exc.code, 500))
            more = [("Retry-After", "1")] if status in (423, 503) else []
            raise HttpError(status, exc.message, more, close=has_body) from None

    def tus_create(self, headers: dict[str, str]) -> None:
        self.require(WRITE, "starting an upload")
        upload = tus.creation(headers)
        self.name = upload.name
        self.check_size(upload.size)
        root = self.services.root
        try:
            root.check_room(upload.name, upload.size, overwrite=upload.overwrite,
                            allow_overwrite=self.grant.replace, beside_if_taken=self.blind)
        except StorageError as exc:
            raise self.explained(exc, upload.name) from None
        root.create_partial(upload.name, upload.key(self.grant.writer),
                            beside_if_taken=self.blind)
        self.respond(201, [("Location", f"/{tus.PREFIX}/{upload.id(self.grant.writer)}"),
                           tus.expires(time.time() + self.limits.partial_ttl)])

    def tus_offset(self, upload: tus.TusUpload) -> None:
        held = self.services.root.held(upload.name, upload.key(self.grant.writer),
                                       upload.size, beside_if_taken=self.blind)
        self.respond(200, [("Upload-Offset", str(held)), ("Upload-Length", str(upload.size)),
                           ("Cache-Control", "no-store")])

    def tus_patch(self, upload: tus.TusUpload, headers: dict[str, str]) -> None:
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/offset+octet-stream":
            raise HttpError(415, "a PATCH carries Content-Type: "
                                 "application/offset+octet-stream", close=True)
        offset = tus.parse_count(headers, "upload-offset")
        if "content-length" not in headers:
            raise HttpError(411, "a PATCH needs Content-Length", close=True)
        length = int(headers["content-length"])
        if offset + length > upload.size:
            raise HttpError(413, "the piece goes past the upload's length", close=True)
        checksum = tus.parse_checksum(headers.get("upload-checksum", ""))
        key = upload.key(self.grant.writer)
        held = self.services.root.held(upload.name, key, upload.size,
                                       beside_if_taken=self.blind)
        if held != offset:
            raise HttpError(409, f"the server holds {held} bytes of it, not {offset}",
                            [("Upload-Offset", str(held))], close=True)
        self.begin_transfer("put", upload.name)
        started = self.start_upload(upload.name, length, upload.expected,
                                    overwrite=upload.overwrite, key=key, offset=offset,
                                    total=upload.size)
        if checksum is not None:
            started.piece_hasher = tus.CHECKSUMS[checksum[0]]()
        self.tus_piece = (upload, checksum)
        if self.conn.they_are_waiting_for_100_continue:
            self.queue(h11.InformationalResponse(status_code=100, headers=[]))

    def finish_piece(self) -> None:
        """A PATCH's body arrived whole: check its checksum, then commit the file if it
        is complete, else keep the partial file for the next piece."""
        upload, piece = self.upload, self.tus_piece
        assert upload is not None and piece is not None
        checksum = piece[1]
        if checksum is not None and upload.piece_hasher.digest() != checksum[1]:
            upload.rewind()
            self.end_upload()
            self.tus_piece = None
            upload.park()
            self.forget_transfer()
            self.respond(tus.CHECKSUM_MISMATCH, [("Content-Type", "text/plain")],
                         b"the piece's checksum does not match: it was not kept\n")
            return
        if upload.completes:
            self.finish_upload()  # hashed, checked, committed: then upload_stored
            return
        self.end_upload()
        self.tus_piece = None
        held = upload.park()
        self.forget_transfer()
        self.respond(204, [("Upload-Offset", str(held)),
                           tus.expires(time.time() + self.limits.partial_ttl)])

    # -- PUT

    def start_put(self, path: str, headers: dict[str, str]) -> None:
        if path == "" or path.endswith("/"):
            raise HttpError(400, "PUT needs a file name, not a directory", close=True)
        self.name = path
        self.begin_transfer("put", path)
        chunked = "transfer-encoding" in headers
        if "content-length" not in headers and not chunked:
            raise HttpError(411, "send Content-Length or Transfer-Encoding: chunked",
                            close=True)
        length = 0 if chunked else int(headers["content-length"])  # (h11 checked it)
        expected = declared_sha256(headers)
        split_name(path)  # a bad name is refused before anything is created (400)
        self.start_upload(path, length, expected, overwrite=True)
        if self.conn.they_are_waiting_for_100_continue:
            self.queue(h11.InformationalResponse(status_code=100, headers=[]))

    def body_received(self, data: bytes) -> None:
        upload = self.upload
        if upload is None or self.work.state is not Work.RECEIVING:
            return  # the body of a request answered already
        try:
            self.check_size(upload.received + len(data))  # (chunked: counted as it comes)
        except StorageError as exc:
            self.fail_request(HttpError(413, exc.message, close=True))
            return
        self.write_body(data)
        if not upload.length and self.active is not None:
            self.active.total = upload.received  # chunked: the size is known at the end

    def finish_request(self) -> None:
        if self.upload is None or self.work.state is not Work.RECEIVING:
            return  # (no upload, or a refused one: answered already)
        if self.tus_piece is not None:
            self.finish_piece()
            return
        self.upload.length = self.upload.received  # chunked bodies declared none
        self.finish_upload()

    def upload_failed(self, upload: Upload, exc: StorageError) -> None:
        status = STATUS.get(exc.code, 500)
        if self.tus_piece is not None:
            status = tus.STATUS.get(exc.code, status)
        self.tus_piece = None
        # Inside the body, the rest of it would have to be read: close instead.
        self.fail_request(HttpError(status, exc.message, close=self.reading_body()))

    def upload_stored(self, upload: Upload, digest: Digest) -> None:
        etag = ("ETag", f'"{digest.hex}"')  # (a SHA-256: HTTP uploads are hashed in it)
        if self.tus_piece is not None:  # the last piece of a tus upload
            self.tus_piece = None
            self.respond(204, [("Upload-Offset", str(upload.size)), etag])
            return
        body = f"stored {upload.asked_name} ({upload.size} bytes, {digest})\n".encode()
        self.respond(200 if upload.replaces else 201,
                     [etag, ("Content-Type", "text/plain; charset=utf-8")], body)

    # -- responses

    def base_headers(self, length: int | None) -> list[tuple[str, str]]:
        """Headers of every response; ``length`` None: the body's length is not known
        in advance (h11 then sends it chunked, or closes after it for HTTP/1.0)."""
        headers = [("Server", f"muxserver/{__version__}"),
                   ("Date", email.utils.formatdate(usegmt=True)), *COMMON_HEADERS,
                   *self.response_extra]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        return headers

    def queue(self, event: Any) -> None:
        if type(event) in (h11.Response, h11.InformationalResponse) and not event.reason:
            event = type(event)(status_code=event.status_code, headers=event.headers,
                                reason=reason(event.status_code))
        self.channel.write(self.conn.send(event))

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """A whole response with a body in memory; to a HEAD, the headers only
        (Content-Length still says what a GET would get)."""
        no_length = status in (204, 304)  # (RFC 9110: these carry no Content-Length)
        self.queue(h11.Response(status_code=status, headers=self.base_headers(
            None if no_length else len(body)) + headers))
        if body and not self.head:
            self.queue(h11.Data(data=body))
        self.queue(h11.EndOfMessage())
        self.responded(status, len(body))

    def responded(self, status: int, size: int) -> None:
        if self.channel.trace is not None:
            self.channel.trace("http_response", self.channel.id, status=status, size=size)

    def fail_request(self, exc: HttpError) -> None:
        """An error response (if h11 still lets us send one), then maybe close."""
        self.request_failed(str(exc.status), exc.message, self.name)
        headers = [("Content-Type", "text/plain; charset=utf-8"), *exc.headers]
        if exc.close:
            headers.append(("Connection", "close"))
        if self.conn.our_state is h11.SEND_RESPONSE:
            self.respond(exc.status, headers, f"{exc.status} {exc.message}\n".encode())
        if exc.close or self.conn.our_state is not h11.DONE:
            self.discard_upload()
            self.channel.close_when_done(exc.message)

    def send_raw(self, status: int, message: str) -> None:
        """An error response h11 will not frame (no request was read whole): by hand."""
        body = f"{status} {message}\n".encode("utf-8", "replace")
        head = (f"HTTP/1.1 {status} {reason(status)}\r\nContent-Type: text/plain\r\n"
                f"X-Content-Type-Options: nosniff\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self.channel.write(head.encode() + body)
        self.responded(status, len(body))

    def protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        """Bad HTTP (h11 says which status fits: 400, or 431 for huge headers)."""
        if self.peer_done and (self.work.uploading or self.header_since is not None):
            # The peer closed in the middle of a request: an interruption, not bad HTTP.
            log.warning("%s disconnected mid-request", self.channel.peer,
                        extra={"event": "reset", "conn": self.channel.id})
            self.interrupt_upload()
            self.channel.abort("peer closed mid-request")
            return
        self.discard_upload()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.send_raw(exc.error_status_hint, str(exc))
        log.warning("%s bad HTTP: %s", self.channel.peer, exc,
                    extra={"event": "refused", "conn": self.channel.id})
        self.channel.close_when_done(f"bad HTTP: {exc}")

    def send_timeout(self, phase: Phase, what: str) -> None:
        if phase is Phase.IDLE:
            return  # nothing was asked: just close, as keep-alive connections end
        if self.conn.our_state is h11.SEND_RESPONSE:
            self.respond(408, [("Content-Type", "text/plain; charset=utf-8"),
                               ("Connection", "close")], f"408 {what}\n".encode())
        elif self.conn.our_state is h11.IDLE:
            self.send_raw(408, what)

    # -- what the console shows

    @property
    def recv_buffered(self) -> int:
        return len(self.conn.trailing_data[0])

    def wire_state(self) -> str:
        return "idle" if self.conn.their_state is h11.IDLE else "reading request"


# ---------------------------------------------------------------- small parsers


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """A request target as (name below the root, query); '' is the root, a trailing
    '/' a directory. Percent-escapes in the path are decoded as strict UTF-8."""
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise HttpError(400, "the request target must be a path")
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not UTF-8") from None
    return decoded[1:], parse_query(query)


def parse_query(query: str) -> dict[str, str]:
    """``a=1&b=2`` with percent-escapes decoded. A ``+`` stays a plus: this is not a
    form submission, and a token may well contain one."""
    fields = {}
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key:
            fields[urllib.parse.unquote(key, errors="replace")] = urllib.parse.unquote(
                value, errors="replace")
    return fields


def reason(status: int) -> str:
    if status == tus.CHECKSUM_MISMATCH:
        return "Checksum Mismatch"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One byte range of ``Range: bytes=...`` as [start, end); None if unsatisfiable.
    Several ranges, another unit, or numbers that are not plain ASCII digits mean
    "the whole file" (RFC 9110 allows ignoring a Range)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return 0, size
    first, _, last = spec.strip().partition("-")
    if first == "":
        suffix = parse_count(last)
        if suffix is None:
            return 0, size
        if suffix <= 0 or size == 0:
            return None
        return max(0, size - suffix), size
    start, end = parse_count(first), parse_count(last) if last else size - 1
    if start is None or end is None:
        return 0, size
    if start >= size or end < start:
        return None
    return start, min(end + 1, size)


def declared_sha256(headers: dict[str, str]) -> Digest | None:
    """The SHA-256 a PUT declares (X-Content-SHA256: hex, or Repr-Digest, Content-Digest
    (RFC 9530) or the older Digest: sha-256 in base64); None when none (the upload is
    then stored unverified)."""
    value = headers.get("x-content-sha256", "").strip().lower()
    if value:
        if not is_hex64(value):
            raise HttpError(400, "X-Content-SHA256 must be 64 hex digits", close=True)
        return Digest(SHA256, value)
    for header in ("repr-digest", "content-digest", "digest"):
        for item in headers.get(header, "").split(","):
            algorithm, _, encoded = item.strip().partition("=")
            if algorithm.strip().lower() == "sha-256":
                try:
                    raw = base64.b64decode(encoded.strip().strip(":"), validate=True)
                except (binascii.Error, ValueError):
                    raise HttpError(400, f"{header}: sha-256 is not base64", close=True) from None
                if len(raw) == 32:
                    return Digest(SHA256, raw.hex())
    return None
