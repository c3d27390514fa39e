#!/usr/bin/env python3
"""Demo: one send is not one recv. A request sent one byte per send().

What to watch: the server's recv returns 1 byte at a time, and the decoder says how
much of the 8-byte length prefix it has ("the length prefix is 3 of 8 bytes,
waiting"), then how much of the header, and only acts once the header is whole. Even a
5-byte prefix can arrive split across recv calls (lesson 4 of the Socket HOWTO); the
decoder keeps the pieces (muxserver/protocol.py, FrameDecoder._collect).

    python scripts/demo_one_byte.py [--lang es] [--trace-bytes] [--port P]
"""

import hashlib
import socket

from demolib import parser, read_replies, say, settle, traced_server

from muxserver import protocol


def main() -> None:
    args = parser(__doc__).parse_args()
    body = b"one byte at a time\n"
    frame = protocol.encode_put(1, "dribbled.txt", len(body), hashlib.sha256(body).hexdigest(),
                                overwrite=True) + body
    with traced_server(args) as (host, port, _root):
        with socket.create_connection((host, port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no coalescing by us
            settle()
            for i in range(12):  # the prefix and the start of the header, byte by byte
                say(f"send(1 byte): {frame[i:i + 1]!r}", f"send(1 byte): {frame[i:i + 1]!r}")
                sock.send(frame[i:i + 1])
                settle()
            say(f"send(the other {len(frame) - 12} bytes at once)",
                f"send(los otros {len(frame) - 12} bytes de una vez)")
            sock.sendall(frame[12:])
            reply, _ = read_replies(sock, 1)[0]
            say(f"reply: {reply}", f"respuesta: {reply}")


if __name__ == "__main__":
    main()
