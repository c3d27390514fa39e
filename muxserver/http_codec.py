"""HTTP/1.1 through h11: bytes in, requests to the session, responses out.

The native protocol frames messages with a length prefix; HTTP delimits its headers
with a blank line and then says how long the body is (Content-Length) or sends it in
chunks. Parsing that is h11's job: a sans-I/O state machine of the same shape as our
``protocol.FrameDecoder`` (bytes in, events out, never a socket). :class:`HttpCodec`
drives an ``h11.Connection`` for the shared request lifecycle of ``session.py``, and
frames every response: the status each stable error code becomes (:data:`STATUS`),
the headers every response carries, a body from memory or a file region that h11
passes through untouched to ``sendfile``.

What each request means is the rest of the HTTP side's: ``http.py`` (requests),
``http_folders.py`` (listings and archives), ``http_tus.py`` (tus).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import http
import logging
import urllib.parse
from typing import Any, Callable, cast

import h11

from . import __version__, tus
from .access import Refusal
from .buffers import FileRegion
from .digests import SHA256, Digest, is_hex64
from .errors import MuxError
from .protocol import NEED_DATA
from .rules import RequestRules
from .session import Services, Transfer
from .storage import StorageError, Upload
from .transport import Phase, Transport
from .units import parse_count

log = logging.getLogger("muxserver")

#: HTTP status for each stable error code of the native protocol.
STATUS = {
    "bad_name": 400, "bad_request": 400, "checksum_mismatch": 400, "forbidden": 403,
    "not_a_file": 403, "not_found": 404, "is_directory": 409, "not_a_directory": 409,
    "exists": 409, "overwrite_refused": 409, "locked": 423, "timeout": 408, "too_large": 413,
    "offset_mismatch": 416, "unauthorized": 401, "not_permitted": 403,
    "too_many_attempts": 429, "io_error": 500,
    "server_busy": 503,
    "internal": 500, "too_many_clients": 503, "shutting_down": 503, "no_space": 507,
    # (the native framing's own: never met over HTTP, named so the table is whole)
    "bad_magic": 400, "bad_version": 400, "bad_header": 400, "header_too_large": 431,
    "unknown_op": 400,
}
#: Every response: browsers must not guess a type we did not say (an upload named
#: notes.txt holding HTML stays text).
COMMON_HEADERS = [("X-Content-Type-Options", "nosniff")]


class HttpError(Exception):
    """A request that gets an error status; ``close``: close the connection after it
    (the body, if any, is then never read)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None,
                 close: bool = False, expected: bool = False) -> None:
        """``expected``: an answer a client asks for in its normal course (a probe of a
        name that is not there): answered, counted, not logged as a refusal."""
        super().__init__(message)
        self.status, self.message, self.headers, self.close = status, message, headers or [], close
        self.expected = expected


def refusal(exc: MuxError, *, close: bool, tus_request: bool = False) -> HttpError:
    """The HTTP answer to a refusal with a stable code: its status (for a request of
    tus, tus's own where it has one), and Retry-After when the answer is to wait."""
    status = STATUS.get(exc.code, 500)
    if tus_request:
        status = tus.STATUS.get(exc.code, status)
    # (tus's 423 is an upload being written: soon over; WebDAV's is a lock: not so)
    wait = [("Retry-After", "1")] if status == 503 or (tus_request and status == 423) else None
    return HttpError(status, exc.message, wait, close=close)


class _FileBody:
    """A placeholder h11 passes through unchanged: the body is sent by sendfile."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class HttpCodec(RequestRules):
    """HTTP/1.1 on one channel, through h11: the framing half of ``HttpSession``."""

    @property
    def wire(self) -> str:
        return "HTTP "

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(services, channel)
        self.conn = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=self.limits.max_header_size)
        self.request_headers: dict[str, str] = {}
        self.request_method = ""
        self.request_target = ""
        self.offered_kind = ""  # what the request offered to get in (access.Credential.kind)
        self.head = False  # the request is a HEAD: every answer has headers only
        self.name = ""
        self.peer_done = False  # recv returned b"" (the peer finished sending)
        self.streamed = 0  # body bytes of the response being streamed (stream_body)
        #: the tus upload (and the checksum its piece declared) whose piece is arriving
        self.tus_piece: tuple[tus.TusUpload, tuple[str, bytes] | None] | None = None
        self.response_extra: list[tuple[str, str]] = []  # headers of every response now
        #: a request body read into memory (WebDAV's XML), and what then reads it
        self.small_body: bytearray | None = None
        self.small_body_then: Callable[[bytes], None] | None = None

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

    def header_pending(self) -> bool:
        conn = self.conn
        return conn.their_state is h11.IDLE and bool(conn.trailing_data[0])

    def reading_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    # -- a small body, read whole into memory (WebDAV's XML requests)

    def read_body_then(self, then: Callable[[bytes], None], has_body: bool) -> None:
        """Call ``then(body)`` once the request's body is here (at once if it has
        none). Bodies over ``max_xml_body`` are refused (413) and not read."""
        if not has_body:
            then(b"")
            return
        limit = self.limits.max_xml_body
        declared = self.request_headers.get("content-length")
        if declared is not None and int(declared) > limit:  # (h11 checked it is a number)
            raise HttpError(413, f"a request body of {declared} bytes is over the "
                                 f"{limit} this server reads as XML", close=True)
        self.small_body, self.small_body_then = bytearray(), then
        self.continue_if_asked()

    def small_body_received(self, data: bytes) -> None:
        body = self.small_body
        assert body is not None
        body += data
        if len(body) > self.limits.max_xml_body:  # (chunked: counted as it comes)
            self.small_body = self.small_body_then = None
            self.fail_request(HttpError(413, "the request body is over the "
                                             f"{self.limits.max_xml_body} bytes this server "
                                             "reads as XML", close=True))

    def small_body_ended(self) -> None:
        body, then = self.small_body, self.small_body_then
        self.small_body = self.small_body_then = None
        assert body is not None and then is not None
        self.guarded(lambda: then(bytes(body)))

    def guarded(self, step: Callable[[], None]) -> None:
        """Run ``step`` of a request begun earlier; its refusal answers the request."""
        try:
            step()
        except HttpError as exc:
            self.fail_request(exc)
        except StorageError as exc:
            self.fail_request(refusal(exc, close=False))

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

    def send_json(self, status: int, value: object) -> None:
        """A whole response of one JSON value (never cached: it says how things are now)."""
        self.respond(status, [("Content-Type", "application/json"),
                              ("Cache-Control", "no-store")],
                     json.dumps(value).encode() + b"\n")

    def stream_body(self, data: bytes, *, last: bool, status: int = 200) -> None:
        """A piece of a response built as it goes (a listing, a multistatus); with
        ``last``, its end: the trace and the console are told its size in bytes."""
        if data:
            self.queue(h11.Data(data=data))
            self.streamed += len(data)
        if last:
            self.queue(h11.EndOfMessage())
            size, self.streamed = self.streamed, 0
            self.responded(status, size)

    def responded(self, status: int, size: int) -> None:
        self.channel.observe.http_response(self.channel.id, status, size)

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

    def fail_request(self, exc: HttpError) -> None:
        """An error response (if h11 still lets us send one), then maybe close."""
        self.request_failed(str(exc.status), exc.message, self.name, expected=exc.expected)
        headers = [("Content-Type", "text/plain; charset=utf-8"), *exc.headers]
        if exc.close:
            headers.append(("Connection", "close"))
        if self.conn.our_state is h11.SEND_RESPONSE:
            self.respond(exc.status, headers, f"{exc.status} {exc.message}\n".encode())
        if exc.close or self.conn.our_state is not h11.DONE:
            self.discard_upload()
            self.channel.close_when_done(exc.message)

    def continue_if_asked(self) -> None:
        """An upload was taken: a client that sent ``Expect: 100-continue`` may now send
        its body (one that is refused never gets the 100, and sends nothing)."""
        if self.conn.they_are_waiting_for_100_continue:
            self.queue(h11.InformationalResponse(status_code=100, headers=[]))

    def upload_failed(self, upload: Upload, exc: StorageError) -> None:
        tus_request, self.tus_piece = self.tus_piece is not None, None
        # Inside the body, the rest of it would have to be read: close instead.
        self.fail_request(refusal(exc, close=self.reading_body(), tus_request=tus_request))

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
