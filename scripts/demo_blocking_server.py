#!/usr/bin/env python3
"""Demo, for contrast: a naive blocking server serves one client at a time.

The naive server is the first thing the Socket HOWTO shows: accept(), then recv()
until the request is complete, reply, close, and only then accept() the next client.
Client A is slow (it types its request over about two seconds); client B connects
half a second later with a request that is ready at once.

What to watch: with the blocking server, B waits for A: its reply comes after about
two seconds. With muxserver (one thread too, but a selectors loop over every socket),
B is answered in milliseconds while A is still typing. Code: muxserver/loop.py
(EventLoop.run_once: one select() over all sockets) versus naive_server() below.

    python scripts/demo_blocking_server.py
"""

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from muxserver import protocol  # noqa: E402
from muxserver.server import Server, ServerConfig  # noqa: E402

SLOW_SECONDS = 2.0


def naive_server(listener: socket.socket, stop: threading.Event) -> None:
    """Blocking and sequential: a request is one line; the reply echoes it."""
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            request = b""
            while not request.endswith(b"\n"):
                chunk = conn.recv(1024)  # blocks: nobody else is served meanwhile
                if not chunk:
                    break
                request += chunk
            conn.sendall(b"reply to " + request)


def slow_client_naive(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for word in (b"I ", b"type ", b"very ", b"slowly\n"):
            sock.sendall(word)
            time.sleep(SLOW_SECONDS / 4)
        sock.recv(1024)


def quick_client_naive(port: int, started: float) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"I am quick\n")
        sock.recv(1024)
    return time.monotonic() - started


def slow_client_mux(port: int) -> None:
    frame = protocol.encode_list(1, "")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for i in range(4):  # the same frame in four slow pieces
            sock.sendall(frame[i * len(frame) // 4:(i + 1) * len(frame) // 4])
            time.sleep(SLOW_SECONDS / 4)
        sock.recv(1024)


def quick_client_mux(port: int, started: float) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(protocol.encode_list(2, ""))
        sock.recv(1024)
    return time.monotonic() - started


def race(slow, quick, port: int) -> float:
    slow_thread = threading.Thread(target=slow, args=(port,))
    slow_thread.start()
    time.sleep(0.5)  # B arrives while A is still typing
    waited = quick(port, time.monotonic())
    slow_thread.join()
    return waited


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lang", choices=("en", "es"), default=None)
    args = p.parse_args()
    from muxserver.trace import default_language
    spanish = (args.lang or default_language()) == "es"
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    naive = threading.Thread(target=naive_server, args=(listener, stop), daemon=True)
    naive.start()
    waited = race(slow_client_naive, quick_client_naive, listener.getsockname()[1])
    print(f"servidor bloqueante: el cliente B esperó {waited:.3f} s (a que A terminara)"
          if spanish else
          f"blocking server: client B waited {waited:.3f} s (for A to finish typing)")
    stop.set()
    listener.close()

    import tempfile
    server = Server(ServerConfig(port=0, root=tempfile.mkdtemp(prefix="muxserver-demo-")))
    _host, port = server.start()
    loop = threading.Thread(target=server.serve_forever, kwargs={"handle_signals": False})
    loop.start()
    try:
        waited = race(slow_client_mux, quick_client_mux, port)
        print(f"muxserver:           el cliente B esperó {waited:.3f} s (A seguía escribiendo)"
              if spanish else
              f"muxserver:       client B waited {waited:.3f} s (A was still typing)")
    finally:
        server.loop.stop_threadsafe()
        loop.join()


if __name__ == "__main__":
    main()
