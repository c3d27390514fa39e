"""HTTP/1.1 on the same port: curl, wget and browsers can download and upload.

The native protocol frames messages with a length prefix; HTTP delimits its headers
with a blank line and then says how long the body is (Content-Length) or sends it in
chunks. Parsing that is h11's job: a sans-I/O state machine of the same shape as our
``protocol.FrameDecoder`` (bytes in, events out, never a socket). :class:`HttpSession`
drives an ``h11.Connection`` (http_codec.py) and translates its events into the shared
request lifecycle of ``session.py`` (admission, timeouts, transfers, statistics),
exactly as the native session does; this module adds only what is HTTP's own (its
folders are in http_folders.py, tus in http_tus.py):

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
import email.utils
import mimetypes
import urllib.parse
from typing import Any

import h11

from . import tus
from .access import READ, WRITE, changes_state, from_another_site, navigated_by_a_person
from .digests import Digest
from .http_codec import (
    HttpError,
    declared_sha256,
    parse_query,
    parse_range,
    parse_target,
    refusal,
)
from .http_dav import ALLOWED_METHODS, DAV_METHODS, DavRequests
from .http_folders import ARCHIVES, FolderReplies
from .http_signin import AUTH_PATH, SignInRequests
from .http_tus import TusRequests
from .index_page import ASSETS, ASSETS_PATH
from .lifecycle import Work
from .listings import HtmlListing, listing_for
from .names import printable
from .storage import OpenFile, StorageError, Upload, split_name

#: A user's file is shown in a sandbox: no script in it runs with this origin's rights.
USER_FILE_CSP = ("Content-Security-Policy", "sandbox")


class HttpSession(TusRequests, FolderReplies, SignInRequests, DavRequests):
    """HTTP/1.1 on one channel: what each request means."""

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

    # -- requests

    def start_request(self, request: h11.Request, again: bool = False) -> None:
        """Host, then credentials, then everything else; the body waits until then.
        ``again``: once more, after a password was checked (session.admit)."""
        self.request_headers = headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                                          for k, v in request.headers}
        self.request_method = request.method.decode("ascii", "replace")
        self.request_target = request.target.decode("ascii", "replace")
        self.head = request.method == b"HEAD"
        self.name = ""
        self.tus_piece = None
        self.response_extra = []
        self.lock_tokens = frozenset()
        self.small_body = self.small_body_then = None
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        if not again:
            self.channel.observe.http_request(self.channel.id, method, target)
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
            if target.startswith(ASSETS_PATH) and method in ("GET", "HEAD") and not has_body:
                self.send_asset(target[len(ASSETS_PATH):].partition("?")[0])
                return  # (the page's own style and script: no secret, for everyone)
            if target == AUTH_PATH + "signout" and method == "POST" and not has_body:
                self.sign_out()  # (whatever the cookie holds, even an ended session)
                return
            offered, from_query = self.credentials(method, target, headers)
            if foreign and not navigated_by_a_person(headers):
                offered = None  # (not checked, so not counted: see access.py)
            self.offered_kind = offered.kind if offered is not None else ""
            if not self.admit(offered, has_body=has_body,
                              again=lambda: self.start_request(request, again=True)):
                return
            self.check_request(method, request, headers)
            path, query = parse_target(target)
            if from_query and self.sign_in_from_query(path, query, from_query):
                pass
            elif target.startswith(AUTH_PATH) and not has_body:
                self.auth_request(method, target[len(AUTH_PATH):].partition("?")[0], query)
            elif path == tus.PREFIX or path.startswith(tus.PREFIX + "/"):
                self.tus_request(method, path[len(tus.PREFIX):].strip("/"), headers, has_body)
            elif method in ("GET", "HEAD"):
                self.start_get(path, query)
            elif method == "PUT":
                self.start_put(path, headers)
            elif method in DAV_METHODS:
                self.dav_request(method, path, headers, has_body)
            else:
                raise HttpError(405, f"{method} is not supported here",
                                [("Allow", ALLOWED_METHODS)], close=has_body)
        except HttpError as exc:
            self.fail_request(exc)
        except StorageError as exc:
            self.fail_request(refusal(exc, close=has_body))

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

    # -- GET and HEAD of a file

    def send_asset(self, name: str) -> None:
        """One of the index page's own files (index_page.ASSETS), with its ETag: a
        browser that has it already gets 304."""
        asset = ASSETS.get(name)
        if asset is None:
            raise HttpError(404, f"the page has no file {printable(name)!r}")
        etag = f'"{asset.etag}"'
        headers = [("ETag", etag), ("Cache-Control", "public, max-age=86400"),
                   ("Content-Type", asset.media_type)]
        if etag in self.request_headers.get("if-none-match", ""):
            self.respond(304, headers)
        else:
            self.respond(200, headers, asset.data)

    def start_get(self, path: str, query: dict[str, str]) -> None:
        name = path.rstrip("/")
        if path == "" or path.endswith("/"):
            if query.get("download") in ARCHIVES:
                self.send_archive(name, query["download"])
            elif "count" in query and self.grant.allows(READ):
                self.send_count(name)
            elif not self.grant.allows(READ) and self.grant.allows(WRITE):
                self.send_drop_box(name)  # uploads only: a form, and no names at all
            else:
                form = listing_for(name, query, self.request_headers.get("accept", ""),
                                   self.page_rights())
                # (a search's rows are paths below the folder: the HTML page's rows are
                # the folder's own, with actions on them; its script searches in JSON)
                search = "" if isinstance(form, HtmlListing) else query.get("search", "")
                self.send_listing(form, search.strip())
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
        self.preconditions(path)  # (WebDAV's If header: lock tokens, ETags)
        self.start_upload(path, length, expected, overwrite=True)
        self.continue_if_asked()

    def body_received(self, data: bytes) -> None:
        if self.small_body is not None:
            self.small_body_received(data)
            return
        upload = self.upload
        if upload is None or self.work.state is not Work.RECEIVING:
            return  # the body of a request answered already
        if upload.length:  # (its size was checked when it began)
            self.write_body(data)
            return
        try:  # chunked: the size is counted as it comes, and known at the end
            self.check_size(upload.received + len(data))
        except StorageError as exc:
            self.fail_request(HttpError(413, exc.message, close=True))
            return
        self.write_body(data)
        if self.active is not None:
            self.active.total = upload.received

    def finish_request(self) -> None:
        if self.small_body is not None:
            self.small_body_ended()
            return
        if self.upload is None or self.work.state is not Work.RECEIVING:
            return  # (no upload, or a refused one: answered already)
        if self.tus_piece is not None:
            self.finish_piece()
            return
        if "transfer-encoding" in self.request_headers:  # (chunked: no length declared)
            self.upload.body_ended()
        self.finish_upload()

    def upload_stored(self, upload: Upload, digest: Digest) -> None:
        etag = ("ETag", f'"{digest.hex}"')  # (a SHA-256: HTTP uploads are hashed in it)
        if self.tus_piece is not None:  # the last piece of a tus upload
            self.tus_piece = None
            self.respond(204, [("Upload-Offset", str(upload.size)), etag])
            return
        body = f"stored {self.outside(upload.asked_name)} ({upload.size} bytes, {digest})\n".encode()
        self.respond(200 if upload.replaces else 201,
                     [etag, ("Content-Type", "text/plain; charset=utf-8")], body)
