#!/usr/bin/env python3
"""Stage 7: non-blocking sends. Stage 6, with an outbox per connection instead of sendall.

The one idea: a send() on a non-blocking socket takes what fits in the kernel now and
says how much; what it did not take waits in the connection's outbox, and the loop
sends more when select() says the socket is writable. A client that does not read no
longer stops the loop (lesson 3). Without the blocking sendall three things were lost
that it gave for free, shown failing by check.py, and each is one of the next stages:
  - it asks select() for EVENT_WRITE all the time: a socket is almost always writable,
    so select() returns at once, forever: 100 % CPU with nothing to do (lesson 7);
  - recv() returning b"" closes at once, dropping replies still owed (lesson 6);
  - no backpressure: a client that sends requests but never reads makes the outbox grow
    without bound (lesson 8).
(es) Etapa 7: envíos no bloqueantes. send toma lo que cabe y el resto espera en la
bandeja de salida de la conexión. Al dejar sendall se pierde lo que daba gratis: interés de
escritura siempre activo (lección 7), b"" que cierra con respuestas pendientes
(lección 6) y sin contrapresión (lección 8).

    python scripts/stages/stage07_nonblocking.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import selectors
import socket

from decoder import FrameDecoder
from wire import BadFrame, Files, command_line, listen_nonblocking

BOTH = selectors.EVENT_READ | selectors.EVENT_WRITE


class Connection:
    def __init__(self, sock: socket.socket, files: Files) -> None:
        self.sock, self.files = sock, files
        self.decoder = FrameDecoder()      # the bytes of a request not yet whole
        self.outbox = bytearray()          # replies not yet taken by send()
        self.peer_done = False             # recv returned b"": nothing more will come

    def on_readable(self) -> None:
        data = self.sock.recv(65536)       # readable: returns at once, with what came
        if not data:
            self.peer_done = True
            return
        self.decoder.feed(data)
        while (request := self.decoder.next_request()) is not None:
            self.outbox += self.files.answer(*request)   # MISTAKE (lesson 8): no bound
            # (es) TRAMPA (lección 8): sin límite

    def on_writable(self) -> None:
        sent = self.sock.send(self.outbox)   # may take fewer bytes than offered
        del self.outbox[:sent]

    def finished(self) -> bool:
        """Whether the loop closes the connection now."""
        return self.peer_done              # MISTAKE (lesson 6): replies still owed are lost
        # (es) TRAMPA (lección 6): se pierden las respuestas aún pendientes


def main() -> None:
    args = command_line(__doc__)
    files = Files(args.root)
    serve(args.port, lambda sock: Connection(sock, files))


def serve(port: int, new_connection) -> None:
    """The loop. ``new_connection(sock)``: an object with sock, outbox, on_readable(),
    on_writable() and finished(); the loop asks each connection what it wants."""
    server, selector = listen_nonblocking(port)

    def close(conn: Connection, why: str) -> None:
        print(f"closing a connection: {why}", flush=True)
        selector.unregister(conn.sock)       # unregister first, then close
        conn.sock.close()

    while True:
        for key, events in selector.select():   # asleep until a socket is ready
            if key.fileobj is server:
                try:
                    sock, _peer = server.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue                 # readiness is a hint: the client left meanwhile
                sock.setblocking(False)      # recv and send never wait from now on
                # MISTAKE (lesson 7): write interest even with nothing to write: a busy loop
                # (es) TRAMPA (lección 7): interés de escritura sin nada que escribir
                selector.register(sock, BOTH, new_connection(sock))
                continue
            conn = key.data
            try:
                if events & selectors.EVENT_READ:
                    conn.on_readable()
                if events & selectors.EVENT_WRITE and conn.outbox:
                    conn.on_writable()
            except BlockingIOError:
                pass                         # not ready after all: next time
            except (OSError, BadFrame) as error:   # a reset, a broken pipe, a bad frame:
                close(conn, str(error))      # that client's problem only
                continue
            if conn.finished():
                close(conn, "the peer finished sending")


if __name__ == "__main__":
    main()
