#!/usr/bin/env python3
"""A whole server made of your answers to the exercises (Decoder, flush, interest).

Stage 12's loop (scripts/stages/stage12_backoff.py) with its three hearts taken from
the file you name, so that the stage checker can play its clients against them:

    python scripts/exercises/server.py --answer my_answer.py --port 9009 --root /tmp/files

(es) El bucle de la etapa 12 con sus tres partes tomadas de tu archivo de respuestas.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stages"))

from stage12_backoff import HIGH_WATER, LOW_WATER, serve  # noqa: E402  (stage 12, unchanged)
from wire import Files  # noqa: E402


def load(path: str, name: str = "answer"):
    """A Python file as a module (your answer; check.py also loads the stage checker)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


class Connection:
    """Stage 12's connection, with your decoder, flush and interest in it."""

    def __init__(self, sock: socket.socket, answer, files: Files) -> None:
        self.sock, self.answer, self.files = sock, answer, files
        self.decoder = answer.Decoder()
        self.pending: list = []   # whole requests not answered yet (while paused)
        self.outbox = bytearray()
        self.peer_done = False
        self.last_activity = time.monotonic()

    def interest(self) -> int:
        paused = len(self.outbox) >= HIGH_WATER
        return self.answer.interest(len(self.outbox), paused, self.peer_done)

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

    def finished(self) -> bool:
        return self.peer_done and not self.outbox and not self.pending


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--answer", required=True, help="your copy of skeleton.py")
    p.add_argument("--port", type=int, default=9009)
    p.add_argument("--root", default=".")
    p.add_argument("--idle-timeout", type=float, default=60.0)
    args = p.parse_args()
    answer, files = load(args.answer), Files(args.root)
    serve(args.port, lambda sock: Connection(sock, answer, files), args.idle_timeout)


if __name__ == "__main__":
    main()
