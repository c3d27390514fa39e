#!/usr/bin/env python3
"""A small client for the stages: put a file, get it back.

The stages speak only ``put`` and ``get`` (muxserver's own client also asks ``stat``
and sends digests, which they do not know). This one sends exactly one request and
reads exactly one reply, with the framing of wire.py:

    python scripts/stages/client.py put README.md --port 9009
    python scripts/stages/client.py get README.md --port 9009 -o /tmp/copy.md

(es) Un cliente pequeño para las etapas: una petición, una respuesta.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

from wire import PREFIX, frame, parse_prefix


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection mid-reply")
        data += chunk
    return bytes(data)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", choices=("put", "get"))
    p.add_argument("file", help="put: a local file (sent under its name); get: a name")
    p.add_argument("--port", type=int, default=9009)
    p.add_argument("-o", "--output", help="get: a file to write, or a folder to write it "
                   "into under its name, as muxserver's get -o does (default: a summary)")
    args = p.parse_args()
    name = Path(args.file).name
    body = Path(args.file).read_bytes() if args.op == "put" else b""
    try:
        with socket.create_connection(("127.0.0.1", args.port), timeout=30) as sock:
            sock.sendall(frame({"id": 1, "op": args.op, "name": name}, body))
            header = json.loads(recv_exactly(sock, parse_prefix(recv_exactly(sock,
                                                                              PREFIX.size))))
            data = recv_exactly(sock, header.get("length", 0))
    except (OSError, ValueError) as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 1
    if not header.get("ok"):
        print(f"client: {header.get('error')}: {header.get('message')}", file=sys.stderr)
        return 1
    if args.output:
        target = Path(args.output)
        (target / name if target.is_dir() else target).write_bytes(data)
    print(f"{args.op} {name}: ok, {len(body) or len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
