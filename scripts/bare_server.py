#!/usr/bin/env python3
"""A floor to measure muxserver against: the least a Python server must do to serve
the many-clients load (native put and get) with the same storage guarantees, and
nothing else.

Kept: one selectors loop, muxserver's frame decoder, each body hashed (BLAKE3 or
SHA-256) and checked before the file is published, the temporary file fsync'd, a
no-clobber publish (muxserver's own, atomic.py), the directory fsync'd, downloads by sendfile with
their remembered digest, replies batched and sent before the loop sleeps.
Left out: everything else muxserver does per request: names checked, rights and
tokens, limits, timeouts, backpressure, resumable uploads, statistics, the console,
the log line, HTTP, error replies (an error closes the connection). Not a server to
use: a measuring instrument for ``bench.py --only many`` (the "bare" row), which
shows how much of a request's time is the guarantees and how much is the rest.

    python scripts/bare_server.py --root DIR [--port 0]   # prints "listening on H:P"
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from muxserver.atomic import publish  # noqa: E402
from muxserver.digests import Digest, new_hasher  # noqa: E402
from muxserver.protocol import (BodyData, FrameDecoder, FrameEnd, FrameHeader,  # noqa: E402
                                NEED_DATA, encode_ok)

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_parent(root: int, dirs: list[str], *, create: bool) -> int:
    """A new descriptor of the directory ``dirs`` below ``root``, one component at a
    time, as muxserver walks (a missing one made and its parent fsync'd if ``create``)."""
    if not dirs:
        return os.dup(root)
    parent = root  # (not ours to close; every descriptor after it is)
    try:
        for part in dirs:
            try:
                child = os.open(part, O_DIR, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=parent)
                os.fsync(parent)
                child = os.open(part, O_DIR, dir_fd=parent)
            if parent != root:
                os.close(parent)
            parent = child
    except BaseException:
        if parent != root:
            os.close(parent)
        raise
    return parent


class Upload:
    def __init__(self, root: int, req_id: int, name: str, expect: Digest) -> None:
        *dirs, self.leaf = name.split("/")
        parent = open_parent(root, dirs, create=True)
        self.parent, self.req_id, self.name, self.expect = parent, req_id, name, expect
        self.temp = f".bare-tmp-{req_id}-{id(self):x}"
        self.fd = os.open(self.temp, O_NEW, 0o644, dir_fd=parent)
        self.hasher = new_hasher(expect.algorithm)
        self.size = 0

    def write(self, data: memoryview) -> None:
        self.hasher.update(data)
        self.size += len(data)
        while data:
            data = data[os.write(self.fd, data):]

    def commit(self) -> Digest:
        digest = Digest(self.expect.algorithm, self.hasher.hexdigest())
        if digest != self.expect:
            raise ValueError("checksum mismatch")
        os.fsync(self.fd)
        publish(self.temp, self.leaf, overwrite=False, dir_fd=self.parent)  # (muxserver's)
        os.fsync(self.parent)
        os.close(self.fd)
        os.close(self.parent)
        return digest


class Connection:
    def __init__(self, server: "BareServer", sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        self.decoder = FrameDecoder()
        self.upload: Upload | None = None
        self.out: list[bytes | tuple[int, int]] = []  # bytes, or (file fd, size) to sendfile

    def readable(self) -> None:
        n = self.sock.recv_into(self.server.buffer)
        if not n:
            self.server.close(self)
            return
        self.decoder.receive_data(self.server.buffer[:n])
        while (event := self.decoder.next_event()) is not NEED_DATA:
            if type(event) is BodyData:
                self.upload.write(event.data)
            elif type(event) is FrameHeader:
                self.request(event.fields)
            elif type(event) is FrameEnd and self.upload is not None:
                upload, self.upload = self.upload, None
                digest = self.server.digests[upload.name] = upload.commit()
                self.reply(encode_ok(upload.req_id, name=upload.name, size=upload.size,
                                     **digest.field))
        self.decoder.keep_leftover()

    def request(self, fields: dict) -> None:
        root, name, req_id = self.server.root, fields["name"], fields["id"]
        if fields["op"] == "put":
            algorithm = "blake3" if "blake3" in fields else "sha256"
            self.upload = Upload(root, req_id, name, Digest(algorithm, fields[algorithm]))
            return
        *dirs, leaf = name.split("/")  # a get
        parent = open_parent(root, dirs, create=False)
        try:
            fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(parent)
        size = os.fstat(fd).st_size
        digest = self.server.digests[name]
        self.reply(encode_ok(req_id, size, name=name, size=size, **digest.field))
        self.out.append((fd, size))

    def reply(self, frame: bytes) -> None:
        if not self.out:
            self.server.to_flush.append(self)
        self.out.append(frame)

    def flush(self) -> None:
        """Everything queued, in order (a bare server blocks on a full socket)."""
        self.sock.setblocking(True)
        for item in self.out:
            if type(item) is bytes:
                self.sock.sendall(item)
            else:
                fd, size = item
                offset = 0
                while offset < size:
                    offset += os.sendfile(self.sock.fileno(), fd, offset, size - offset)
                os.close(fd)
        self.sock.setblocking(False)
        self.out.clear()


class BareServer:
    def __init__(self, root: Path, host: str, port: int) -> None:
        self.root = os.open(root, O_DIR)
        self.listener = socket.create_server((host, port))
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.buffer = memoryview(bytearray(256 * 1024))
        self.to_flush: list[Connection] = []
        self.digests: dict[str, Digest] = {}

    def serve(self) -> None:
        while True:
            for conn in self.to_flush:  # replies of the last turn, before sleeping
                conn.flush()
            self.to_flush.clear()
            for key, _mask in self.selector.select():
                if key.data is None:
                    self.accept()
                else:
                    key.data.readable()

    def accept(self) -> None:
        while True:
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.selector.register(sock, selectors.EVENT_READ, self.connection(sock, addr))

    def connection(self, sock: socket.socket, _addr: tuple) -> Connection:
        return Connection(self, sock)

    def close(self, conn: Connection) -> None:
        self.selector.unregister(conn.sock)
        conn.sock.close()


def main(server_class: type[BareServer] = BareServer, description: str = __doc__) -> int:
    """Serve from the command line (flat_server.py serves its own class through it)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = server_class(args.root, args.host, args.port)
    host, port = server.listener.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
