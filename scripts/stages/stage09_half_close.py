#!/usr/bin/env python3
"""Stage 9: the half close. Stage 8, finishing what is owed after recv() returns b"".

The one idea: recv() returning b"" means the peer finished sending, not that it is
gone: it may still be reading (a client that sends its requests, then shutdown(SHUT_WR)).
The connection stops reading, sends every reply still owed, and only then closes
(lesson 6). Still missing: backpressure (lesson 8; stage 10).
(es) Etapa 9: el cierre parcial. b"" significa que el otro extremo terminó de enviar, no
que se fue: se deja de leer, se envía todo lo debido y solo entonces se cierra (lección 6).

    python scripts/stages/stage09_half_close.py --port 9009 --root /tmp/files
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
        """What to ask select() for: the whole policy in one place (0 only once
        finished(): nothing more to read or send). (es) Qué pedir."""
        events = 0 if self.peer_done else selectors.EVENT_READ
        if self.outbox:
            events |= selectors.EVENT_WRITE  # only while something waits to go out
            # (es) solo mientras algo espera para salir
        return events

    def on_readable(self) -> None:
        data = self.sock.recv(65536)       # readable: returns at once, with what came
        if not data:
            self.peer_done = True          # half close: the replies still go out
            # (es) cierre parcial (half-close): las respuestas salen igualmente
        self.decoder.feed(data)
        while (request := self.decoder.next_request()) is not None:
            self.outbox += self.files.answer(*request)   # MISTAKE (lesson 8): no bound
            # (es) TRAMPA (lección 8): sin límite

    def on_writable(self) -> None:
        sent = self.sock.send(self.outbox)   # may take fewer bytes than offered
        del self.outbox[:sent]

    def finished(self) -> bool:
        """Whether the loop closes the connection now."""
        return self.peer_done and not self.outbox


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
                close(conn, "the peer finished sending and every reply went out")
                # (es) el otro extremo terminó de enviar y todas las respuestas salieron
            elif conn.interest() != key.events:
                selector.modify(conn.sock, conn.interest(), conn)


if __name__ == "__main__":
    main()
