#!/usr/bin/env python3
"""Stage 1: a blocking server, one client at a time.

The HOWTO's first server: accept, then talk to that client until it leaves. The framing is
right (recv_exactly collects exactly the bytes each part needs, so a split prefix or the
start of the next request is never lost), and one client's error ends only that client.
What it cannot do: serve two clients at once. While it waits on one client (an idle one,
a slow reader, a half-sent request) every other client waits in the listen queue.
(es) Etapa 1: un servidor bloqueante, un cliente cada vez. La delimitación de mensajes es correcta, pero
mientras espera a un cliente, todos los demás esperan en la cola de escucha.

    python scripts/stages/stage1_blocking.py --port 9009 --root /tmp/files
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


def serve_client(sock: socket.socket, files: Files) -> None:
    """Requests one after another until the client finishes sending."""
    while True:
        prefix = recv_exactly(sock, PREFIX.size)
        if prefix is None:
            return
        header = parse_header(recv_exactly(sock, parse_prefix(prefix)) or b"")
        body = recv_exactly(sock, header.get("length", 0)) if header.get("length") else b""
        if body is None:
            return
        # sendall blocks until every byte is in the kernel: fine with one client, since
        # nobody else is waiting for this thread anyway. (es) sendall bloquea hasta el final.
        sock.sendall(files.answer(header, body))


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
