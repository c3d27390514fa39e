"""What each request does: the native protocol's session on one connection.

A :class:`NativeSession` sits between a channel (bytes) and the root (files). It
feeds received bytes to its :class:`~muxserver.protocol.FrameDecoder`, runs each
request as its header arrives, streams put bodies into an
:class:`~muxserver.storage.Upload`, and queues replies on the channel.

Ordering and backpressure: replies leave in request order because requests are
run one after another. The session stops decoding (and the channel stops reading)
while its queued output is above the high-water mark, or while a reply is being
produced in steps (a *job*: hashing a file whose SHA-256 is not known yet, or a
listing sent a page at a time). Undecoded bytes of later requests simply wait in the
decoder. Each job step does a bounded amount of work, so one client asking for a
huge listing or an unhashed file never holds up the others.

A refused put (bad name, existing file) is answered at once, before its body has
arrived; the body is then read and dropped, so the connection stays usable.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Iterator

from . import protocol
from .buffers import FileRegion
from .channel import Channel, ChannelState, Phase
from .protocol import (
    NEED_DATA,
    BodyData,
    DecoderState,
    FrameDecoder,
    FrameEnd,
    FrameHeader,
    PeerClosed,
    ProtocolError,
    Request,
    RequestError,
)
from .session import Session, Transfer
from .storage import OpenFile, StorageError, Upload, printable, write_error

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("muxserver")


class NativeSession(Session):
    """The native protocol on one channel."""

    def __init__(self, server: "Server", channel: Channel) -> None:
        super().__init__(server, channel)
        limits = server.limits
        self.decoder = FrameDecoder(limits.max_header_size, limits.max_file_size)
        self.upload_id = 0  # id of the put whose body is arriving
        self.requests = 0
        self.authenticated = server.config.token is None
        self.auth_failures = 0
        self.backpressured = False  # reading paused because replies piled up
        self._narrated: tuple[str, str, int, int] = ("", "", 0, 0)  # op, name, done, length

    # -- bytes in (called by the channel)

    def data_received(self, data: memoryview) -> None:
        self.decoder.receive_data(data)
        self.process()
        # The channel reuses its buffer for the next recv: copy what we did not decode yet.
        self.decoder.keep_leftover()

    def eof_received(self) -> None:
        self.decoder.receive_data(b"")
        self.process()

    def output_drained(self) -> None:
        if self.backpressured:
            self.backpressured = False
            if self.channel.trace is not None:
                self.channel.trace("resume", self.channel.id)
        super().output_drained()

    def process(self) -> None:
        """Decode and run requests until more bytes are needed or a reply must drain."""
        channel = self.channel
        trace = channel.trace
        while channel.state is ChannelState.OPEN and not channel.closed:
            if channel.output_full and not self.backpressured:
                self.backpressured = True
                if trace is not None:
                    trace("pause", channel.id, queued=channel.out.total,
                          high=self.server.limits.output_high_water)
            if self.must_wait():
                break
            try:
                event = self.decoder.next_event()
            except ProtocolError as exc:
                self.refuse_stream(exc.code, exc.message)
                return
            if event is NEED_DATA:
                if trace is not None:
                    self.narrate_wait(trace)
                channel.resume_reading()
                break
            if trace is not None:
                self.narrate(trace, event)
            if self.server.stopping and type(event) is FrameHeader:
                self.close_for_stop()  # a request not started yet: not served
                break
            if type(event) is BodyData:  # the hot path of an upload
                self.body_received(event.data)
            elif type(event) is FrameHeader:
                self.start_request(event.fields, event.length)
            elif type(event) is FrameEnd:
                self.finish_request()
            else:
                self.peer_closed(event)
        if self.server.stopping and not self.busy:
            self.close_for_stop()  # the transfer that kept us open is done
        self.note_progress()

    def narrate(self, trace: Any, event: Any) -> None:
        """Tell the trace what the decoder just produced (teaching mode only)."""
        conn = self.channel.id
        op, name, done, length = self._narrated
        if type(event) is FrameHeader:
            fields = event.fields
            op, name = str(fields.get("op", "?")), str(fields.get("name", fields.get("path", "")))
            self._narrated = (op, name, 0, event.length)
            trace("header", conn, op=op, name=name, id=fields.get("id"), length=event.length)
        elif type(event) is BodyData:
            done += len(event.data)
            self._narrated = (op, name, done, length)
            trace("body", conn, n=len(event.data), done=done, length=length)
        elif type(event) is FrameEnd:
            trace("request_done", conn, op=op, name=name)
            if self.decoder.buffered:  # bytes of the next request came in the same recv
                trace("leftover", conn, n=self.decoder.buffered)

    def narrate_wait(self, trace: Any) -> None:
        decoder, conn = self.decoder, self.channel.id
        if decoder.state is DecoderState.PREFIX and decoder.partial:
            trace("prefix_wait", conn, have=decoder.partial)
        elif decoder.state is DecoderState.HEADER:
            trace("header_wait", conn, have=decoder.partial, need=decoder.header_length)

    def server_stopping(self) -> bool:
        """The server began a graceful stop. Return True if we closed at once (idle)."""
        if self.busy:
            return False  # closed when the transfer under way is done (see process)
        self.close_for_stop()
        return True

    def close_for_stop(self) -> None:
        if self.channel.state is not ChannelState.OPEN or self.channel.closed:
            return
        self.queue_reply(None, "shutting_down", protocol.encode_error(
            None, "shutting_down", "the server is shutting down"))
        self.channel.close_when_done("server stopping")

    def note_progress(self) -> None:
        """Track when the current header began (for the slowloris timeout)."""
        decoder = self.decoder
        if decoder.state is DecoderState.HEADER or (
                decoder.state is DecoderState.PREFIX and decoder.partial):
            if self.header_since is None:
                self.header_since = self.server.loop.now
        else:
            self.header_since = None
        if not self.channel.closed:
            self.channel.rearm_timer()

    # -- requests

    def start_request(self, fields: dict[str, Any], length: int) -> None:
        self.requests += 1
        self.header_since = None
        try:
            req = protocol.parse_request(fields, length)
        except RequestError as exc:
            self.reply_error(protocol.request_id(fields), exc.code, exc.message)
            return  # any body is dropped as it arrives
        if req.op == "auth" or not self.authenticated:
            self.check_token(req)
            return
        try:
            if req.op == "put":
                self.start_put(req)
            elif req.op == "get":
                self.start_get(req)
            elif req.op == "stat":
                self.reply_ok(req.id, **self.server.root.stat(req.name))
            elif req.op == "partial":
                offset = self.server.root.partial_offset(req.name, req.sha256, req.size)
                self.reply_ok(req.id, name=req.name, offset=offset)
            else:
                entries = self.server.root.iter_entries(req.name, req.recursive)
                self.start_job(self.list_pages(req, entries))
        except StorageError as exc:
            self.reply_error(req.id, exc.code, exc.message, req)

    def check_token(self, req: Request) -> None:
        """The auth request, or any request before a good one."""
        expected = self.server.config.token
        if req.op == "auth" and (expected is None or hmac.compare_digest(
                req.token.encode("utf-8"), expected.encode("utf-8"))):
            self.authenticated = True
            self.reply_ok(req.id)
            return
        self.auth_failures += 1
        if req.op == "auth":
            message = "wrong token"
        else:
            message = "this server needs a token: send an auth request first"
        log.warning("%s %s (%d of %d)", self.channel.peer, message, self.auth_failures,
                    self.server.limits.auth_failures,
                    extra={"event": "refused", "conn": self.channel.id})
        self.queue_reply(req.id, "unauthorized",
                         protocol.encode_error(req.id, "unauthorized", message))
        # A body from a stranger is not worth reading; nor is a fourth guess.
        if req.length or self.auth_failures >= self.server.limits.auth_failures:
            self.channel.close_when_done("unauthorized")

    def start_put(self, req: Request) -> None:
        if req.offset + req.length > self.server.limits.max_file_size:
            raise StorageError("too_large", f"{req.offset + req.length} bytes is over the "
                                            f"limit of {self.server.limits.max_file_size}")
        upload = self.server.root.begin_upload(
            req.name, req.length, req.sha256, overwrite=req.overwrite,
            allow_overwrite=self.server.config.allow_overwrite, mtime=req.mtime,
            resumable=req.resumable, offset=req.offset)
        self.upload = upload
        self.upload_id = req.id
        self.transfer = Transfer("put", req.name, upload.size, self.server.loop.now)
        self.transfer.received = upload.offset

    def body_received(self, data: memoryview) -> None:
        upload = self.upload
        if upload is None:
            return  # the body of a refused request: dropped
        try:
            upload.write(data)
        except StorageError as exc:  # disk full, file too large, I/O error
            self.upload = None
            upload.abort()
            self.reply_error(self.upload_id, exc.code, exc.message, op="put", name=upload.name)
            return
        self.transfer.received = upload.offset + upload.received

    # -- bodies that go straight from the socket to the file (splice)

    def splice_sink(self) -> tuple[int, int, int] | None:
        """(fd, offset, count) when the next body bytes may bypass Python, else None."""
        upload = self.upload
        if upload is None or self.job is not None or self.verifying is not None:
            return None
        count = self.decoder.body_pending_unbuffered
        target = upload.splice_target() if count else None
        return None if target is None else (*target, count)

    def spliced(self, count: int) -> None:
        self.decoder.body_moved_elsewhere(count)
        self.upload.spliced(count)
        self.transfer.received = self.upload.offset + self.upload.received
        if not self.decoder.body_left:
            self.process()  # the frame's end: commit
        else:
            self.note_progress()

    def splice_failed(self, count: int, exc: OSError) -> None:
        """Writing spliced bytes to the file failed (disk full...): like a failed write."""
        self.decoder.body_moved_elsewhere(count)
        upload, self.upload = self.upload, None
        upload.abort()
        error = write_error(exc, upload.name)
        self.reply_error(self.upload_id, error.code, error.message, op="put", name=upload.name)
        self.process()  # the rest of the body is read and dropped

    def finish_request(self) -> None:
        self.finish_upload()  # (nothing to do for the end of any other request)

    def commit(self, upload: Upload, digest: str | None) -> None:
        try:
            digest = upload.commit(digest)
        except StorageError as exc:
            self.reply_error(self.upload_id, exc.code, exc.message, op="put", name=upload.name)
            return
        self.reply_ok(self.upload_id, name=upload.name, size=upload.size, sha256=digest)
        self.transfer_finished(upload.name, upload.size, digest)

    def start_get(self, req: Request) -> None:
        opened = self.server.root.open_file(req.name)
        if req.offset > opened.size:
            os.close(opened.fd)
            raise StorageError("offset_mismatch", f"{req.name!r} has {opened.size} bytes; "
                                                  f"cannot resume from {req.offset}")
        if opened.sha256 is not None:
            self.queue_download(req, opened)
        else:
            self.start_job(self.hash_then(
                opened, req.name, then=lambda: self.queue_download(req, opened),
                failed=lambda exc: self.reply_error(req.id, exc.code, exc.message, req)))

    def queue_download(self, req: Request, opened: OpenFile) -> None:
        """Queue the reply header and the body: inline if small, else a sendfile region."""
        offset, length = req.offset, opened.size - req.offset
        fields: dict[str, Any] = {"name": req.name, "size": opened.size,
                                  "sha256": opened.sha256, "mtime": opened.mtime}
        if offset:
            fields["offset"] = offset
        header = protocol.encode_ok(req.id, length=length, **fields)
        channel = self.channel
        if length <= self.server.limits.inline_file_size:
            try:
                data = os.pread(opened.fd, length, offset)
            finally:
                os.close(opened.fd)
            if len(data) != length:
                self.reply_error(req.id, "io_error", f"{req.name!r} changed while being read",
                                 req)
                return
            self.queue_reply(req.id, None, header, len(data))
            channel.write(data)
            self.transfer_finished(req.name, opened.size, opened.sha256, op="get")
            return
        transfer = Transfer("get", req.name, length, self.server.loop.now)
        region = FileRegion(opened.fd, offset, length,
                            on_done=lambda: self.download_sent(transfer, opened.sha256))
        transfer.region = region
        self.transfer = transfer
        self.queue_reply(req.id, None, header, length)
        channel.write_file(region)

    def download_sent(self, transfer: Transfer, digest: str) -> None:
        if self.transfer is transfer:
            self.transfer = None
        self.transfer_finished(transfer.name, transfer.total, digest, op="get")
        if self.server.stopping and not self.busy:
            self.close_for_stop()

    # -- replies produced in steps

    def list_pages(self, req: Request, entries: Iterator[dict[str, Any]]) -> Iterator[None]:
        """Send a listing as frames of up to list_page_size entries each."""
        page_size = self.server.limits.list_page_size
        page: list[bytes] = []
        try:
            for entry in entries:
                if len(page) == page_size:
                    self.send_page(req.id, page, more=True)
                    page = []
                    yield
                page.append(json.dumps(entry, ensure_ascii=False).encode() + b"\n")
        finally:
            entries.close()
        self.send_page(req.id, page, more=False)

    def send_page(self, req_id: int, page: list[bytes], more: bool) -> None:
        body = b"".join(page)
        self.queue_reply(req_id, None, protocol.encode_ok(req_id, length=len(body), more=more,
                                                          count=len(page)), len(body))
        self.channel.write(body)

    # -- replies

    def reply_ok(self, req_id: int, **fields: Any) -> None:
        self.queue_reply(req_id, None, protocol.encode_ok(req_id, **fields))

    def queue_reply(self, req_id: int | None, code: str | None, frame: bytes,
                    body: int = 0) -> None:
        """Queue one reply frame (its body, if any, follows it); tell the trace."""
        self.channel.write(frame)
        if self.channel.trace is not None:
            self.channel.trace("reply", self.channel.id, id=req_id, code=code,
                               size=len(frame) + body)

    def reply_error(self, req_id: int | None, code: str, message: str,
                    req: Request | None = None, *, op: str = "", name: str = "") -> None:
        self.queue_reply(req_id, code, protocol.encode_error(req_id, code, message))
        op = op or (req.op if req else "")
        name = name or (req.name if req else "")
        if self.transfer is not None and self.transfer.op != "get":
            self.transfer = None
        if op in ("put", "get"):
            self.server.stats.transfers_failed += 1
        log.warning("%s %s %s refused: %s (%s)", self.channel.peer, op or "request",
                    printable(name), message, code,
                    extra={"event": "refused", "conn": self.channel.id})
        if code in protocol.FATAL_CODES:
            self.channel.close_when_done(message)

    def transfer_finished(self, name: str, size: int, digest: str, op: str = "put") -> None:
        if op == "put":
            self.transfer = None
        self.server.stats.transfers_done += 1
        log.info("%s %s %s: %d bytes, sha256 %s ok", self.channel.peer, op, printable(name), size,
                 digest[:16], extra={"event": "completed", "conn": self.channel.id})

    def refuse_stream(self, code: str, message: str) -> None:
        """A framing error: the stream cannot be resynced. Reply, then close."""
        self.abort_upload()
        self.reply_error(None, code, message)
        self.channel.close_when_done(message)

    # -- end of the connection

    def peer_closed(self, event: PeerClosed) -> None:
        if event.mid_frame:
            what = "mid-upload" if self.upload is not None else "mid-request"
            log.warning("%s disconnected %s", self.channel.peer, what,
                        extra={"event": "reset", "conn": self.channel.id})
            self.channel.abort(f"peer closed {what}")
        else:
            # b"" means "done sending", not "gone": the replies still queued go out first.
            self.channel.close_when_done("peer finished sending")

    def timeout_phase(self) -> tuple[Phase, float]:
        if self.upload is not None or self.decoder.state is DecoderState.BODY:
            return Phase.TRANSFER, 0.0
        if self.channel.out or self.job is not None or self.verifying is not None:
            return Phase.TRANSFER, 0.0
        if self.header_since is not None:
            return Phase.HEADER, self.header_since
        return Phase.IDLE, 0.0

    def on_timeout(self, phase: Phase) -> None:
        what = self.note_timeout(phase)
        if self.channel.out.file_bytes:
            self.channel.abort(what)  # inside a body: no frame can be sent any more
            return
        self.abort_upload()
        self.reply_error(None, "timeout", what)

    # -- what the console shows

    @property
    def recv_buffered(self) -> int:
        return self.decoder.buffered

    @property
    def state_label(self) -> str:
        if self.channel.state is not ChannelState.OPEN:
            return self.channel.state.value
        if self.upload is not None:
            return "receiving body"
        if self.verifying is not None:
            return "verifying"
        if self.transfer is not None and self.transfer.op == "hash":
            return "hashing"
        if self.channel.out.file_bytes:
            return "sending body"
        if self.channel.out:
            return "sending reply"
        state = self.decoder.state
        if state is DecoderState.PREFIX and not self.decoder.partial:
            return "idle"
        if state is DecoderState.BODY:
            return "skipping body"  # the body of a refused request
        return state.value
