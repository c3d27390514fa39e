"""HTTP/1.1 on the same port: curl, wget and browsers can download and upload.

The native protocol frames messages with a length prefix; HTTP delimits its headers
with a blank line and then says how long the body is (Content-Length) or sends it in
chunks. Parsing that is h11's job: a sans-I/O state machine of the same shape as our
``protocol.FrameDecoder`` (bytes in, events out, never a socket). This module drives an
``h11.Connection`` from the same channel and loop as the native protocol, and applies
the same storage rules, limits, token and console rows:

* ``GET``/``HEAD`` of a file: ``Content-Length``, ``Content-Type``, ``ETag`` (its
  SHA-256), ``Last-Modified``, one ``Range`` (206, for ``curl -C -``), ``If-None-Match``;
  the body goes out with ``os.sendfile`` (h11 passes our file region through untouched).
* ``GET`` of a directory: an HTML index that lists it and uploads into it.
* ``PUT /path``: with ``Content-Length`` or chunked; committed atomically like a native
  upload; ``X-Content-SHA256`` or ``Digest: sha-256=...`` is verified when sent.
* Token: ``Authorization: Bearer``, or a cookie set by visiting ``/?token=...``.

Requests on one connection are served one after another (keep-alive, pipelining).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hmac
import html
import http
import logging
import mimetypes
import os
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import h11

from . import __version__
from .buffers import FileRegion
from .channel import Channel, ChannelState, Phase
from .session import Session, Transfer
from .storage import OpenFile, StorageError, Upload, printable, split_name

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("muxserver")

#: HTTP status for each stable error code of the native protocol.
STATUS = {
    "bad_name": 400, "bad_request": 400, "checksum_mismatch": 400, "forbidden": 403,
    "not_a_file": 403, "not_found": 404, "is_directory": 409, "not_a_directory": 409,
    "exists": 409, "overwrite_refused": 409, "timeout": 408, "too_large": 413,
    "offset_mismatch": 416, "unauthorized": 401, "io_error": 500, "internal": 500,
    "too_many_clients": 503, "shutting_down": 503, "no_space": 507,
}
TOKEN_COOKIE = "muxserver_token"


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.close = status, message, headers or [], close


class _FileBody:
    """A placeholder h11 passes through unchanged: the body is sent by sendfile."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class HttpSession(Session):
    """HTTP/1.1 on one channel, through h11."""

    def __init__(self, server: "Server", channel: Channel) -> None:
        super().__init__(server, channel)
        self.conn = h11.Connection(h11.SERVER,
                                   max_incomplete_event_size=server.limits.max_header_size)
        self.request: h11.Request | None = None
        self.name = ""
        self.authorized = server.config.token is None
        self.auth_failures = 0
        self.put_received = 0

    # -- bytes in

    def data_received(self, data: memoryview) -> None:
        self.conn.receive_data(bytes(data))
        if self.header_since is None and self.conn.their_state is h11.IDLE:
            self.header_since = self.server.loop.now
        self.process()

    def eof_received(self) -> None:
        self.conn.receive_data(b"")
        self.process()

    def process(self) -> None:
        channel = self.channel
        while channel.state is ChannelState.OPEN and not channel.closed:
            if self.must_wait():
                return
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()  # keep-alive: the next request may begin
                self.header_since = self.server.loop.now if self.conn.trailing_data[0] else None
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                channel.close_when_done("HTTP connection: close")
                return
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.protocol_error(exc)
                return
            if event is h11.NEED_DATA:
                channel.resume_reading()
                return
            if event is h11.PAUSED:
                channel.pause_reading()
                return
            self.handle(event)

    def handle(self, event: Any) -> None:
        if type(event) is h11.Data:
            self.body_received(event.data)
        elif type(event) is h11.Request:
            self.header_since = None
            self.start_request(event)
        elif type(event) is h11.EndOfMessage:
            self.finish_request()
        elif type(event) is h11.ConnectionClosed:
            self.abort_upload()
            self.channel.close_when_done("peer finished sending")

    # -- requests

    def start_request(self, request: h11.Request) -> None:
        self.request = request
        self.name = ""
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        if self.channel.trace is not None:
            self.channel.trace("http_request", self.channel.id, method=method, target=target)
        try:
            size = len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)
            if size > self.server.limits.max_header_size:
                # (h11 caps only an *incomplete* header; a whole one can be bigger)
                raise HttpError(431, f"request header of {size} bytes is over the limit of "
                                     f"{self.server.limits.max_header_size}", close=True)
            if self.server.stopping:
                raise HttpError(503, "the server is shutting down", close=True)
            path, query = self.parse_target(target)
            if not self.check_access(method, path, query):
                return
            if method in ("GET", "HEAD"):
                self.start_get(path, query, head=method == "HEAD")
            elif method == "PUT":
                self.start_put(path)
            else:
                raise HttpError(405, f"{method} is not supported here",
                                [("Allow", "GET, HEAD, PUT")])
        except HttpError as exc:
            self.fail_request(exc)
        except StorageError as exc:
            self.fail_request(HttpError(STATUS.get(exc.code, 500), exc.message,
                                close=self.has_body(request)))

    @staticmethod
    def parse_target(target: str) -> tuple[str, dict[str, str]]:
        """A request target as (name below the root, query); '' is the root, a
        trailing '/' a directory. Percent-escapes are decoded as strict UTF-8."""
        parts = urllib.parse.urlsplit(target)
        if not parts.path.startswith("/"):
            raise HttpError(400, "the request target must be a path")
        try:
            path = urllib.parse.unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "the path is not UTF-8") from None
        query = dict(urllib.parse.parse_qsl(parts.query))
        return path[1:], query

    def check_access(self, method: str, path: str, query: dict[str, str]) -> bool:
        """True to go on; otherwise a response (401, or a redirect setting the cookie)."""
        token = self.server.config.token
        if token is None or self.authorized:
            return True
        headers = self.headers()
        offered = ""
        if headers.get("authorization", "").startswith("Bearer "):
            offered = headers["authorization"][7:].strip()
        for cookie in headers.get("cookie", "").split(";"):
            key, _, value = cookie.strip().partition("=")
            if key == TOKEN_COOKIE and not offered:
                offered = urllib.parse.unquote(value)
        from_query = "token" in query and method in ("GET", "HEAD")
        if from_query:
            offered = query["token"]
        if offered and hmac.compare_digest(offered.encode(), token.encode()):
            self.authorized = True
            if not from_query:
                return True
            rest = {k: v for k, v in query.items() if k != "token"}
            location = urllib.parse.quote("/" + path) + (
                "?" + urllib.parse.urlencode(rest) if rest else "")
            cookie = (f"{TOKEN_COOKIE}={urllib.parse.quote(token)}; Path=/; HttpOnly; "
                      "SameSite=Strict")
            self.respond(303, [("Location", location), ("Set-Cookie", cookie)],
                         b"token accepted\n")
            return False
        self.auth_failures += 1
        message = "wrong token" if offered else "this server needs a token"
        close = self.auth_failures >= self.server.limits.auth_failures or self.has_body()
        log.warning("%s HTTP %s (%d of %d)", self.channel.peer, message, self.auth_failures,
                    self.server.limits.auth_failures,
                    extra={"event": "refused", "conn": self.channel.id})
        self.fail_request(HttpError(401, f"{message}: send 'Authorization: Bearer TOKEN', or open "
                                 "/?token=TOKEN once in a browser",
                            [("WWW-Authenticate", 'Bearer realm="muxserver"')], close=close))
        return False

    # -- GET and HEAD

    def start_get(self, path: str, query: dict[str, str], head: bool) -> None:
        name = path.rstrip("/")
        if path == "" or path.endswith("/"):
            self.send_index(name, head)
            return
        try:
            opened = self.server.root.open_file(name)
        except StorageError as exc:
            if exc.code != "is_directory":
                raise
            location = urllib.parse.quote("/" + name + "/")
            self.respond(301, [("Location", location)], b"it is a directory\n", head=head)
            return
        self.name = name
        if opened.sha256 is None:
            self.start_job(self.hash_then(
                opened, name, then=lambda: self.send_file(opened, head),
                failed=lambda exc: self.fail_request(HttpError(500, exc.message, close=True))))
        else:
            self.send_file(opened, head)

    def send_file(self, opened: OpenFile, head: bool) -> None:
        headers = self.headers()
        etag = f'"{opened.sha256}"'
        common = [("ETag", etag), ("Last-Modified", email.utils.formatdate(opened.mtime,
                                                                            usegmt=True)),
                  ("Accept-Ranges", "bytes"),
                  ("Content-Type", mimetypes.guess_type(self.name)[0]
                   or "application/octet-stream")]
        if etag in headers.get("if-none-match", ""):
            os.close(opened.fd)
            self.respond(304, common, head=True)
            return
        start, end, status = 0, opened.size, 200
        if "range" in headers:
            span = parse_range(headers["range"], opened.size)
            if span is None:
                os.close(opened.fd)
                self.fail_request(HttpError(
                    416, f"the range is outside the file's {opened.size} bytes",
                    [("Content-Range", f"bytes */{opened.size}")]))
                return
            if span != (0, opened.size):
                start, end, status = span[0], span[1], 206
                common.append(("Content-Range", f"bytes {start}-{end - 1}/{opened.size}"))
        length = end - start
        self.queue(h11.Response(status_code=status, headers=self.base_headers(length) + common))
        if head or not length:
            os.close(opened.fd)
        else:
            transfer = Transfer("get", self.name, length, self.server.loop.now)
            region = FileRegion(opened.fd, start, length,
                                on_done=lambda: self.download_sent(transfer, opened))
            transfer.region = region
            self.transfer = transfer
            parts = self.conn.send_with_data_passthrough(h11.Data(data=_FileBody(length)))
            for part in parts:
                if isinstance(part, _FileBody):
                    self.channel.write_file(region)
                else:
                    self.channel.write(part)
        self.queue(h11.EndOfMessage())
        self.responded(status, length)

    def download_sent(self, transfer: Transfer, opened: OpenFile) -> None:
        if self.transfer is transfer:
            self.transfer = None
        self.server.stats.transfers_done += 1
        log.info("%s HTTP get %s: %d bytes, sha256 %s ok", self.channel.peer,
                 printable(transfer.name), transfer.total, (opened.sha256 or "")[:16],
                 extra={"event": "completed", "conn": self.channel.id})

    def send_index(self, name: str, head: bool) -> None:
        entries = sorted(self.server.root.iter_entries(name),
                         key=lambda e: (e["type"] != "dir", e["name"]))
        page = index_page(name, entries).encode("utf-8")
        self.respond(200, [("Content-Type", "text/html; charset=utf-8"),
                           ("Cache-Control", "no-store")], page, head=head)

    # -- PUT

    def start_put(self, path: str) -> None:
        headers = self.headers()
        if path == "" or path.endswith("/"):
            raise HttpError(400, "PUT needs a file name, not a directory", close=True)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if "content-length" not in headers and not chunked:
            raise HttpError(411, "send Content-Length or Transfer-Encoding: chunked",
                            close=True)
        length = int(headers.get("content-length", "0") or 0) if not chunked else 0
        limit = self.server.limits.max_file_size
        if length > limit:
            raise HttpError(413, f"{length} bytes is over the limit of {limit}", close=True)
        expected = declared_sha256(headers)
        split_name(path)  # refuse a bad name before anything else (StorageError: 400)
        self.upload = self.server.root.begin_upload(
            path, length, expected, overwrite=True,
            allow_overwrite=self.server.config.allow_overwrite)
        self.name = path
        self.put_received = 0
        self.transfer = Transfer("put", path, length, self.server.loop.now)
        if self.conn.they_are_waiting_for_100_continue:
            self.queue(h11.InformationalResponse(status_code=100, headers=[]))

    def body_received(self, data: bytes) -> None:
        upload = self.upload
        if upload is None:
            return  # a refused request's body
        self.put_received += len(data)
        if self.put_received > self.server.limits.max_file_size:
            self.abort_upload()
            self.fail_request(HttpError(413, "the body is over the server's file size limit",
                                close=True))
            return
        try:
            upload.write(memoryview(data))
        except StorageError as exc:
            self.upload = None
            upload.abort()
            self.fail_request(HttpError(STATUS.get(exc.code, 500), exc.message, close=True))
            return
        self.transfer.received = upload.received
        if not upload.length:
            self.transfer.total = upload.received  # chunked: the size is known at the end

    def finish_request(self) -> None:
        if self.upload is not None:
            self.upload.length = self.upload.received  # chunked bodies declared none
        self.finish_upload()

    def commit(self, upload: Upload, digest: str | None) -> None:
        existed = upload.replaces
        try:
            digest = upload.commit(digest)
        except StorageError as exc:
            self.fail_request(HttpError(STATUS.get(exc.code, 500), exc.message))
            return
        self.transfer = None
        self.server.stats.transfers_done += 1
        log.info("%s HTTP put %s: %d bytes, sha256 %s ok", self.channel.peer,
                 printable(upload.name), upload.received, digest[:16],
                 extra={"event": "completed", "conn": self.channel.id})
        body = f"stored {upload.name} ({upload.received} bytes, sha256 {digest})\n".encode()
        self.respond(200 if existed else 201,
                     [("ETag", f'"{digest}"'), ("Content-Type", "text/plain; charset=utf-8")],
                     body)

    # -- responses

    def base_headers(self, length: int) -> list[tuple[str, str]]:
        return [("Server", f"muxserver/{__version__}"), ("Content-Length", str(length)),
                ("Date", email.utils.formatdate(usegmt=True))]

    def queue(self, event: Any) -> None:
        if type(event) in (h11.Response, h11.InformationalResponse) and not event.reason:
            event = type(event)(status_code=event.status_code, headers=event.headers,
                                reason=reason(event.status_code))
        self.channel.write(self.conn.send(event))

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes = b"",
                head: bool = False) -> None:
        """A whole response with a body in memory (HEAD: the headers only)."""
        self.queue(h11.Response(status_code=status,
                                headers=self.base_headers(len(body)) + headers))
        if body and not head:
            self.queue(h11.Data(data=body))
        self.queue(h11.EndOfMessage())
        self.responded(status, len(body))

    def responded(self, status: int, size: int) -> None:
        if self.channel.trace is not None:
            self.channel.trace("http_response", self.channel.id, status=status, size=size)

    def fail_request(self, exc: HttpError) -> None:
        """An error response (if h11 still lets us send one), then maybe close."""
        log.warning("%s HTTP %s refused: %s (%d)", self.channel.peer, printable(self.name),
                    exc.message, exc.status,
                    extra={"event": "refused", "conn": self.channel.id})
        if self.request is not None and self.request.method in (b"GET", b"PUT"):
            self.server.stats.transfers_failed += 1
        headers = [("Content-Type", "text/plain; charset=utf-8"), *exc.headers]
        if exc.close:
            headers.append(("Connection", "close"))
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = f"{exc.status} {exc.message}\n".encode("utf-8", "replace")
            self.respond(exc.status, headers, body)
        if exc.close or self.conn.our_state is not h11.DONE:
            self.abort_upload()
            self.channel.close_when_done(exc.message)

    def protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        """Bad HTTP (h11 says which status fits: 400, or 431 for huge headers)."""
        self.abort_upload()
        status = exc.error_status_hint
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            # h11 refuses to send on a connection it saw break; answer by hand.
            body = f"{status} {exc}\n".encode("utf-8", "replace")
            head = (f"HTTP/1.1 {status} {reason(status)}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            self.channel.write(head.encode() + body)
            self.responded(status, len(body))
        log.warning("%s bad HTTP: %s", self.channel.peer, exc,
                    extra={"event": "refused", "conn": self.channel.id})
        self.channel.close_when_done(f"bad HTTP: {exc}")

    def splice_sink(self) -> None:
        """Never: h11 holds the bytes it has parsed, so bodies come through it."""
        return None

    # -- steps, stopping, timeouts, closing

    def headers(self) -> dict[str, str]:
        if self.request is None:
            return {}
        return {k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in self.request.headers}

    def has_body(self, request: h11.Request | None = None) -> bool:
        request = request or self.request
        return request is not None and any(
            k in (b"content-length", b"transfer-encoding") and v not in (b"0",)
            for k, v in request.headers)

    def server_stopping(self) -> bool:
        if self.busy:
            return False
        self.channel.close_when_done("server stopping")
        return True

    def timeout_phase(self) -> tuple[Phase, float]:
        if self.busy or self.channel.out or self.conn.their_state is h11.SEND_BODY:
            return Phase.TRANSFER, 0.0
        if self.header_since is not None and self.conn.trailing_data[0]:
            return Phase.HEADER, self.header_since
        return Phase.IDLE, 0.0

    def on_timeout(self, phase: Phase) -> None:
        what = self.note_timeout(phase)
        if self.channel.out.file_bytes or self.conn.our_state not in (h11.IDLE,
                                                                      h11.SEND_RESPONSE):
            self.abort_upload()
            self.channel.abort(what)
            return
        if phase is Phase.IDLE:
            self.channel.close_when_done(what)  # nothing was asked: just close
            return
        self.fail_request(HttpError(408, what, close=True))

    # -- what the console shows

    @property
    def recv_buffered(self) -> int:
        return len(self.conn.trailing_data[0])

    @property
    def state_label(self) -> str:
        if self.channel.state is not ChannelState.OPEN:
            return self.channel.state.value
        if self.upload is not None:
            return "HTTP receiving body"
        if self.verifying is not None:
            return "HTTP verifying"
        if self.job is not None:
            return "HTTP hashing"
        if self.channel.out.file_bytes:
            return "HTTP sending body"
        if self.channel.out:
            return "HTTP sending reply"
        return "HTTP idle" if self.conn.their_state is h11.IDLE else "HTTP reading request"


def reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One byte range of ``Range: bytes=...`` as [start, end); None if unsatisfiable.
    Several ranges, or another unit, mean "the whole file" (RFC 9110 allows ignoring)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return 0, size
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                return None
            return max(0, size - suffix), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return 0, size
    if start >= size or start < 0 or end <= start:
        return None
    return start, min(end, size)


def declared_sha256(headers: dict[str, str]) -> str:
    """The SHA-256 a PUT declares (X-Content-SHA256: hex, or Digest/Repr-Digest: sha-256
    in base64), lower-case hex; "" when none (the upload is then stored unverified)."""
    value = headers.get("x-content-sha256", "").strip().lower()
    if value:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise HttpError(400, "X-Content-SHA256 must be 64 hex digits", close=True)
        return value
    for header in ("repr-digest", "digest"):
        for item in headers.get(header, "").split(","):
            algorithm, _, encoded = item.strip().partition("=")
            if algorithm.strip().lower() == "sha-256":
                try:
                    raw = base64.b64decode(encoded.strip().strip(":"), validate=True)
                except (binascii.Error, ValueError):
                    raise HttpError(400, f"{header}: sha-256 is not base64", close=True) from None
                if len(raw) == 32:
                    return raw.hex()
    return ""


def index_page(name: str, entries: list[dict[str, Any]]) -> str:
    """The directory index: a listing, and uploads with a progress bar per file."""
    title = "/" + name + ("/" if name else "")
    rows = []
    if name:
        parent = "/" + name.rsplit("/", 1)[0] + "/" if "/" in name else "/"
        rows.append(f'<tr><td><a href="{html.escape(urllib.parse.quote(parent))}">'
                    f'../</a></td><td></td><td></td></tr>')
    for entry in entries:
        leaf = entry["name"].rsplit("/", 1)[-1]
        is_dir = entry["type"] == "dir"
        href = urllib.parse.quote("/" + entry["name"] + ("/" if is_dir else ""))
        label = html.escape(printable(leaf) + ("/" if is_dir else ""))
        size = "" if entry["type"] != "file" else f'{entry["size"]:,}'
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["mtime"]))
        rows.append(f'<tr><td><a href="{html.escape(href)}">{label}</a></td>'
                    f'<td class="num">{size}</td><td>{when}</td></tr>')
    if not entries:
        rows.append('<tr><td colspan="3"><em>empty</em></td></tr>')
    base = urllib.parse.quote(title)
    return INDEX_TEMPLATE.format(title=html.escape(printable(title)), rows="\n".join(rows),
                                 base=html.escape(base, quote=True), version=__version__)


INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - muxserver</title>
<style>
body {{ font: 16px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
        padding: 0 1rem; color: #1b1b1b; background: #fff; }}
h1 {{ font-size: 1.4rem; word-break: break-all; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
a {{ color: #0645ad; }} a:focus, button:focus, input:focus {{ outline: 3px solid #ffbf47; }}
section {{ margin-top: 2rem; padding: 1rem; border: 1px solid #ccc; border-radius: 6px; }}
ul#uploads {{ list-style: none; padding: 0; }} ul#uploads li {{ margin: .4rem 0; }}
progress {{ width: 14rem; vertical-align: middle; }}
.ok {{ color: #136f2d; }} .err {{ color: #b00020; }}
</style></head>
<body>
<h1>Index of {title}</h1>
<table><thead><tr><th scope="col">Name</th><th scope="col">Size (bytes)</th>
<th scope="col">Modified</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<section aria-labelledby="up">
<h2 id="up">Upload to this directory</h2>
<label for="files">Files:</label>
<input id="files" type="file" multiple>
<button id="send" type="button">Upload</button>
<ul id="uploads" aria-live="polite"></ul>
</section>
<p><small>muxserver {version}</small></p>
<script>
"use strict";
const base = "{base}";
function upload(file) {{
  const item = document.createElement("li");
  const bar = document.createElement("progress");
  const label = document.createElement("span");
  bar.max = file.size || 1; bar.value = 0;
  label.textContent = " " + file.name + ": waiting";
  bar.setAttribute("aria-label", "upload of " + file.name);
  item.append(bar, label);
  document.getElementById("uploads").append(item);
  return new Promise(resolve => {{
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", base + encodeURIComponent(file.name));
    xhr.upload.onprogress = e => {{
      bar.value = e.loaded;
      const percent = Math.floor(100 * e.loaded / (e.total || 1));
      label.textContent = " " + file.name + ": " + percent + " %";
    }};
    xhr.onload = () => {{
      const ok = xhr.status < 300;
      bar.value = bar.max;
      label.className = ok ? "ok" : "err";
      label.textContent = " " + file.name + ": "
        + (ok ? "done" : xhr.status + " " + xhr.responseText);
      resolve(ok);
    }};
    xhr.onerror = () => {{ label.className = "err";
      label.textContent = " " + file.name + ": connection failed"; resolve(false); }};
    xhr.send(file);
  }});
}}
document.getElementById("send").addEventListener("click", async () => {{
  const files = Array.from(document.getElementById("files").files);
  let all = true;
  for (const f of files) {{ all = (await upload(f)) && all; }}
  if (files.length && all) setTimeout(() => location.reload(), 400);
}});
</script>
</body></html>
"""
