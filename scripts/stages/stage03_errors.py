#!/usr/bin/env python3
"""Stage 3: one client's error is that client's problem. Stage 2, with a try/except.

The one idea: a reset, a broken pipe or a bad frame raises in the code serving one
client; caught around that client, it ends that connection and the server goes on to
the next (lesson 9). Still missing: one client at a time (stage 4).
(es) Etapa 3: el error de un cliente es problema de ese cliente. Un try/except alrededor
de cada cliente: un RST, una tubería rota o una trama mal formada terminan esa conexión, no el
servidor.

    python scripts/stages/stage03_errors.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import socket

from wire import PREFIX, BadFrame, Files, command_line, listen, parse_header, parse_prefix


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
            try:
                serve_client(sock, files)
            except (OSError, BadFrame) as error:   # a reset, a broken pipe, a bad frame:
                print(f"client ended: {error}", flush=True)   # that client's problem only


if __name__ == "__main__":
    main()
