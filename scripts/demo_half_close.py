#!/usr/bin/env python3
"""Demo: recv() returning b"" means "the peer finished sending", not "the peer is gone".

The client sends two requests, then shutdown(SHUT_WR): it will send nothing more, but
it still reads.

What to watch: the server's "recv returned 0: the peer finished sending (half close);
replies still owed will be sent"; it stops reading (interest read -> nothing) but the
replies still go out, and only then the connection is closed. A server that closed at
once on b"" would lose the replies the client is waiting for. Code:
muxserver/channel.py (Channel.on_readable), muxserver/native.py
(NativeSession.peer_closed, then Channel.close_when_done).

    python scripts/demo_half_close.py [--lang es] [--port P]
"""

import hashlib
import socket

from demolib import parser, read_replies, say, settle, traced_server

from muxserver import protocol


def main() -> None:
    args = parser(__doc__).parse_args()
    body = b"still answered\n"
    with traced_server(args) as (host, port, _root):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(protocol.encode_put(1, "half.txt", len(body),
                                             hashlib.sha256(body).hexdigest(), overwrite=True)
                         + body + protocol.encode_get(2, "half.txt"))
            say("shutdown(SHUT_WR): no more requests from us, but we keep reading",
                "shutdown(SHUT_WR): no enviamos más peticiones, pero seguimos leyendo")
            sock.shutdown(socket.SHUT_WR)
            replies = read_replies(sock, 2)
            settle()  # let the server's narration of this step print first
            for fields, data in replies:
                say(f"reply {fields['id']}: ok={fields['ok']} body={data!r}",
                    f"respuesta {fields['id']}: ok={fields['ok']} cuerpo={data!r}")
            rest = sock.recv(10)
            say(f"then recv returns {rest!r}: the server closed after replying",
                f"después recv devuelve {rest!r}: el servidor cerró tras responder")
        settle()


if __name__ == "__main__":
    main()
