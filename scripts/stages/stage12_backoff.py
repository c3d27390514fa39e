#!/usr/bin/env python3
"""Stage 12: out of descriptors, back off. Stage 11, surviving accept() failing.

The one idea: when the process has no descriptor left, accept() raises OSError (EMFILE)
while the client waits in the listen queue, so the listener stays readable: calling
accept() again at once would spin. The loop stops watching the listener for a second,
then watches it again; the connections it has go on meanwhile (lesson 13). muxserver
(stage 13) is this design grown up: replies streamed from disk with sendfile, bodies to
disk, limits on everything (muxserver/loop.py, channel.py, server.py).
(es) Etapa 12: sin descriptores, esperar y reintentar. Si accept() falla con EMFILE, el
bucle deja de vigilar el socket de escucha durante un segundo (lección 13).

    python scripts/stages/stage12_backoff.py --port 9009 --root /tmp/files --idle-timeout 30
"""

from __future__ import annotations

import selectors
import socket
import time

from decoder import FrameDecoder
from wire import BadFrame, Files, command_line, listen_nonblocking

HIGH_WATER = 256 * 1024   # owed bytes above which we stop reading (es: umbral alto)
LOW_WATER = 64 * 1024     # ... and below which we read again (es: umbral bajo)
BACK_OFF = 1.0            # seconds without accepting after accept() failed


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
    interest(), on_readable(), on_writable() and finished() (scripts/exercises reuses this)."""
    server, selector = listen_nonblocking(port)
    connections: dict[socket.socket, Connection] = {}
    accept_again = 0.0                       # when to watch the listener again, if set

    def close(conn: Connection, why: str) -> None:
        print(f"closing a connection: {why}", flush=True)
        selector.unregister(conn.sock)       # unregister first, then close
        conn.sock.close()
        del connections[conn.sock]

    while True:
        # sleep until a socket is ready or a quarter of the idle timeout has passed
        # (es) dormir hasta que un socket esté listo o pase un cuarto del plazo
        wait = idle_timeout / 4
        if accept_again:
            wait = min(wait, max(0.0, accept_again - time.monotonic()))
        for key, events in selector.select(timeout=wait):
            if key.fileobj is server:
                try:
                    sock, _peer = server.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue                 # readiness is a hint: the client left meanwhile
                except OSError as error:     # EMFILE: no descriptor left for the client
                    print(f"accept failed: {error}; waiting {BACK_OFF:g} s", flush=True)
                    selector.unregister(server)          # (es) dejar de vigilar el socket de escucha
                    accept_again = time.monotonic() + BACK_OFF
                    continue
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
        if accept_again and now >= accept_again:
            selector.register(server, selectors.EVENT_READ)   # descriptors may be free now
            accept_again = 0.0


if __name__ == "__main__":
    main()
