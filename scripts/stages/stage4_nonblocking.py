#!/usr/bin/env python3
"""Stage 4: non-blocking sockets, a buffer per connection, a length-prefix state machine.

Stage 3's mistakes fixed: every socket is non-blocking; each connection keeps the bytes
it has received (``FrameDecoder``: prefix, then header, then body, whatever recv splits
or joins, leftovers kept for the next request) and the bytes it still owes (``outbox``,
sent as far as send() takes them); an error ends one connection, not the server.
Still missing, and shown failing by check.py:
  - it asks select() for EVENT_WRITE all the time: a socket is almost always writable,
    so select() returns at once, forever: 100 % CPU with nothing to do (lesson 7);
  - no backpressure: a client that sends requests but never reads makes the outbox grow
    without bound (lesson 8);
  - recv() returning b"" closes at once, dropping replies still owed (lesson 6);
  - no timeouts: an idle client holds its slot forever (lesson 11).
(es) Etapa 4: sockets no bloqueantes, un búfer por conexión y una máquina de estados
para el prefijo de longitud. Faltan: interés de escritura solo con salida pendiente,
contrapresión, cierre tras enviar lo debido y plazos.

    python scripts/stages/stage4_nonblocking.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import selectors
import socket

from wire import (PREFIX, BadFrame, Files, command_line, listen_nonblocking, parse_header,
                  parse_prefix)

BOTH = selectors.EVENT_READ | selectors.EVENT_WRITE


class FrameDecoder:
    """Sans-I/O: bytes in, whole requests out. It never touches a socket.
    (es) Entran bytes, salen peticiones enteras. Nunca toca un socket."""

    def __init__(self) -> None:
        self.buffer = bytearray()   # received, not yet used: partial parts and leftovers
        self.header: dict | None = None   # set once the header is complete

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_request(self) -> tuple[dict, bytes] | None:
        """The next whole request, or None until more bytes come."""
        if self.header is None:
            if len(self.buffer) < PREFIX.size:
                return None                # the prefix itself can come in pieces
            end = PREFIX.size + parse_prefix(bytes(self.buffer[:PREFIX.size]))
            if len(self.buffer) < end:
                return None
            self.header = parse_header(bytes(self.buffer[PREFIX.size:end]))
            del self.buffer[:end]
        length = self.header.get("length", 0)
        if len(self.buffer) < length:
            return None
        request = (self.header, bytes(self.buffer[:length]))
        del self.buffer[:length]           # what follows is the next request: kept
        # (es) lo que sigue es la petición siguiente: se conserva
        self.header = None
        return request


class Connection:
    def __init__(self, sock: socket.socket, files: Files) -> None:
        self.sock, self.files = sock, files
        self.decoder = FrameDecoder()
        self.outbox = bytearray()          # replies not yet taken by send()

    def on_readable(self) -> bool:
        """False when the connection is over."""
        data = self.sock.recv(65536)
        if not data:
            return False                   # MISTAKE (lesson 6): the replies still owed are dropped
            # (es) TRAMPA: se tiran las respuestas aún pendientes
        self.decoder.feed(data)
        while (request := self.decoder.next_request()) is not None:
            self.outbox += self.files.answer(*request)   # MISTAKE (lesson 8): no bound (es: sin límite)
        return True

    def on_writable(self) -> None:
        if self.outbox:
            sent = self.sock.send(self.outbox)   # may take fewer bytes than offered
            del self.outbox[:sent]


def main() -> None:
    args = command_line(__doc__)
    files, (server, selector) = Files(args.root), listen_nonblocking(args.port)
    while True:
        for key, events in selector.select():
            if key.fileobj is server:
                sock, _peer = server.accept()
                sock.setblocking(False)
                # MISTAKE (lesson 7): write interest even with nothing to write: a busy loop
                # (es) TRAMPA: interés de escritura sin nada que escribir: bucle ocupado
                selector.register(sock, BOTH, Connection(sock, files))
                continue
            conn: Connection = key.data
            try:
                alive = conn.on_readable() if events & selectors.EVENT_READ else True
                if alive and events & selectors.EVENT_WRITE:
                    conn.on_writable()
            except (BlockingIOError, InterruptedError):
                alive = True               # not ready after all: try again next time
            except (OSError, BadFrame) as error:   # this connection's problem only
                print(f"client ended: {error}", flush=True)
                alive = False
            if not alive:
                selector.unregister(conn.sock)   # unregister first, then close
                conn.sock.close()


if __name__ == "__main__":
    main()
