#!/usr/bin/env python3
"""Stage 4: a thread per client. Stage 3, with each client served in its own thread.

The one idea: a thread blocked in recv or send blocks only itself, so a slow or idle
client no longer stops the others (the HOWTO's other answer; http.server's
ThreadingHTTPServer). What it costs: a thread (a stack, a scheduler entry) per
connection, idle or not, and no timeouts: an idle client keeps its thread forever.
Stage 5 takes the other road: one thread, select().
(es) Etapa 4: un hilo por cliente. Un hilo bloqueado solo se bloquea a sí mismo; el
precio: un hilo por conexión, ociosa o no, y sin plazos.

    python scripts/stages/stage04_threads.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import socket
import threading

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
    # sendall blocks until every byte is in the kernel: only this client's thread waits.
    # (es) sendall bloquea hasta que todo está en el núcleo: solo espera este hilo.
    sock.sendall(files.answer(header, body))
    return True


def serve_client(sock: socket.socket, files: Files) -> None:
    """Requests one after another until the client finishes sending."""
    while serve_request(sock, files):
        pass


def client_thread(sock: socket.socket, files: Files) -> None:
    with sock:
        try:
            serve_client(sock, files)
        except (OSError, BadFrame) as error:   # a reset, a broken pipe, a bad frame:
            print(f"client ended: {error}", flush=True)   # that client's problem only


def main() -> None:
    args = command_line(__doc__)
    files, server = Files(args.root), listen(args.port)
    while True:
        sock, _peer = server.accept()
        # daemon: a thread blocked in recv must not keep the process alive at exit
        # (es) daemon: un hilo bloqueado en recv no debe impedir que el proceso termine
        threading.Thread(target=client_thread, args=(sock, files), daemon=True).start()


if __name__ == "__main__":
    main()
