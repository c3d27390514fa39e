#!/usr/bin/env python3
"""Stage 5: select. Stage 4's requests, served by one thread that watches every socket.

The one idea: select() says which sockets have something to read, so one thread serves
every client without waiting on any of them in particular: no thread per connection.
But each ready socket is still served with stage 4's blocking calls, and that stops the
loop, every client with it, in two places (check.py shows both):
  - recv_exactly waits for the rest of a request: a client that sent half of one and
    stopped holds everybody (lesson 4); stage 6 keeps what came and waits in select;
  - sendall waits for a client that does not read (lesson 3); stage 7 stops waiting.
The listening socket is non-blocking (listen_nonblocking): select() says a client
waits, but it may leave the queue before accept(), which must not then block the loop.
(es) Etapa 5: select. Un solo hilo vigila todos los sockets; pero cada socket listo se
atiende con llamadas bloqueantes: media petición (lección 4) o un cliente que no lee
(lección 3) detienen el bucle, y a todos los clientes con él.

    python scripts/stages/stage05_select.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import selectors
import socket

from wire import (PREFIX, BadFrame, Files, command_line, listen_nonblocking, parse_header,
                  parse_prefix)


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
    # MISTAKE (lesson 4): the loop waits here until the whole request is in
    # (es) TRAMPA (lección 4): el bucle espera aquí hasta que llegue la petición entera
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
    # MISTAKE (lesson 3): sendall blocks the loop while a client does not read
    # (es) TRAMPA (lección 3): sendall bloquea el bucle mientras un cliente no lee
    sock.sendall(files.answer(header, body))
    return True


def main() -> None:
    args = command_line(__doc__)
    files, (server, selector) = Files(args.root), listen_nonblocking(args.port)
    while True:
        for key, _events in selector.select():   # asleep until a socket is readable
            if key.fileobj is server:
                try:
                    sock, _peer = server.accept()    # (a blocking socket, as before)
                except (BlockingIOError, ConnectionAbortedError):
                    continue                 # readiness is a hint: the client left meanwhile
                selector.register(sock, selectors.EVENT_READ)
                continue
            sock = key.fileobj
            try:
                alive = serve_request(sock, files)
            except (OSError, BadFrame) as error:   # a reset, a broken pipe, a bad frame:
                print(f"client ended: {error}", flush=True)   # that client's problem only
                alive = False
            if not alive:
                selector.unregister(sock)        # unregister first, then close
                sock.close()


if __name__ == "__main__":
    main()
