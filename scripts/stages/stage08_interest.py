#!/usr/bin/env python3
"""Stage 8: write interest only while output is pending. Stage 7, asleep when idle.

The one idea: a socket is writable almost always, so asking select() for EVENT_WRITE
with nothing to send makes it return at once, forever (100 % CPU with nothing to do).
``Connection.interest`` asks for it only while the outbox holds bytes, and the loop
tells select() whenever the answer changes (lesson 7). Still missing: the half close
(lesson 6; stage 9) and backpressure (lesson 8; stage 10).
(es) Etapa 8: interés de escritura solo con salida pendiente. Connection.interest pide
EVENT_WRITE solo mientras la bandeja de salida tiene bytes: el bucle duerme si no hay nada
que hacer (lección 7).

    python scripts/stages/stage08_interest.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import selectors
import socket

from decoder import FrameDecoder
from wire import BadFrame, Files, command_line, listen_nonblocking


class Connection:
    def __init__(self, sock: socket.socket, files: Files) -> None:
        self.sock, self.files = sock, files
        self.decoder = FrameDecoder()      # the bytes of a request not yet whole
        self.outbox = bytearray()          # replies not yet taken by send()
        self.peer_done = False             # recv returned b"": nothing more will come

    def interest(self) -> int:
        """What to ask select() for: the whole policy in one place. (es) Qué pedir."""
        events = selectors.EVENT_READ
        if self.outbox:
            events |= selectors.EVENT_WRITE  # only while something waits to go out
            # (es) solo mientras algo espera para salir
        return events

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
    """The loop. ``new_connection(sock)``: an object with sock, outbox, interest(),
    on_readable(), on_writable() and finished(); the loop asks each what it wants."""
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
                conn = new_connection(sock)
                selector.register(sock, conn.interest(), conn)
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
            elif conn.interest() != key.events:
                selector.modify(conn.sock, conn.interest(), conn)


if __name__ == "__main__":
    main()
