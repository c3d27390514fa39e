#!/usr/bin/env python3
"""Demo: socket.sendfile() refuses a non-blocking socket; os.sendfile() says what it took.

``socket.sendfile`` is the convenient call, and it loops until the whole file is sent: on
a non-blocking socket it could not, so it refuses outright (ValueError). The call an
event loop wants is ``os.sendfile(out_fd, in_fd, offset, count)``: one system call, which
returns how many bytes the kernel took, or raises BlockingIOError when the socket is
full. muxserver keeps the file's offset itself (Channel._send_region).

What to watch: the ValueError of socket.sendfile, then os.sendfile taking part of an
8 MiB file and the BlockingIOError once the peer's buffers are full.
(es) Qué observar: socket.sendfile rechaza el socket no bloqueante; os.sendfile devuelve
cuánto tomó y lanza BlockingIOError cuando el búfer está lleno.

    python scripts/demo_sendfile_nonblocking.py [--lang es]
"""

import os
import socket
import tempfile

from demolib import num, parser, say


def main() -> None:
    parser(__doc__).parse_args()
    with tempfile.TemporaryFile() as f, socket.create_server(("127.0.0.1", 0)) as listener:
        f.write(os.urandom(8 * 1024 * 1024))
        f.flush()
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()  # it never reads: the buffers will fill
        with sender, receiver:
            sender.setblocking(False)
            try:
                sender.sendfile(f)
            except ValueError as exc:
                say(f"socket.sendfile() refused: ValueError: {exc}",
                    f"socket.sendfile() se negó: ValueError: {exc}")
            offset = 0
            while True:
                try:
                    taken = os.sendfile(sender.fileno(), f.fileno(), offset, 4 * 1024 * 1024)
                except BlockingIOError:
                    say(f"os.sendfile() raised BlockingIOError at offset {num(offset)}: the "
                        "socket is full; an event loop waits for EVENT_WRITE and goes on from "
                        "there",
                        f"os.sendfile() lanzó BlockingIOError en la posición {num(offset)}: el "
                        "socket está lleno; un bucle de eventos espera EVENT_WRITE y sigue desde "
                        "ahí")
                    break
                say(f"os.sendfile() took {num(taken)} bytes from offset {num(offset)}",
                    f"os.sendfile() tomó {num(taken)} bytes desde la posición {num(offset)}")
                offset += taken


if __name__ == "__main__":
    main()
