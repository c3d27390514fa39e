"""A muxserver client written from docs/PROTOCOL.md alone.

It imports nothing from the muxserver package: if the document and the server ever
disagree, the tests that use this client fail. It is deliberately plain (blocking
sockets, a thread-free write-then-read pipeline for small requests) as a third-party
client would be.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct

MAGIC = b"\x89MUX"


class ServerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class DocClient:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buffer = bytearray()
        self.next_id = 1
        self.digest_followed = False  # the last get's digest came after its body

    def close(self) -> None:
        self.sock.close()

    # section 2: frames
    @staticmethod
    def frame(header: dict, body: bytes = b"") -> bytes:
        if body:
            header = dict(header, length=len(body))
        raw = json.dumps(header).encode("utf-8")
        return struct.pack("!4sBBH", MAGIC, 1, 0, len(raw)) + raw + body

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def read_reply(self) -> tuple[dict, bytes]:
        magic, version, _flags, size = struct.unpack("!4sBBH", self._read_exactly(8))
        assert magic == MAGIC and version == 1
        header = json.loads(self._read_exactly(size).decode("utf-8"))
        body = self._read_exactly(header.get("length", 0))
        return header, body

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    @staticmethod
    def _check(header: dict) -> dict:
        if not header["ok"]:
            raise ServerError(header["error"], header["message"])
        return header

    # section 5
    def put(self, name: str, data: bytes, overwrite: bool = False) -> dict:
        req = {"id": self._id(), "op": "put", "name": name,
               "sha256": hashlib.sha256(data).hexdigest()}
        if overwrite:
            req["overwrite"] = True
        self.sock.sendall(self.frame(req, data))
        header, _ = self.read_reply()
        assert header["id"] == req["id"]
        return self._check(header)

    def get(self, name: str, trailer: bool = False) -> bytes:
        req = {"id": self._id(), "op": "get", "name": name}
        if trailer:
            req["trailer"] = True
        self.sock.sendall(self.frame(req))
        header, body = self.read_reply()
        self._check(header)
        # 5.2: offset and length are always there, 0 included
        assert header["offset"] == 0 and header["length"] == header["size"] == len(body)
        self.digest_followed = header.get("trailer") == "sha256"
        if self.digest_followed:  # 5.2: the digest follows the body
            assert trailer and "sha256" not in header
            after, nothing = self.read_reply()
            assert after["id"] == req["id"] and nothing == b""
            header = self._check(after)
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise ServerError("checksum_mismatch", "downloaded data does not match")
        return body

    def stat(self, name: str) -> dict:
        self.sock.sendall(self.frame({"id": self._id(), "op": "stat", "name": name}))
        return self._check(self.read_reply()[0])

    def list(self, path: str = "", recursive: bool = False) -> list[dict]:
        self.sock.sendall(self.frame({"id": self._id(), "op": "list", "path": path,
                                      "recursive": recursive}))
        entries = []
        while True:
            header, body = self.read_reply()
            self._check(header)
            assert header["length"] == len(body) and header["count"] == body.count(b"\n")
            entries += [json.loads(line) for line in body.decode("utf-8").splitlines()]
            if not header["more"]:
                return entries

    # section 5.0
    def auth(self, token: str) -> dict:
        self.sock.sendall(self.frame({"id": self._id(), "op": "auth", "token": token}))
        return self._check(self.read_reply()[0])

    # sections 5.6 to 5.8
    def mkdir(self, name: str, parents: bool = False) -> dict:
        self.sock.sendall(self.frame({"id": self._id(), "op": "mkdir", "name": name,
                                      "parents": parents}))
        return self._check(self.read_reply()[0])

    def rm(self, name: str, recursive: bool = False) -> dict:
        self.sock.sendall(self.frame({"id": self._id(), "op": "rm", "name": name,
                                      "recursive": recursive}))
        return self._check(self.read_reply()[0])

    def mv(self, name: str, to: str, overwrite: bool = False) -> dict:
        self.sock.sendall(self.frame({"id": self._id(), "op": "mv", "name": name, "to": to,
                                      "overwrite": overwrite}))
        return self._check(self.read_reply()[0])

    # sections 3 and 6: a request whose id cannot be read
    def request_without_id(self, header: dict) -> tuple[dict, bool]:
        """Send a request with no usable id; return the reply and whether the server then
        closed the connection (it must: an error with a null id is the last reply)."""
        self.sock.sendall(self.frame(header))
        reply, _ = self.read_reply()
        try:
            closed = self.sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        return reply, closed

    # section 5.5
    def partial(self, name: str, data: bytes) -> int:
        self.sock.sendall(self.frame({"id": self._id(), "op": "partial", "name": name,
                                      "sha256": hashlib.sha256(data).hexdigest(),
                                      "size": len(data)}))
        return self._check(self.read_reply()[0])["offset"]

    def start_resumable_put_and_vanish(self, name: str, data: bytes, sent: int) -> None:
        header = {"id": self._id(), "op": "put", "name": name, "resumable": True,
                  "sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}
        raw = json.dumps(header).encode("utf-8")
        self.sock.sendall(struct.pack("!4sBBH", MAGIC, 1, 0, len(raw)) + raw + data[:sent])
        self.sock.close()

    def resume_put(self, name: str, data: bytes, offset: int) -> dict:
        req = {"id": self._id(), "op": "put", "name": name, "offset": offset,
               "sha256": hashlib.sha256(data).hexdigest()}
        self.sock.sendall(self.frame(req, data[offset:]))
        return self._check(self.read_reply()[0])

    def get_from(self, name: str, offset: int, held: bytes) -> bytes:
        self.sock.sendall(self.frame({"id": self._id(), "op": "get", "name": name,
                                      "offset": offset}))
        header, body = self.read_reply()
        self._check(header)
        assert header["offset"] == offset and header["length"] == header["size"] - offset
        whole = held + body
        if hashlib.sha256(whole).hexdigest() != header["sha256"]:
            raise ServerError("checksum_mismatch", "resumed download does not match")
        return whole

    def pipeline_gets(self, names: list[str]) -> list[tuple[dict, bytes]]:
        """Section 1: send every request in one write, then read the replies in order."""
        ids = [self._id() for _ in names]
        self.sock.sendall(b"".join(self.frame({"id": i, "op": "get", "name": n})
                                   for i, n in zip(ids, names)))
        replies = [self.read_reply() for _ in names]
        assert [h["id"] for h, _ in replies] == ids
        return replies
