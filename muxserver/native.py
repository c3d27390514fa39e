"""The native protocol on one connection: frames in, requests run, frames out.

A :class:`NativeSession` feeds received bytes to its
:class:`~muxserver.protocol.FrameDecoder` and turns each decoded request into a call of
the shared lifecycle (``session.py``): admission, uploads, downloads, listings, errors.
It only translates: what a request means is decided there, and what a name means in
``storage/``.

Ordering and backpressure: replies leave in request order because requests are run
one after another. Undecoded bytes of later requests simply wait in the decoder while
the session waits (a job, a verification, queued output).

A refused put (bad name, existing file) is answered at once, before its body has
arrived; the body is then read and dropped, so the connection stays usable. A request
that is not admitted (no token yet, a wrong one) is answered too, but its body is
never read: the connection is closed instead.

A put may give its digest after its body, in a ``trailer`` frame (the sender hashes
the file while it sends it, instead of reading it twice): the body is stored and
hashed as usual, and the commit waits for that frame, the very next one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Generator

from . import protocol
from .access import LINK, PASSWORD, TOKEN, Credential, Refusal
from .buffers import FileRegion
from .digests import SHA256, Digest
from .lifecycle import Event, Work
from .listings import LeftOutLog
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
from .names import printable
from .rules import RequestRules
from .shares import DEFAULT_EXPIRY
from .session import Job, Services
from .storage import (
    Entry,
    OpenFile,
    StorageError,
    Upload,
    native_identity,
    write_error,
)
from .transport import Phase, Transport

log = logging.getLogger("muxserver")


class NativeSession(RequestRules):
    """The native protocol on one channel."""

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(services, channel)
        self.decoder = FrameDecoder(self.limits.max_header_size, self.limits.max_file_size)
        self.request_id: int | None = None  # the request being served (a put: its body)
        #: what the last accepted auth request presented (checked again for every request)
        self.credential: Credential | None = None
        # A put whose digest follows its body: (its id, the digest's algorithm) until the
        # trailer frame has come (also for a refused put: its trailer is then dropped).
        self.trailer_due: tuple[int, str] | None = None

    # -- bytes in (called by the channel)

    def data_received(self, data: memoryview) -> None:
        self.decoder.receive_data(data)
        self.process()
        # The channel reuses its buffer for the next recv: copy what we did not decode yet.
        self.decoder.keep_leftover()

    def eof_received(self) -> None:
        self.decoder.receive_data(b"")
        self.process()

    # -- the decoder, as the lifecycle asks for it

    def next_event(self) -> Any:
        try:
            event = self.decoder.next_event()
        except ProtocolError as exc:
            if exc.code == "too_large" and exc.fields.get("op") == "put":
                self.begin_transfer("put", str(exc.fields.get("name", "")))  # a failed put
            self.refuse_stream(exc.code, exc.message)
            return None
        if event is NEED_DATA:
            self.channel.observe.need_data(self.channel.id, self.decoder)
        return event

    def handle(self, event: Any) -> None:
        if type(event) is BodyData:  # the hot path of an upload
            self.channel.observe.frame_body(self.channel.id, len(event.data))
            self.write_body(event.data)
        elif type(event) is FrameHeader:
            self.channel.observe.frame_header(self.channel.id, event.fields, event.length)
            if self.trailer_due is not None and self.take_trailer(event.fields):
                return  # the put's own trailer: taken
            if self.services.stopping:
                self.close_for_stop()  # a request not started yet: not served
            else:
                self.start_request(event.fields, event.length)
        elif type(event) is FrameEnd:
            self.channel.observe.frame_end(self.channel.id, self.decoder)
            if self.trailer_due is not None and self.work.state is Work.RECEIVING:
                self.work.move(Event.BODY_ENDED)  # the digest to check it against is next
                return
            self.finish_upload()  # (nothing to do at the end of any other request)
        else:
            self.peer_closed(event)

    def header_pending(self) -> bool:
        decoder = self.decoder
        return decoder.state is DecoderState.HEADER or (
            decoder.state is DecoderState.PREFIX and decoder.partial > 0)

    def reading_body(self) -> bool:
        return self.decoder.state is DecoderState.BODY

    # -- requests

    def start_request(self, fields: dict[str, Any], length: int) -> None:
        """Admit, check and run one request (its body, if any, follows as events)."""
        self.header_since = None
        self.request_id = protocol.request_id(fields)
        if fields.get("op") == "auth":
            self.log_in(fields, length)
            return
        if not self.admit(self.credential, has_body=length > 0,
                          again=lambda: self.start_request(fields, length)):
            return
        try:
            req = protocol.parse_request(fields, length)
        except RequestError as refused:
            if fields.get("op") == "put" and "trailer" in fields and self.request_id is not None:
                self.trailer_due = (self.request_id, "")  # (a refused put's trailer: dropped)
            self.reply_error(self.request_id, refused.code, refused.message)
            return  # any body is dropped as it arrives
        try:
            if req.op == "put":
                if req.trailer:
                    self.trailer_due = (req.id, req.trailer)
                self.begin_transfer("put", req.name)
                key = (self.partial_key(req.name, native_identity(req.digest, req.mtime),
                                        req.offset + req.length)
                       if req.resumable or req.offset else "")
                self.start_upload(req.name, req.length, req.digest, overwrite=req.overwrite,
                                  key=key, offset=req.offset, mtime=req.mtime,
                                  algorithm=req.trailer or SHA256)
            elif req.op == "get":
                self.begin_transfer("get", req.name)
                self.start_get(req)
            elif req.op == "stat":
                try:
                    info = self.describe(req.name)
                except StorageError as exc:
                    if exc.code != "not_found":
                        raise
                    self.answer_not_found(req, exc)
                    return
                self.reply_ok(req.id, **info)
            elif req.op == "partial":
                self.reply_ok(req.id, name=req.name, offset=self.partial_held(req))
            elif req.op == "trailer":
                raise StorageError("bad_request", "a trailer frame follows the body of a put "
                                                  "that announced it")
            elif req.op == "list":
                self.start_job(self.list_pages(req, self.entries(req.name, req.recursive)))
            elif req.op == "share":
                self.share(req)
            else:
                self.change(req)
        except StorageError as exc:
            self.reply_error(req.id, exc.code, exc.message, req.name)

    def answer_not_found(self, req: Request, exc: StorageError) -> None:
        """A stat of a name that is not there is a question answered "no" (put --as asks
        it, to learn whether a folder is there), not a refusal: said, logged as that."""
        log.info("%s stat %s: %s", self.who, printable(req.name), exc.message,
                 extra={"event": "answered", "conn": self.channel.id})
        self.queue_reply(req.id, exc.code, protocol.encode_error(req.id, exc.code,
                                                                 exc.message))

    def partial_held(self, req: Request) -> int:
        """How much of an interrupted upload of this writer's the server holds (0: none):
        asked before a resumed put, it needs what the put needs (rules.held)."""
        key = self.partial_key(req.name, native_identity(req.digest, req.mtime), req.size)
        try:
            return self.held(req.name, key, req.size)
        except StorageError as exc:
            if exc.code == "not_found":
                return 0
            raise

    def share(self, req: Request) -> None:
        """Make, list or revoke share links (StorageError when refused)."""
        if req.action == "make":
            link, capability = self.make_link(req.name, write=req.write,
                                              lifetime=req.expires or DEFAULT_EXPIRY)
            self.reply_ok(req.id, name=req.name, link=capability, link_id=link.id,
                          expires=link.expires, file=link.file, write=link.write,
                          host=self.services.access.public_host)
        elif req.action == "list":
            self.reply_ok(req.id, links=self.my_links(), host=self.services.access.public_host)
        else:
            self.revoke_link(req.link)
            self.reply_ok(req.id, link_id=req.link)

    def change(self, req: Request) -> None:
        """mkdir, rm and mv (StorageError when refused)."""
        if req.op == "mkdir":
            made = self.make_directory(req.name, parents=req.parents)
            self.reply_ok(req.id, name=req.name, created=made)
        elif req.op == "mv":
            replaced = self.move_entry(req.name, req.to, overwrite=req.overwrite)
            self.reply_ok(req.id, name=req.to, replaced=replaced)
        else:
            self.start_removal(
                req.name, recursive=req.recursive,
                done=lambda removed: self.reply_ok(req.id, name=req.name, removed=removed),
                failed=lambda exc: self.reply_error(req.id, exc.code, exc.message, req.name))

    def take_trailer(self, fields: dict[str, Any]) -> bool:
        """The frame after a put whose digest was to follow its body. Its trailer (op
        ``trailer``, the put's id) lets the upload be checked and committed, and is
        taken (True): with another algorithm or a malformed digest, it fails the put.
        Any other frame fails the put and is then served as the request it is (False).
        The trailer of a put refused already is dropped."""
        put_id, algorithm = self.trailer_due or (None, "")
        self.trailer_due = None
        upload = self.upload if self.work.state is Work.AWAITING_DIGEST else None
        ours = fields.get("op") == "trailer" and fields.get("id") == put_id
        digest = None
        if ours:
            try:
                digest = protocol.parse_request(fields, 0).digest
            except RequestError:
                digest = None
        if upload is None:
            return ours  # the put was refused already (and answered): nothing to check
        if digest is None or digest.algorithm != algorithm:
            self.discard_upload()
            self.reply_error(put_id, "bad_request", f"the put announced a trailer with its "
                                                    f"{algorithm}; the next frame was not it")
            return ours
        upload.expected = digest
        self.finish_upload()
        return True

    def log_in(self, fields: dict[str, Any], length: int) -> None:
        """The auth request: admitted like any request, with the token it carries."""
        self.credential = None  # the connection holds the last credentials it presented
        offered = credential_of(fields)
        if not self.admit(offered, has_body=length > 0,
                          again=lambda: self.log_in(fields, length)):
            return
        try:
            req = protocol.parse_request(fields, length)
        except RequestError as exc:
            self.reply_error(self.request_id, exc.code, exc.message)
            return
        self.credential = offered
        self.reply_ok(req.id)

    def send_refusal(self, refusal: Refusal, close: bool) -> None:
        message = refusal.message
        if refusal.missing:
            message += ": send an auth request first"
        rid = self.request_id
        self.queue_reply(rid, refusal.code, protocol.encode_error(rid, refusal.code, message))

    def start_get(self, req: Request) -> None:
        opened = self.open_download(req.name, req.algorithm)
        if req.offset > opened.size:
            opened.close()
            raise StorageError("offset_mismatch", f"{req.name!r} has {opened.size} bytes; "
                                                  f"cannot resume from {req.offset}")
        self.with_digest(opened, lambda: self.queue_download(req, opened),
                         lambda exc: self.reply_error(req.id, exc.code, exc.message, req.name),
                         sending=opened.size - req.offset, may_follow=req.digest_after)

    def queue_download(self, req: Request, opened: OpenFile) -> None:
        """Queue the reply header and the body (session.body_of). A file whose digest
        is not known yet (only for a client that takes it in a trailer, and not a small
        one) is hashed while it is sent: the trailer follows."""
        offset, length = req.offset, opened.size - req.offset
        digest = opened.digest
        announced = digest.field if digest is not None else {"trailer": opened.algorithm}
        header = protocol.encode_ok(req.id, length=length, name=req.name, size=opened.size,
                                    **announced, mtime=opened.mtime, offset=offset)
        transfer = self.active
        assert transfer is not None
        transfer.digest = digest
        if digest is None:  # (StorageError if it cannot: then nothing is queued)
            self.hash_while_sending(opened, transfer, lambda late: self.send_trailer(req, late))
        try:
            body = self.body_of(opened, offset, length, transfer)
        except StorageError as exc:
            self.reply_error(req.id, exc.code, f"{req.name!r}: {exc.message}", req.name)
            return
        self.queue_reply(req.id, None, header, length)
        if isinstance(body, FileRegion):
            self.sending_body(transfer)
            self.channel.write_file(body)
        else:
            self.channel.write(body)
            self.transfer_done(transfer, length, digest)

    def send_trailer(self, req: Request, digest: Digest | StorageError) -> None:
        """The frame after the body of a get hashed while it was sent: its digest, or
        the error that stopped the hash (the client then drops the body)."""
        if isinstance(digest, StorageError):
            self.reply_error(req.id, digest.code, f"{req.name!r}: {digest.message}", req.name)
        else:
            self.reply_ok(req.id, **digest.field)

    # -- uploads: replies, and bodies that go straight from the socket to the file

    def upload_failed(self, upload: Upload, exc: StorageError) -> None:
        self.reply_error(self.request_id, exc.code, exc.message, upload.name)

    def upload_stored(self, upload: Upload, digest: Digest) -> None:
        # (reply_ok's work, without passing the fields on once more as keywords)
        self.queue_reply(self.request_id, None, protocol.encode_ok(
            self.request_id, None, name=self.outside(upload.asked_name), size=upload.size,
            **digest.field))

    def splice_sink(self) -> tuple[int, int, int] | None:
        """(fd, offset, count) when the next body bytes may bypass Python, else None."""
        upload = self.upload
        if upload is None or self.work.state is not Work.RECEIVING:
            return None
        count = self.decoder.body_pending_unbuffered
        target = upload.splice_target() if count else None
        return None if target is None else (*target, count)

    def spliced(self, count: int) -> None:
        self.decoder.body_moved_elsewhere(count)
        upload = self.upload
        assert upload is not None
        upload.spliced(count)
        if self.active is not None:
            self.active.received = upload.offset + upload.received
        if not self.decoder.body_left:
            self.process()  # the frame's end: commit

    def splice_failed(self, count: int, exc: OSError) -> None:
        """Writing spliced bytes to the file failed (disk full...): like a failed write."""
        self.decoder.body_moved_elsewhere(count)
        upload = self.upload
        assert upload is not None
        self.body_failed(upload, write_error(exc, upload.name))
        self.process()  # the rest of the body is read and dropped

    # -- replies produced in steps

    def list_pages(self, req: Request, entries: Generator[Entry, None, None]) -> Job:
        """A listing as frames of up to list_page_size entries each (session.listing_job);
        the last one says how many entries were left out (names the rules refuse)."""
        left_out = LeftOutLog(self.channel.peer, self.channel.id, "", req.name)

        def page(batch: list[dict[str, Any]], more: bool) -> None:
            self.send_page(req.id, batch, more, 0 if more else left_out.count)

        def failed(batch: list[dict[str, Any]], exc: StorageError) -> None:
            if batch:
                self.send_page(req.id, batch, more=True)
            self.reply_error(req.id, exc.code, exc.message, req.name)

        return self.listing_job(entries, self.limits.list_page_size, left_out, page, failed)

    def send_page(self, req_id: int, page: list[dict[str, Any]], more: bool,
                  left_out: int = 0) -> None:
        body = b"".join(json.dumps(entry, ensure_ascii=False).encode() + b"\n"
                        for entry in page)
        fields: dict[str, Any] = {"left_out": left_out} if left_out else {}
        self.queue_reply(req_id, None, protocol.encode_ok(req_id, length=len(body), more=more,
                                                          count=len(page), **fields),
                         len(body))
        self.channel.write(body)

    # -- replies

    def reply_ok(self, req_id: int | None, **fields: Any) -> None:
        self.queue_reply(req_id, None, protocol.encode_ok(req_id, **fields))

    def queue_reply(self, req_id: int | None, code: str | None, frame: bytes,
                    body: int = 0) -> None:
        """Queue one reply frame (its body, if any, follows it); tell who watches."""
        self.channel.write(frame)
        self.channel.observe.reply(self.channel.id, req_id, code, len(frame) + body)

    def reply_error(self, req_id: int | None, code: str, message: str, name: str = "") -> None:
        """An error reply. One whose id is null concerns the connection, which closes
        after it (docs/PROTOCOL.md, section 6), as after every fatal code."""
        self.request_failed(code, message, name)
        self.queue_reply(req_id, code, protocol.encode_error(req_id, code, message))
        if req_id is None or code in protocol.FATAL_CODES:
            self.channel.close_when_done(message)

    def send_timeout(self, phase: Phase, what: str) -> None:
        self.queue_reply(None, "timeout", protocol.encode_error(None, "timeout", what))

    def send_stopping(self) -> None:
        self.queue_reply(None, "shutting_down", protocol.encode_error(
            None, "shutting_down", "the server is shutting down"))

    def refuse_stream(self, code: str, message: str) -> None:
        """A framing error: the stream cannot be resynced. Reply, then close."""
        self.discard_upload()
        self.reply_error(None, code, message)

    # -- end of the connection

    def peer_closed(self, event: PeerClosed) -> None:
        if event.mid_frame:
            what = "mid-upload" if self.work.uploading else "mid-request"
            log.warning("%s disconnected %s", self.channel.peer, what,
                        extra={"event": "reset", "conn": self.channel.id})
            self.channel.abort(f"peer closed {what}")
        else:
            # b"" means "done sending", not "gone": the replies still queued go out first.
            self.channel.close_when_done("peer finished sending")

    # -- what the console shows

    @property
    def recv_buffered(self) -> int:
        return self.decoder.buffered

    def wire_state(self) -> str:
        state = self.decoder.state
        if state is DecoderState.PREFIX and not self.decoder.partial:
            return "idle"
        if state is DecoderState.BODY:
            return "skipping body"  # the body of a refused request
        return state.value


def credential_of(fields: dict[str, Any]) -> Credential | None:
    """What an auth request presents: a share link, a name and password, or a token
    (a field that is not a string counts as missing)."""
    def text(key: str) -> str:
        value = fields.get(key)
        return value if isinstance(value, str) else ""

    if text("link"):
        return Credential(LINK, text("link"))
    if text("user"):
        return Credential(PASSWORD, text("password"), text("user"))
    token = fields.get("token")
    return Credential(TOKEN, token) if isinstance(token, str) else None
