#!/usr/bin/env python3
"""Stage 1: a blocking server, one client at a time, written the way first examples are.

accept, then serve that client until it leaves: recv, answer, sendall. Two mistakes
are left in, the two every first server makes, so that check.py shows them failing:
  - one recv() is taken for one whole request, but a stream has no message boundaries:
    a request split across recvs is garbage (lesson 4), and the requests that came in
    the same recv as the first are lost (lesson 5);
  - nothing catches one client's error: a reset ends the server (lesson 9).
And while it serves one client, every other client waits in the listen queue (lesson 1).
Stage 2 fixes the framing, stage 3 the errors, stage 4 the waiting.
(es) Etapa 1: un servidor bloqueante, un cliente cada vez, escrito como los primeros
ejemplos: un recv tomado por una petición entera (trampas de las lecciones 4 y 5) y
ningún try/except (lección 9). Los demás clientes esperan en la cola de escucha.

    python scripts/stages/stage01_blocking.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import socket

from wire import PREFIX, Files, command_line, listen, parse_header, parse_prefix


def serve_request(sock: socket.socket, files: Files) -> bool:
    """One request and its reply; False when the client finished sending."""
    data = sock.recv(65536)    # MISTAKE (lesson 4): "this is one whole request"
    # (es) TRAMPA (lección 4): «esto es una petición entera»
    if not data:               # b"": the peer finished sending (es: terminó de enviar)
        return False
    end = PREFIX.size + parse_prefix(data[:PREFIX.size])
    header = parse_header(data[PREFIX.size:end])
    body = data[end:end + header.get("length", 0)]   # MISTAKE (lesson 5): the rest is lost
    # sendall blocks until every byte is in the kernel; meanwhile every other client
    # waits (lesson 1). (es) sendall bloquea hasta que todo está en el núcleo.
    sock.sendall(files.answer(header, body))
    return True


def serve_client(sock: socket.socket, files: Files) -> None:
    """Requests one after another until the client finishes sending."""
    while serve_request(sock, files):
        pass


def main() -> None:
    args = command_line(__doc__)
    files, server = Files(args.root), listen(args.port)
    while True:
        sock, _peer = server.accept()   # the next client waits here until this one is done
        with sock:
            serve_client(sock, files)   # MISTAKE (lesson 9): an error here ends the server
            # (es) TRAMPA (lección 9): un error aquí acaba con el servidor


if __name__ == "__main__":
    main()
