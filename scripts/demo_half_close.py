#!/usr/bin/env python3
"""Demo: recv() returning b"" means "the peer finished sending", not "the peer is gone".

The client asks for a 200 kB file, then shutdown(SHUT_WR) at once: it will send nothing
more, but it still reads. The server runs with --sndbuf 4096 and the client reads
through a 4 KiB buffer, so the kernel takes the reply a few KiB at a time and the end
of stream reaches the server while most of the reply is still owed.

What to watch: the server's "recv returned 0: the peer finished sending (half close or
full close: recv cannot tell)" arrives right after the request, before the reply has
gone out; the server stops reading (interest read+write -> write) but goes on sending
until the last byte, and only then closes. A server that closed at once on b"" would
cut the reply the client is waiting for (scripts/stages/check.py, stages 7 and 8,
"half close").
Code: muxserver/channel.py (Channel.on_readable), muxserver/native.py
(NativeSession.peer_closed, then Channel.close_when_done).

    python scripts/demo_half_close.py [--lang es] [--port P]
"""

import hashlib
import socket

from demolib import num, parser, read_replies, say, settle, traced_server

from muxserver import protocol

BODY = b"still answered after the half close\n" * 5_556  # about 200 kB: under the
# high-water mark, so the server keeps reading, and sees the end of stream, while it sends


def main() -> None:
    args = parser(__doc__).parse_args()
    with traced_server(args, "--sndbuf", "4096") as (host, port, root):
        if args.port:  # a server of yours: upload the file first
            with socket.create_connection((host, port)) as sock:
                sock.sendall(protocol.encode_put(1, "half.bin", len(BODY),
                                                 hashlib.sha256(BODY).hexdigest(),
                                                 overwrite=True) + BODY)
                read_replies(sock, 1)
        else:
            (root / "half.bin").write_bytes(BODY)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            sock.connect((host, port))
            sock.sendall(protocol.encode_get(1, "half.bin"))
            sock.shutdown(socket.SHUT_WR)
            say("get half.bin, then shutdown(SHUT_WR) at once: no more requests from us, "
                "but we keep reading",
                "get half.bin y enseguida shutdown(SHUT_WR): no enviamos más peticiones, "
                "pero seguimos leyendo")
            (fields, data), = read_replies(sock, 1)
            rest = sock.recv(10)
            settle()  # let the server's narration of this step print first
            say(f"the whole reply: ok={fields['ok']}, {num(len(data))} bytes; then recv "
                f"returns {rest!r}: the server closed after replying",
                f"la respuesta entera: ok={fields['ok']}, {num(len(data))} bytes; después "
                f"recv devuelve {rest!r}: el servidor cerró tras responder")
        settle()


if __name__ == "__main__":
    main()
