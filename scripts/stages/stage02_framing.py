#!/usr/bin/env python3
"""Stage 2: framing. Stage 1, reading exactly the bytes each part of a request needs.

The one idea: recv() returns what has arrived, anything from one byte to several
requests, so the framing decides how much to read, not recv. ``recv_exactly`` calls recv
until it has the 8-byte prefix, then the header's length, then the body's: a request in
pieces is collected, and a recv never takes a byte of the next request (lessons 2 to 5).
Still missing: one client's error ends the server (stage 3); one client at a time
(stage 4).
(es) Etapa 2: delimitación de mensajes. recv_exactly llama a recv hasta tener justo los
bytes de cada parte (prefijo, cabecera, cuerpo): una petición en trozos se reúne y no se
pierde nada de la siguiente.

    python scripts/stages/stage02_framing.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import socket

from wire import PREFIX, Files, command_line, listen, parse_header, parse_prefix


def recv_exactly(sock: socket.socket, count: int) -> bytes | None:
    """Exactly ``count`` bytes, however recv splits them; None if the peer finished first.
    recv may return fewer bytes than asked: it is our job to call it again.
    (es) recv puede devolver menos bytes de los pedidos: hay que volver a llamarlo."""
    chunks, missing = [], count
    while missing:
        chunk = sock.recv(min(missing, 65536))
        if not chunk:           # b"": the peer finished sending (es: terminó de enviar)
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def serve_request(sock: socket.socket, files: Files) -> bool:
    """One request and its reply; False when the client finished sending."""
    prefix = recv_exactly(sock, PREFIX.size)
    if prefix is None:
        return False
    raw = recv_exactly(sock, parse_prefix(prefix))
    if raw is None:
        return False
    header = parse_header(raw)
    body = recv_exactly(sock, header.get("length", 0)) if header.get("length") else b""
    if body is None:
        return False
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
