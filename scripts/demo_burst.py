#!/usr/bin/env python3
"""Demo: many pipelined requests in a single send(), and the bytes left over.

What to watch: one recv returns several requests at once. After each request the
server says how many bytes "left over belong to the next request and are kept": it
decodes them next instead of throwing them away (the HOWTO's warning: a recv can read
the start of the next message). The replies come back in request order, coalesced
into few sends. Code: muxserver/protocol.py (FrameDecoder keeps unread input),
muxserver/session.py (Session.process runs requests one after another).

    python scripts/demo_burst.py [--count 8] [--lang es] [--port P]
"""

import hashlib
import socket

from demolib import parser, read_replies, say, settle, traced_server

from muxserver import protocol


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--count", type=int, default=6, help="puts in the burst (and as many gets)")
    args = p.parse_args()
    burst = b""
    for i in range(args.count):
        body = f"file {i}\n".encode()
        burst += protocol.encode_put(i, f"burst/{i}.txt", len(body),
                                     hashlib.sha256(body).hexdigest(), overwrite=True) + body
    burst += b"".join(protocol.encode_get(100 + i, f"burst/{i}.txt") for i in range(args.count))
    with traced_server(args) as (host, port, _root):
        with socket.create_connection((host, port)) as sock:
            settle()
            say(f"one sendall() of {len(burst)} bytes: {args.count} puts and {args.count} gets",
                f"un solo sendall() de {len(burst)} bytes: {args.count} put y {args.count} get")
            sock.sendall(burst)
            replies = read_replies(sock, 2 * args.count)
            settle()
            ids = [r["id"] for r, _ in replies]
            say(f"replies arrived in this order of ids: {ids}",
                f"las respuestas llegaron en este orden de ids: {ids}")


if __name__ == "__main__":
    main()
