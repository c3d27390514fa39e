#!/usr/bin/env python3
"""Stage 2: a thread per client.

Stage 1's code, unchanged, run in one thread per client: now a slow or idle client
blocks only its own thread, and the others are served. The HOWTO's other answer
("threads"), and http.server's ThreadingHTTPServer. What it costs: a thread (its stack,
a scheduler entry) per connection, idle or not, and no timeouts: an idle client keeps its
thread forever. Ten thousand idle clients are ten thousand threads.
(es) Etapa 2: un hilo por cliente. El código de la etapa 1, sin cambios, en un hilo por
conexión: un cliente lento solo bloquea su propio hilo. El precio: un hilo por conexión,
esté ociosa o no, y sin plazos: un cliente ocioso retiene su hilo para siempre.

    python scripts/stages/stage2_threads.py --port 9009 --root /tmp/files
"""

from __future__ import annotations

import socket
import threading

from stage1_blocking import serve_client
from wire import BadFrame, Files, command_line, listen


def client_thread(sock: socket.socket, files: Files) -> None:
    with sock:
        try:
            serve_client(sock, files)
        except (OSError, BadFrame) as error:   # this thread's client only
            print(f"client ended: {error}", flush=True)


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
