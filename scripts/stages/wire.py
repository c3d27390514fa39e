"""What every stage shares: the frame format, the files it serves, the command line.

The stages differ only in how they move bytes (blocking, threads, select, buffers);
everything here is the same for all of them, so a diff between two stages shows one idea.
(es) Lo que comparten todas las etapas: el formato de trama, los archivos que sirven y la
línea de órdenes. Las etapas solo difieren en cómo mueven los bytes.

The frames are muxserver's own (docs/PROTOCOL.md, section 2), a subset of its requests:
    prefix (8 bytes): magic 89 4d 55 58, version 01, flags 00, header length (2 bytes)
    header: a JSON object, e.g. {"id": 1, "op": "get", "name": "a.txt"}
    body:   exactly header["length"] bytes (0 when absent)
Requests: ``get`` (the reply's body is the file) and ``put`` (the body is the file).
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import struct
import sys
from pathlib import Path

PREFIX = struct.Struct("!4sBBH")   # magic, version, flags, header length
MAGIC = b"\x89MUX"
MAX_BODY = 64 * 1024 * 1024        # a declared length above this is refused


class BadFrame(ValueError):
    """The peer sent something that is not a frame: the connection must end."""


def parse_prefix(prefix: bytes) -> int:
    """The header length announced by an 8-byte prefix. (es) La longitud de la cabecera."""
    magic, version, _flags, header_length = PREFIX.unpack(prefix)
    if magic != MAGIC or version != 1 or header_length == 0:
        raise BadFrame("not a muxserver frame")
    return header_length


def parse_header(raw: bytes) -> dict:
    """The header's JSON object, with a checked body length."""
    try:
        header = json.loads(raw)
    except ValueError:
        raise BadFrame("the header is not JSON") from None
    length = header.get("length", 0) if isinstance(header, dict) else -1
    if not isinstance(length, int) or not 0 <= length <= MAX_BODY:
        raise BadFrame("bad body length")
    return header


def frame(fields: dict, body: bytes = b"") -> bytes:
    """One whole frame: prefix, header and body. (es) Una trama entera."""
    if body:
        fields = {**fields, "length": len(body)}
    raw = json.dumps(fields).encode()
    return PREFIX.pack(MAGIC, 1, 0, len(raw)) + raw + body


class Files:
    """The served directory. Whole files in memory: fine for a lesson, not for muxserver
    (which streams bodies to disk and sends files with os.sendfile)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)  # (a new --root: made, as muxserver does)

    def answer(self, header: dict, body: bytes) -> bytes:
        """The reply to one complete request. (es) La respuesta a una petición completa."""
        rid, op, name = header.get("id"), header.get("op"), str(header.get("name", ""))
        if not name or "/" in name or "\x00" in name or name.startswith("."):
            return frame({"id": rid, "ok": False, "error": "bad_name", "message": name})
        path = self.root / name
        if op == "put":
            path.write_bytes(body)
            return frame({"id": rid, "ok": True, "name": name, "size": len(body)})
        if op == "get" and path.is_file():
            return frame({"id": rid, "ok": True, "name": name}, path.read_bytes())
        if op == "get":
            return frame({"id": rid, "ok": False, "error": "not_found", "message": name})
        return frame({"id": rid, "ok": False, "error": "bad_request", "message": str(op)})


def command_line(doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--port", type=int, default=9009, help="0: any free port")
    p.add_argument("--root", default=".", help="the directory to serve")
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="seconds a client may send nothing (only stages that have timeouts)")
    # Ctrl-C ends a stage quietly: a KeyboardInterrupt traceback would look like a crash.
    signal.signal(signal.SIGINT, lambda _signum, _frame: sys.exit(0))
    return p.parse_args()


def listen_nonblocking(port: int) -> tuple[socket.socket, selectors.BaseSelector]:
    """listen(), non-blocking, and a new selector already watching it for accepts."""
    server = listen(port)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    return server, selector


def listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1, announced the way muxserver announces its own."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))
    except OSError as exc:  # (a port in use: say so, as muxserver does, not a traceback)
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}: {exc.strerror} "
                         "(another server there? --port 0 takes any free port)") from None
    server.listen(128)
    print(f"listening on 127.0.0.1:{server.getsockname()[1]}", flush=True)
    return server
