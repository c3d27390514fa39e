#!/usr/bin/env python3
"""A whole server made of your answers to the exercises (Decoder, flush, interest).

Stage 5's loop (scripts/stages/stage5_interest.py) with its three hearts taken from
the file you name, so that the stage checker can play its clients against them:

    python scripts/exercises/server.py --answer my_answer.py --port 9009 --root /tmp/files

(es) El bucle de la etapa 5 con sus tres partes tomadas de tu archivo de respuestas.
"""

from __future__ import annotations

import argparse
import importlib.util
import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stages"))

from wire import Files, listen  # noqa: E402

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


def load(path: str):
    spec = importlib.util.spec_from_file_location("answer", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Connection:
    def __init__(self, sock: socket.socket, answer, files: Files) -> None:
        self.sock, self.answer, self.files = sock, answer, files
        self.decoder = answer.Decoder()
        self.pending: list = []   # whole requests not answered yet (while paused)
        self.outbox = bytearray()
        self.peer_done = False
        self.last_activity = time.monotonic()

    @property
    def paused(self) -> bool:
        return len(self.outbox) >= HIGH_WATER

    def events(self) -> int:
        return self.answer.interest(len(self.outbox), self.paused, self.peer_done)

    def on_readable(self) -> None:
        data = self.sock.recv(65536)
        self.last_activity = time.monotonic()
        if not data:
            self.peer_done = True
        else:
            self.pending += self.decoder.feed(data)
        self.answer_requests()

    def answer_requests(self) -> None:
        while self.pending and len(self.outbox) < HIGH_WATER:
            self.outbox += self.files.answer(*self.pending.pop(0))

    def on_writable(self) -> None:
        self.answer.flush(self.sock, self.outbox)
        self.last_activity = time.monotonic()
        if len(self.outbox) <= LOW_WATER:
            self.answer_requests()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--answer", required=True, help="your copy of skeleton.py")
    p.add_argument("--port", type=int, default=9009)
    p.add_argument("--root", default=".")
    p.add_argument("--idle-timeout", type=float, default=60.0)
    args = p.parse_args()
    answer, files = load(args.answer), Files(args.root)
    server = listen(args.port)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    conns: dict[socket.socket, Connection] = {}

    def close(conn: Connection) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()
        del conns[conn.sock]

    while True:
        for key, events in selector.select(timeout=args.idle_timeout / 4):
            if key.fileobj is server:
                sock, _ = server.accept()
                sock.setblocking(False)
                conns[sock] = conn = Connection(sock, answer, files)
                selector.register(sock, conn.events() or selectors.EVENT_READ, conn)
                continue
            conn = key.data
            if conn.sock not in conns:
                continue
            try:
                if events & selectors.EVENT_READ:
                    conn.on_readable()
                if events & selectors.EVENT_WRITE:
                    conn.on_writable()
            except (OSError, ValueError) as error:
                print(f"closing a connection: {error}", flush=True)
                close(conn)
                continue
            wanted = conn.events()
            if not wanted and not conn.outbox and not conn.pending:
                close(conn)                      # finished: nothing to read or to send
            elif wanted and wanted != key.events:
                selector.modify(conn.sock, wanted, conn)
        now = time.monotonic()
        for conn in list(conns.values()):
            if now - conn.last_activity > args.idle_timeout:
                close(conn)


if __name__ == "__main__":
    main()
