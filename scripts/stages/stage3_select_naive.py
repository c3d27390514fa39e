#!/usr/bin/env python3
"""Stage 3: select, but blocking sends and no framing state.

One thread watches every socket with select() and serves whichever is ready: two
clients at once, no threads. This is the "multi-connection" server most tutorials stop
at, with their three mistakes left in, so that scripts/stages/check.py can show each
one failing:
  1. one recv is taken for one whole request: a request split across recvs is garbage,
     and a second request that came in the same recv is dropped (the HOWTO: "a stream
     has no message boundaries"; lessons 2, 4 and 5);
  2. sendall on a blocking socket: a client that does not read stalls the whole loop,
     every other client included (lessons 1 and 3);
  3. no try/except around one client: a reset kills the server (lesson 9).
(es) Etapa 3: select, pero envíos bloqueantes y sin estado de delimitación de mensajes. Tres trampas
a propósito: un recv tomado por una petición entera, sendall que detiene el bucle ante
un cliente que no lee, y un RST que tumba el servidor.

    python scripts/stages/stage3_select_naive.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import select

from wire import PREFIX, Files, command_line, listen, parse_header, parse_prefix


def main() -> None:
    args = command_line(__doc__)
    files, server = Files(args.root), listen(args.port)
    clients = []
    while True:
        readable, _, _ = select.select([server, *clients], [], [])
        for sock in readable:
            if sock is server:
                clients.append(server.accept()[0])
                continue
            data = sock.recv(65536)    # MISTAKE (lesson 2): "this is one whole request"
            # (es) TRAMPA (lección 2): «esto es una petición entera»
            if not data:
                clients.remove(sock)
                sock.close()
                continue
            header_length = parse_prefix(data[:PREFIX.size])
            end = PREFIX.size + header_length
            header = parse_header(data[PREFIX.size:end])
            body = data[end:end + header.get("length", 0)]   # and the rest is dropped
            sock.sendall(files.answer(header, body))   # MISTAKE (lesson 3): blocks the loop
            # MISTAKE (lesson 9): no try/except: ConnectionResetError ends the server
            # (es) TRAMPA (lección 3): sendall bloquea el bucle; TRAMPA (lección 9): sin try/except, un RST
            # (ConnectionResetError) acaba con el servidor


if __name__ == "__main__":
    main()
