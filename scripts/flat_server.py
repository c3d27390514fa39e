#!/usr/bin/env python3
"""A second floor for the many-clients load: the bare server plus muxserver's own
per-request checks, called one after another in one flat path. It measures what the
request path would cost if it kept those guarantees and lost its layers.

Built on scripts/bare_server.py (the same loop, frame decoder, hashing, fsyncs and
no-clobber publish), it adds, with muxserver's own functions where there is one:
- every request header checked (``protocol.parse_request``) and a refused request
  answered with an error frame on a connection that goes on (a frame the decoder
  cannot read is answered, and the connection closed, as muxserver does);
- the access policy asked for every request (``access.Access``), and the right to
  read or write checked;
- the size limit (``limits.Limits``, enforced by the frame decoder as in muxserver);
- names by muxserver's rules (``storage.errors.split_name``);
- a put to a taken name refused before its body (an ``lstat``);
- a get that looks before it opens (``lstat``: no links, folders or devices) and
  checks that it opened what it looked at;
- digests remembered by inode (``hashcache.HashCache``), not by name;
- a transfer record, a count of transfers, the line per transfer and the "connected"
  and "closed" lines (``turnlog.TurnLog``), through ``logging`` as muxserver writes them;
- each connection's last I/O stamped, and idle connections closed by a sweep once a
  second (muxserver: a timer per connection), an upload cut off by it removed;
- sends that never block: what a socket does not take waits for the next turn (no
  EVENT_WRITE is watched for it: under this load a socket is never full, and
  elsewhere the rest would wait up to a second for the loop to wake).

Left out, of what muxserver does per request or per connection: TLS, HTTP, the
requests other than put and get, the output caps and backpressure, splicing big
uploads and hashing them beside the loop, resumable uploads, overwrites and digests
after the body (refused here), drop boxes and scoped grants, WebDAV's locks, the
connection cap, the header and stall timeouts, the per-connection byte counts, the
lifecycle state machine every session shares, the observer hooks (trace, console)
and a graceful stop.

Not a server to use: a measuring instrument for ``bench.py --only many`` (the "flat"
row, beside "bare").

    python scripts/flat_server.py --root DIR [--port 0]   # prints "listening on H:P"
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bare_server as bare  # noqa: E402

from muxserver.access import Access, Grant, HostNames  # noqa: E402
from muxserver.accounts import READ, WRITE  # noqa: E402
from muxserver.atomic import publish  # noqa: E402
from muxserver.digests import Digest, new_hasher  # noqa: E402
from muxserver.hashcache import HashCache  # noqa: E402
from muxserver.limits import Limits  # noqa: E402
from muxserver.logformat import LineFormatter  # noqa: E402
from muxserver.names import printable  # noqa: E402
from muxserver.protocol import (BodyData, FrameEnd, FrameHeader, NEED_DATA,  # noqa: E402
                                FrameDecoder, ProtocolError, Request, RequestError,
                                encode_error, encode_ok, parse_request, request_id)
from muxserver.storage.errors import StorageError, require_regular, split_name  # noqa: E402
from muxserver.turnlog import TurnLog  # noqa: E402

log = logging.getLogger("muxserver")
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_IDS = itertools.count()
# A system call's refusal, as muxserver's storage names it (storage/errors.py).
_ERROR_CODES = {errno.ENOENT: "not_found", errno.ENOTDIR: "not_a_directory",
                errno.ELOOP: "forbidden", errno.EEXIST: "exists",
                errno.EISDIR: "is_directory", errno.EACCES: "not_permitted"}


def storage_error(exc: OSError, name: str) -> StorageError:
    return StorageError(_ERROR_CODES.get(exc.errno or 0, "io_error"),
                        f"{name!r}: {exc.strerror}")


class Transfer:
    __slots__ = ("op", "name", "size", "started")

    def __init__(self, op: str, name: str, size: int, started: float) -> None:
        self.op, self.name, self.size, self.started = op, name, size, started


class Upload(bare.Upload):
    """bare_server's upload (its ``write`` is inherited) that refuses a taken name
    before its body, remembers the digest by inode, and cleans up after itself."""

    def __init__(self, root: int, req: Request, parts: list[str], hashes: HashCache) -> None:
        assert req.digest is not None  # (request(): a put without one is refused)
        *dirs, self.leaf = parts
        self.parent = bare.open_parent(root, dirs, create=True)
        try:
            try:
                os.stat(self.leaf, dir_fd=self.parent, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                raise StorageError("exists", f"{req.name!r} exists already")
            self.temp = f".flat-tmp-{next(_TEMP_IDS):x}"
            self.fd = os.open(self.temp, bare.O_NEW, 0o644, dir_fd=self.parent)
        except BaseException:
            os.close(self.parent)
            raise
        self.req_id, self.name, self.expect, self.hashes = req.id, req.name, req.digest, hashes
        self.hasher = new_hasher(req.digest.algorithm)
        self.size = 0

    def commit(self) -> Digest:
        digest = Digest(self.expect.algorithm, self.hasher.hexdigest())
        try:
            if digest != self.expect:
                raise StorageError("checksum_mismatch", "the body does not match its digest")
            os.fsync(self.fd)
            publish(self.temp, self.leaf, overwrite=False, dir_fd=self.parent)
            os.fsync(self.parent)
            self.hashes.remember(self.fd, os.fstat(self.fd), digest)
        except OSError as exc:  # (a name taken meanwhile, a full disk...)
            self.abort()
            raise storage_error(exc, self.name) from None
        except BaseException:
            self.abort()
            raise
        os.close(self.fd)
        os.close(self.parent)
        return digest

    def abort(self) -> None:
        """Not stored: the temporary file goes, and the descriptors."""
        try:
            os.unlink(self.temp, dir_fd=self.parent)
        except OSError:
            pass
        os.close(self.fd)
        os.close(self.parent)


class Connection(bare.Connection):
    def __init__(self, server: "FlatServer", sock: socket.socket, peer: str) -> None:
        super().__init__(server, sock)
        self.server: FlatServer = server
        limits = server.limits
        self.decoder = FrameDecoder(limits.max_header_size, limits.max_file_size)
        self.peer, self.last_io = peer, server.now
        self.upload: Upload | None = None
        self.transfer: Transfer | None = None

    def readable(self) -> None:
        server = self.server
        try:
            n = self.sock.recv_into(server.buffer)
        except OSError:
            n = 0
        if not n:
            server.close(self)
            return
        self.last_io = server.now
        self.decoder.receive_data(server.buffer[:n])
        try:
            while (event := self.decoder.next_event()) is not NEED_DATA:
                if type(event) is BodyData:
                    if self.upload is not None:
                        self.write(self.upload, event.data)
                elif type(event) is FrameHeader:
                    self.request(event.fields, event.length)
                elif type(event) is FrameEnd and self.upload is not None:
                    self.finish_upload(self.upload)
        except ProtocolError as exc:  # (a frame that cannot be read: answered, closed)
            self.reply(encode_error(None, exc.code, exc.message))
            self.flush()
            server.close(self)
            return
        self.decoder.keep_leftover()

    def write(self, upload: Upload, data: memoryview) -> None:
        try:
            upload.write(data)
        except OSError as exc:  # (a full disk: the rest of the body is dropped)
            self.upload = None
            upload.abort()
            error = storage_error(exc, upload.name)
            self.reply(encode_error(upload.req_id, error.code, error.message))

    def request(self, fields: dict, length: int) -> None:  # type: ignore[override]
        server = self.server
        req_id = request_id(fields)
        try:
            grant = server.access.check(self.peer, None)
            if not isinstance(grant, Grant):
                raise StorageError("unauthorized", "this server needs a token")
            req = parse_request(fields, length)
            if req.op not in ("put", "get") or req.trailer or req.digest_after or (
                    req.op == "put" and (req.digest is None or req.offset or req.resumable
                                         or req.overwrite)):
                raise StorageError("bad_request", f"this {req.op}: not served here")
            if not grant.allows(WRITE if req.op == "put" else READ):
                raise StorageError("not_permitted", f"{req.op}: not permitted")
            parts = split_name(req.name)
            if req.op == "put":
                self.upload = Upload(server.root, req, parts, server.hashes)
                self.transfer = Transfer("put", req.name, req.length, server.now)
            else:
                self.get(req, parts)
        except (RequestError, StorageError) as exc:
            self.reply(encode_error(req_id, exc.code, exc.message))
        except OSError as exc:  # (a folder in the name is a file, a link...)
            error = storage_error(exc, str(fields.get("name")))
            self.reply(encode_error(req_id, error.code, error.message))

    def get(self, req: Request, parts: list[str]) -> None:
        server = self.server
        *dirs, leaf = parts
        try:
            parent = bare.open_parent(server.root, dirs, create=False)
        except FileNotFoundError:
            raise StorageError("not_found", f"no such file {req.name!r}") from None
        try:
            try:
                looked: os.stat_result | None = os.stat(leaf, dir_fd=parent,
                                                        follow_symlinks=False)
            except FileNotFoundError:
                looked = None
            st = require_regular(looked, req.name)
            fd = os.open(leaf, O_READ, dir_fd=parent)
        finally:
            os.close(parent)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise StorageError("not_found", f"{req.name!r} changed while it was opened")
        digest = server.hashes.lookup(fd, opened, req.algorithm)
        if digest is None:  # (the load gets only what it put: always remembered)
            os.close(fd)
            raise StorageError("io_error", "digest not remembered")
        size = opened.st_size
        self.reply(encode_ok(req.id, size, name=req.name, size=size, **digest.field))
        self.out.append((fd, size))
        self.transfer_done(Transfer("get", req.name, size, server.now), digest)

    def finish_upload(self, upload: Upload) -> None:
        self.upload = None
        try:
            digest = upload.commit()
        except StorageError as exc:
            self.reply(encode_error(upload.req_id, exc.code, exc.message))
            return
        assert self.transfer is not None
        self.transfer_done(self.transfer, digest)
        self.reply(encode_ok(upload.req_id, name=upload.name, size=upload.size,
                             **digest.field))

    def transfer_done(self, transfer: Transfer, digest: Digest) -> None:
        self.transfer = None
        self.server.transfers_done += 1
        self.server.turn_log.info("%s %s %s: %d bytes, %s ok", self.peer, transfer.op,
                                  printable(transfer.name), transfer.size, digest.short())

    def flush(self) -> None:
        """As much of the queue as the socket takes now; the rest waits for the next
        turn (a full socket is rare under this load: no EVENT_WRITE is kept for it)."""
        out = self.out
        while out:
            item = out[0]
            try:
                if type(item) is bytes:
                    sent = self.sock.send(item)
                    left: bytes | tuple[int, int] = item[sent:]
                    done = sent == len(item)
                else:
                    fd, size = item
                    sent = os.sendfile(self.sock.fileno(), fd, None, size)
                    left, done = (fd, size - sent), sent == size
                    if done:
                        os.close(fd)
            except BlockingIOError:
                break
            except OSError:  # (reset, broken pipe: the connection is over)
                self.server.close(self)
                return
            if sent:
                self.last_io = self.server.now  # (a client that stops reading goes idle)
            if not done:
                out[0] = left
                break
            del out[0]


class FlatServer(bare.BareServer):
    def __init__(self, root: Path, host: str, port: int) -> None:
        super().__init__(root, host, port)
        self.limits = Limits()
        self.access = Access(None, self.limits, HostNames(host))
        self.hashes = HashCache()
        self.turn_log = TurnLog(log)
        self.turn_log.attached = True  # (flushed by serve(), before the loop sleeps)
        self.connections: set[Connection] = set()
        self.transfers_done = 0
        self.now = time.monotonic()

    def serve(self) -> None:
        next_sweep = self.now + 1
        while True:
            for conn in self.to_flush:
                conn.flush()
            self.to_flush = [conn for conn in self.to_flush if conn.out]
            self.turn_log.flush()
            events = self.selector.select(1.0)
            self.now = time.monotonic()
            for key, _mask in events:
                if key.data is None:
                    self.accept()
                else:
                    key.data.readable()
            if self.now >= next_sweep:
                next_sweep = self.now + 1
                idle = self.now - self.limits.idle_timeout
                for conn in [conn for conn in self.connections if conn.last_io < idle]:
                    self.close(conn)

    def connection(self, sock: socket.socket, addr: tuple) -> Connection:
        conn = Connection(self, sock, f"{addr[0]}:{addr[1]}")
        self.connections.add(conn)
        self.turn_log.info("%s connected", conn.peer, extra={"event": "connected"})
        return conn

    def close(self, conn: Connection) -> None:  # type: ignore[override]
        if conn in self.connections:
            self.connections.discard(conn)
            if conn.upload is not None:  # (cut off: its temporary file goes)
                conn.upload.abort()
                conn.upload = None
            super().close(conn)
            for item in conn.out:
                if type(item) is tuple:
                    os.close(item[0])
            conn.out.clear()
            self.turn_log.info("%s closed (closed)", conn.peer, extra={"event": "closed"})


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # (as muxserver serve)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(LineFormatter())
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return bare.main(FlatServer, __doc__)


if __name__ == "__main__":
    sys.exit(main())
