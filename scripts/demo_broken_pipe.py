#!/usr/bin/env python3
"""Demo: writing to a peer that has gone: RST, then a broken pipe.

The client closes. Our first send() still "succeeds" (the bytes are handed to the kernel;
the peer's kernel answers them with RST). The next send() raises: ConnectionResetError or
BrokenPipeError (EPIPE). Python ignores the SIGPIPE signal that would otherwise kill the
process, so it is an exception, and one connection's exception must end that connection
only: muxserver closes the channel and goes on (Channel.flush -> Channel.abort).

What to watch: the first send taking the bytes, select() reporting the socket as
readable (the RST arrived), and the second send raising.
(es) Qué observar: el primer send toma los bytes; el segundo lanza una excepción porque
el otro extremo ya abortó: tubería rota.

    python scripts/demo_broken_pipe.py [--lang es]
"""

import select
import socket

from demolib import parser, say


def main() -> None:
    parser(__doc__).parse_args()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        with server_side:
            client.close()
            say("the client closed its socket", "el cliente cerró su socket")
            taken = server_side.send(b"a reply nobody will read\n")
            say(f"first send() took {taken} bytes: the kernel accepted them",
                f"el primer send() tomó {taken} bytes: el núcleo los aceptó")
            select.select([server_side], [], [], 10)  # the client's FIN has arrived
            data = server_side.recv(100)
            say(f"recv() returned {data!r}: the peer finished sending (it may even be gone)",
                f"recv() devolvió {data!r}: el otro extremo terminó de enviar (quizá ya no "
                "está)")
            for attempt in range(2, 1000):  # loopback answers with RST at once: one more
                try:
                    server_side.send(b"more\n")
                except (BrokenPipeError, ConnectionResetError) as exc:
                    say(f"send() number {attempt} raised {type(exc).__name__}: {exc.strerror}; "
                        "close this connection, keep serving the others",
                        f"el send() número {attempt} lanzó {type(exc).__name__}: "
                        f"{exc.strerror}; cerramos esta conexión y seguimos atendiendo a las "
                        "demás")
                    break

if __name__ == "__main__":
    main()
