#!/usr/bin/env python3
"""Stage 6: a decoder per connection. Stage 5, never waiting for the rest of a request.

The one idea: select() said this socket is readable, so one recv() returns at once
with whatever has arrived; a FrameDecoder per connection (decoder.py) keeps those bytes
until they make a whole request, and the loop goes back to select(). Half a request
no longer holds anybody (lesson 4). The decoder is a connection's state, so each
socket now has a Connection, and the loop moves into serve(), which makes them.
Still missing: sendall waits for a client that does not read, and the loop with it
(lesson 3; stage 7).
(es) Etapa 6: un decodificador por conexión. Un recv por aviso de select, con lo que haya
llegado; el FrameDecoder lo guarda hasta tener una petición entera. Media petición ya no
detiene a nadie; sendall sigue esperando a quien no lee (lección 3).

    python scripts/stages/stage06_decoder.py --port 9009 --root /tmp/files
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
        self.peer_done = False             # recv returned b"": nothing more will come

    def on_readable(self) -> None:
        data = self.sock.recv(65536)       # readable: returns at once, with what came
        if not data:
            self.peer_done = True
            return
        self.decoder.feed(data)
        while (request := self.decoder.next_request()) is not None:
            # MISTAKE (lesson 3): sendall blocks the loop while a client does not read
            # (es) TRAMPA (lección 3): sendall bloquea el bucle mientras un cliente no lee
            self.sock.sendall(self.files.answer(*request))

    def finished(self) -> bool:
        """Whether the loop closes the connection now."""
        return self.peer_done              # (sendall gave every reply to the kernel already)


def main() -> None:
    args = command_line(__doc__)
    files = Files(args.root)
    serve(args.port, lambda sock: Connection(sock, files))


def serve(port: int, new_connection) -> None:
    """The loop. ``new_connection(sock)``: an object with sock, on_readable() and
    finished(); from here on the loop asks each connection what it wants."""
    server, selector = listen_nonblocking(port)

    def close(conn: Connection, why: str) -> None:
        print(f"closing a connection: {why}", flush=True)
        selector.unregister(conn.sock)       # unregister first, then close
        conn.sock.close()

    while True:
        for key, _events in selector.select():   # asleep until a socket is readable
            if key.fileobj is server:
                try:
                    sock, _peer = server.accept()    # (a blocking socket, as before)
                except (BlockingIOError, ConnectionAbortedError):
                    continue                 # readiness is a hint: the client left meanwhile
                selector.register(sock, selectors.EVENT_READ, new_connection(sock))
                continue
            conn = key.data
            try:
                conn.on_readable()
            except (OSError, BadFrame) as error:   # a reset, a broken pipe, a bad frame:
                close(conn, str(error))      # that client's problem only
                continue
            if conn.finished():
                close(conn, "the peer finished sending")


if __name__ == "__main__":
    main()
