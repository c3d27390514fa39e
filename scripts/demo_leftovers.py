#!/usr/bin/env python3
"""Demo: a server that drops the leftover bytes of a recv loses whole requests.

Three gets in one send(), then shutdown(SHUT_WR), to two servers: stage 1 of
scripts/stages (one recv taken for one request, the rest thrown away) and muxserver.
The half close makes the end visible without waiting: each server answers what it
understood, then sees recv() return b"" and closes.

What to watch: stage 1 answers id 1 only: ids 2 and 3 were in the same recv, after the
first request, and were dropped. muxserver answers 1, 2 and 3 (FrameDecoder keeps the
bytes that follow a request and decodes them next).
(es) Qué observar: la etapa 1 responde solo al id 1; los ids 2 y 3 llegaron en el mismo
recv y se perdieron. muxserver responde a los tres.

    python scripts/demo_leftovers.py [--lang es]
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile

from demolib import REPO, parser, say

from muxserver import protocol

SERVERS = {  # (English name, Spanish name): command
    ("stage 1 (one recv = one request)", "etapa 1 (un recv = una petición)"):
        [sys.executable, "scripts/stages/stage01_blocking.py"],
    ("muxserver", "muxserver"): [sys.executable, "-m", "muxserver", "serve", "--no-console"],
}


def answered_ids(command: list[str], root: str) -> list:
    proc = subprocess.Popen([*command, "--port", "0", "--root", root], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = next(int(line.split(":")[-1].split()[0]) for line in proc.stdout
                    if line.startswith("listening on"))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"".join(protocol.encode_get(i, "a.txt") for i in (1, 2, 3)))
            sock.shutdown(socket.SHUT_WR)  # nothing more from us: now the server must finish
            decoder, ids = protocol.FrameDecoder(), []
            while True:
                event = decoder.next_event()
                if event is protocol.NEED_DATA:
                    decoder.receive_data(sock.recv(65536))
                elif isinstance(event, protocol.FrameHeader):
                    ids.append(event.fields.get("id"))
                elif isinstance(event, protocol.PeerClosed):
                    return ids
    finally:
        proc.kill()
        proc.wait(timeout=30)


def main() -> None:
    parser(__doc__).parse_args()
    root = tempfile.mkdtemp(prefix="muxserver-leftovers-")
    try:
        with open(os.path.join(root, "a.txt"), "w") as f:
            f.write("hello\n")
        say("three gets (ids 1, 2, 3) in one send(), then shutdown(SHUT_WR)",
            "tres get (ids 1, 2, 3) en un solo send(), después shutdown(SHUT_WR)")
        for (name, nombre), command in SERVERS.items():
            ids = answered_ids(command, root)
            say(f"{name}: replies for ids {ids}", f"{nombre}: respuestas para los ids {ids}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
