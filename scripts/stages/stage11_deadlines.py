#!/usr/bin/env python3
"""Stage 11: deadlines. Stage 10, closing a connection that stays silent too long.

The one idea: every connection keeps the time it last received or sent a byte; the loop
wakes at least every quarter of --idle-timeout, even when no socket is ready, and closes
the connections idle longer than that: a slot is not forever (lesson 11). Still missing:
accept() failing with EMFILE (out of descriptors) ends the loop (lesson 13; stage 12).
(es) Etapa 11: plazos. Cada conexión recuerda cuándo recibió o envió su último byte; el
bucle despierta al menos cada cuarto de --idle-timeout y cierra las conexiones ociosas
(lección 11).

    python scripts/stages/stage11_deadlines.py --port 9009 --root /tmp/files --idle-timeout 30
"""

from __future__ import annotations

import selectors
import socket
import time

from decoder import FrameDecoder
from wire import BadFrame, Files, command_line, listen_nonblocking

HIGH_WATER = 256 * 1024   # owed bytes above which we stop reading (es: umbral alto)
LOW_WATER = 64 * 1024     # ... and below which we read again (es: umbral bajo)


class Connection:
    def __init__(self, sock: socket.socket, files: Files) -> None:
        self.sock, self.files = sock, files
        self.decoder = FrameDecoder()      # the bytes of a request not yet whole
        self.outbox = bytearray()          # replies not yet taken by send()
        self.peer_done = False             # recv returned b"": nothing more will come
        self.paused = False                # backpressure: not reading for now
        self.last_activity = time.monotonic()

    def interest(self) -> int:
        """What to ask select() for: the whole policy in one place (0 only once
        finished(): nothing more to read or send). (es) Qué pedir."""
        events = 0
        if not self.peer_done and not self.paused:
            events |= selectors.EVENT_READ
        if self.outbox:
            events |= selectors.EVENT_WRITE  # only while something waits to go out
            # (es) solo mientras algo espera para salir
        return events

    def on_readable(self) -> None:
        data = self.sock.recv(65536)       # readable: returns at once, with what came
        self.last_activity = time.monotonic()
        if not data:
            self.peer_done = True          # half close: the replies still go out
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
        """Whether the loop closes the connection now."""
        return self.peer_done and not self.outbox


def main() -> None:
    args = command_line(__doc__)
    files = Files(args.root)
    serve(args.port, lambda sock: Connection(sock, files), args.idle_timeout)


def serve(port: int, new_connection, idle_timeout: float) -> None:
    """The loop. ``new_connection(sock)``: an object with sock, outbox, last_activity,
    interest(), on_readable(), on_writable() and finished(); the loop asks each what it wants."""
    server, selector = listen_nonblocking(port)
    connections: dict[socket.socket, Connection] = {}

    def close(conn: Connection, why: str) -> None:
        print(f"closing a connection: {why}", flush=True)
        selector.unregister(conn.sock)       # unregister first, then close
        conn.sock.close()
        del connections[conn.sock]

    while True:
        # sleep until a socket is ready or a quarter of the idle timeout has passed
        # (es) dormir hasta que un socket esté listo o pase un cuarto del plazo
        for key, events in selector.select(timeout=idle_timeout / 4):
            if key.fileobj is server:
                try:
                    sock, _peer = server.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue                 # readiness is a hint: the client left meanwhile
                # MISTAKE (lesson 13): any other OSError (EMFILE) ends the loop
                # (es) TRAMPA (lección 13): cualquier otro OSError (EMFILE) acaba con el bucle
                sock.setblocking(False)      # recv and send never wait from now on
                connections[sock] = conn = new_connection(sock)
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
        now = time.monotonic()
        for conn in list(connections.values()):
            if now - conn.last_activity > idle_timeout:
                close(conn, f"idle for {idle_timeout:g} s")


if __name__ == "__main__":
    main()
