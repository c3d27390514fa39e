"""tus over HTTP: resumable uploads at ``/.tus/`` (the protocol's pieces that do no I/O
are in tus.py). Creation, offset, pieces and termination, each a request of the shared
lifecycle: the rights, the size limit, the partial files and the commit are the ones
every upload has."""

from __future__ import annotations

import time

from . import tus
from .errors import MuxError
from .http_codec import HttpCodec, HttpError, refusal


class TusRequests(HttpCodec):
    """The requests below ``/.tus/``."""

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
            self.check_rights("put", "resuming an upload")  # (before the ID is looked at)
            upload = tus.TusUpload.from_id(tid, self.grant.writer)
            self.name = upload.name
            if method == "HEAD":
                self.tus_offset(upload)
            elif method == "PATCH":
                self.tus_patch(upload, headers)
            else:
                self.give_up(upload.name, upload.key(self.grant.writer))
                self.respond(204, [])
        except MuxError as exc:
            raise refusal(exc, close=has_body, tus_request=True) from None

    def tus_create(self, headers: dict[str, str]) -> None:
        self.check_rights("put", "starting an upload")  # (before the headers are read)
        upload = tus.creation(headers)
        self.name = upload.name
        self.begin_in_pieces(upload.name, upload.size, upload.key(self.grant.writer),
                             overwrite=upload.overwrite)
        self.respond(201, [("Location", f"/{tus.PREFIX}/{upload.id(self.grant.writer)}"),
                           tus.expires(time.time() + self.limits.partial_ttl)])

    def tus_offset(self, upload: tus.TusUpload) -> None:
        held = self.held(upload.name, upload.key(self.grant.writer), upload.size)
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
        held = self.held(upload.name, key, upload.size)
        if held != offset:
            raise HttpError(409, f"the server holds {held} bytes of it, not {offset}",
                            [("Upload-Offset", str(held))], close=True)
        self.begin_transfer("put", upload.name)
        started = self.start_upload(upload.name, length, upload.expected,
                                    overwrite=upload.overwrite, key=key, offset=offset,
                                    total=upload.size, mtime=upload.mtime)
        if checksum is not None:
            started.piece_hasher = tus.CHECKSUMS[checksum[0]]()
        self.tus_piece = (upload, checksum)
        self.continue_if_asked()

    def finish_piece(self) -> None:
        """A PATCH's body arrived whole: check its checksum, then commit the file if it
        is complete, else keep the partial file for the next piece."""
        upload, piece = self.upload, self.tus_piece
        assert upload is not None and piece is not None
        checksum = piece[1]
        if checksum is not None and upload.piece_hasher.digest() != checksum[1]:
            self.end_upload()
            self.tus_piece = None
            upload.fail()  # (this piece's bytes go, the earlier pieces stay)
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
