#!/usr/bin/env python3
"""Stage 5: write interest only while output is pending, backpressure, timeouts.

Stage 4's frame decoder, with the four rules a server needs to survive its clients:
  - EVENT_WRITE only while the outbox holds bytes: select() sleeps when there is
    nothing to do (``Connection.interest``);
  - backpressure: over HIGH_WATER bytes owed, stop reading (and so stop taking new
    requests) until the client has read its replies down to LOW_WATER;
  - recv() returning b"" means "the peer finished sending": stop reading, send what is
    still owed, then close;
  - a deadline per connection: nothing received or sent for --idle-timeout seconds
    and the connection is closed.
What it still lacks: accept() failing with EMFILE (out of descriptors) ends it; muxserver
backs off and accepts again a second later (server.py). muxserver (stage 6) is this
design grown up: replies streamed from disk with sendfile, bodies to disk, limits on
everything (muxserver/loop.py, channel.py, protocol.py).
(es) Etapa 5: interés de escritura solo con salida pendiente, contrapresión (umbral alto
y umbral bajo), b"" como fin de envío del otro extremo, y un plazo por conexión.

    python scripts/stages/stage5_interest.py --port 9009 --root /tmp/files --idle-timeout 30
"""

from __future__ import annotations

import selectors
import socket
import time

from stage4_nonblocking import FrameDecoder
from wire import Files, command_line, listen_nonblocking

HIGH_WATER = 256 * 1024   # owed bytes above which we stop reading (es: umbral alto)
LOW_WATER = 64 * 1024     # ... and below which we read again (es: umbral bajo)


class Connection:
    def __init__(self, sock: socket.socket, files: Files) -> None:
        self.sock, self.files = sock, files
        self.decoder = FrameDecoder()
        self.outbox = bytearray()
        self.peer_done = False               # recv returned b"": nothing more will come
        self.paused = False                  # backpressure: not reading for now
        self.last_activity = time.monotonic()

    def interest(self) -> int:
        """What to ask select() for: the whole policy in one place. (es) Qué pedir."""
        events = 0
        if not self.peer_done and not self.paused:
            events |= selectors.EVENT_READ
        if self.outbox:
            events |= selectors.EVENT_WRITE  # only while something waits to go out
            # (es) solo mientras algo espera para salir
        return events

    def on_readable(self) -> None:
        data = self.sock.recv(65536)
        self.last_activity = time.monotonic()
        if not data:
            self.peer_done = True            # half close: the replies still go out
            # (es) cierre parcial (half-close): las respuestas salen igualmente
        self.decoder.feed(data)
        self.answer_requests()

    def answer_requests(self) -> None:
        """Answer whole requests until the outbox is over HIGH_WATER."""
        while len(self.outbox) < HIGH_WATER:
            request = self.decoder.next_request()
            if request is None:
                break
            self.outbox += self.files.answer(*request)
        self.paused = len(self.outbox) >= HIGH_WATER

    def on_writable(self) -> None:
        sent = self.sock.send(self.outbox)   # may take fewer bytes than offered
        del self.outbox[:sent]
        self.last_activity = time.monotonic()
        if self.paused and len(self.outbox) <= LOW_WATER:
            self.paused = False
            self.answer_requests()           # requests already buffered come first

    def finished(self) -> bool:
        return self.peer_done and not self.outbox


def main() -> None:
    args = command_line(__doc__)
    files = Files(args.root)
    serve(args.port, lambda sock: Connection(sock, files), args.idle_timeout)


def serve(port: int, new_connection, idle_timeout: float) -> None:
    """The loop. ``new_connection(sock)``: an object with sock, outbox, last_activity,
    interest(), on_readable(), on_writable() and finished() (scripts/exercises reuses it)."""
    server, selector = listen_nonblocking(port)
    connections: dict[socket.socket, Connection] = {}

    def close(conn: Connection, why: str) -> None:
        print(f"closing a connection: {why}", flush=True)
        selector.unregister(conn.sock)       # unregister first, then close
        conn.sock.close()
        del connections[conn.sock]

    while True:
        # sleep until a socket is ready or the nearest deadline (es: el plazo más cercano)
        for key, events in selector.select(timeout=idle_timeout / 4):
            if key.fileobj is server:
                sock, _peer = server.accept()
                sock.setblocking(False)
                connections[sock] = conn = new_connection(sock)
                selector.register(sock, conn.interest(), conn)
                continue
            conn = key.data
            if conn.sock not in connections:
                continue                     # closed earlier in this same batch
            try:
                if events & selectors.EVENT_READ:
                    conn.on_readable()
                if events & selectors.EVENT_WRITE and conn.outbox:
                    conn.on_writable()
            except (BlockingIOError, InterruptedError):
                pass                         # not ready after all: next time
            except (OSError, ValueError) as error:   # (BadFrame is a ValueError)
                close(conn, str(error))      # this connection's problem only
                continue
            if conn.finished():
                close(conn, "the peer finished sending and every reply went out")
                # (es) el otro extremo terminó de enviar y todas las respuestas salieron
            elif conn.interest() != key.events:
                selector.modify(conn.sock, conn.interest(), conn)
        now = time.monotonic()
        for conn in list(connections.values()):
            if now - conn.last_activity > idle_timeout:
                close(conn, f"idle for {idle_timeout:g} s")

if __name__ == "__main__":
    main()
