#!/usr/bin/env python3
"""Demo: a slow reader. Short writes, EVENT_WRITE, and backpressure.

The client asks for a file and then reads it slowly through a small receive buffer.

What to watch: "send was offered N bytes and took M" / "sendfile ... took M" with M
smaller than what is pending (send may take fewer bytes than offered: it is our job to
call it again); "interest read -> write: output is queued and we are not reading, so
we wait for writability alone" (EVENT_WRITE is asked for only while output is pending,
and the session stops reading more requests while its replies are over the high-water
mark: backpressure); then, once the client drains everything, "interest write ->
nothing: the queue drained, so we stop waiting for writability". Code: muxserver/channel.py
(Channel.flush, Channel._update_interest), muxserver/loop.py (EventLoop.set_interest).

    python scripts/demo_slow_reader.py [--lang es] [--port P]
"""

import hashlib
import os
import socket
import time

from demolib import parser, read_replies, say, settle, traced_server

from muxserver import protocol
from muxserver.protocol import BodyData, FrameDecoder, FrameEnd, NEED_DATA

SIZE = 8_000_000  # more than the kernel buffers of both sockets together


def main() -> None:
    args = parser(__doc__).parse_args()
    data = os.urandom(SIZE)
    with traced_server(args) as (host, port, _root):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(protocol.encode_put(1, "slow.bin", SIZE, hashlib.sha256(data).hexdigest(),
                                             overwrite=True) + data)
            read_replies(sock, 1)
        settle()
        say("=== a get, read slowly through a 16 KiB receive buffer ===",
            "=== un get, leído despacio con un búfer de recepción de 16 KiB ===")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect((host, port))
            sock.sendall(protocol.encode_get(2, "slow.bin"))
            decoder, body = FrameDecoder(), 0
            for _ in range(6):
                time.sleep(0.3)  # the slow reader dawdles...
                chunk = sock.recv(16384)
                decoder.receive_data(chunk)
                say(f"recv took {len(chunk)} bytes", f"recv tomó {len(chunk)} bytes")
            say("now reading everything quickly", "ahora se lee todo deprisa")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            while True:
                event = decoder.next_event()
                if event is NEED_DATA:
                    decoder.receive_data(sock.recv(1 << 20))
                elif isinstance(event, BodyData):
                    body += len(event.data)
                elif isinstance(event, FrameEnd):
                    break
            say(f"the whole body arrived: {body} bytes", f"llegó el cuerpo entero: {body} bytes")


if __name__ == "__main__":
    main()
