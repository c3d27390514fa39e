#!/usr/bin/env python3
"""Demo, for contrast: two busy loops, always-on EVENT_WRITE and an ignored end of stream.

A common mistake (it is in popular tutorials) registers every client socket for
EVENT_READ | EVENT_WRITE and leaves it so. A connected socket is almost always
writable, so select() returns at once, every time, even when nothing happens: the
loop spins at 100 % CPU. muxserver asks for EVENT_WRITE only while output is queued
(muxserver/loop.py, EventLoop.set_interest; muxserver/channel.py, _update_interest).

The second spins the same way from the other side: a loop that watches for reading
only, but treats recv() returning b"" as "nothing this time" and keeps the socket
registered. An ended stream is readable forever (lesson 6: b"" means the peer finished
sending; stop reading it).

What to watch: all three loops hold one idle client for the same time. The busy loop wakes
up hundreds of thousands of times a second and burns a whole core; muxserver wakes up
about zero times a second and uses no CPU.

    python scripts/demo_busy_loop.py [--seconds 2]
"""

import argparse
import selectors
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from muxserver.server import Server, ServerConfig  # noqa: E402


def busy_loop(seconds: float) -> tuple[int, float]:
    """A server loop with EVENT_WRITE always on; returns (wake-ups, CPU seconds)."""
    def on_ready(conn: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            conn.recv(4096)
        # EVENT_WRITE: writable, but there is nothing to write... and we come back

    return spin(selectors.EVENT_READ | selectors.EVENT_WRITE, on_ready, seconds)  # the mistake


def eof_ignored(seconds: float) -> tuple[int, float]:
    """A loop that watches for reading only, but ignores recv() returning b"" (the
    peer finished sending) and keeps the socket registered: an ended stream is always
    readable, so select() returns at once forever. Returns (wake-ups, CPU seconds)."""
    def on_ready(conn: socket.socket, mask: int) -> None:
        conn.recv(4096)  # b"", every time: the mistake is to carry on

    return spin(selectors.EVENT_READ, on_ready, seconds, client_done=True)


def spin(interest: int, on_ready, seconds: float,
         client_done: bool = False) -> tuple[int, float]:
    """One idle client, watched for ``interest`` by a plain selectors loop that calls
    ``on_ready(conn, mask)``; ``client_done``: the client shut its sending side first.
    Returns (wake-ups, CPU seconds) over ``seconds``."""
    selector = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    conn.setblocking(False)
    selector.register(conn, interest)
    if client_done:
        client.shutdown(socket.SHUT_WR)  # done sending (and still connected)
    wakeups, cpu0, deadline = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, mask in selector.select(timeout=1.0):
            on_ready(key.fileobj, mask)
        wakeups += 1
    cpu = time.process_time() - cpu0
    for sock in (conn, client, listener):
        sock.close()
    selector.close()
    return wakeups, cpu


def muxserver_loop(seconds: float) -> tuple[int, float]:
    """muxserver holding one idle client for the same time."""
    server = Server(ServerConfig(port=0, root=tempfile.mkdtemp(prefix="muxserver-demo-")))
    host, port = server.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"handle_signals": False})
    thread.start()
    client = socket.create_connection((host, port))
    time.sleep(0.2)  # let it accept the client before we count
    wakeups0, cpu0 = server.loop.wakeups, time.process_time()
    time.sleep(seconds)
    wakeups, cpu = server.loop.wakeups - wakeups0, time.process_time() - cpu0
    client.close()
    server.loop.stop_threadsafe()
    thread.join()
    return wakeups, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--lang", choices=("en", "es"), default=None)
    args = p.parse_args()
    from muxserver.trace import default_language
    spanish = (args.lang or default_language()) == "es"
    line = ("{name:<22} {rate:>12} despertares/s   CPU {cpu:>5} %   "
            "(un cliente inactivo, {seconds} s)" if spanish else
            "{name:<22} {rate:>12} wake-ups/s   CPU {cpu:>5} %   "
            "(one idle client, {seconds} s)")
    # Numbers as each language writes them: 2,089,088 and 99.5 / 2.089.088 and 99,5.
    written = str.maketrans(",.", ".,") if spanish else str.maketrans("", "")
    ignored = 'b"" ignorado' if spanish else 'b"" ignored'
    for name, run in (("always-on EVENT_WRITE", busy_loop), (ignored, eof_ignored),
                      ("muxserver", muxserver_loop)):
        wakeups, cpu = run(args.seconds)
        print(line.format(name=name, rate=f"{wakeups / args.seconds:,.0f}".translate(written),
                          cpu=f"{100 * cpu / args.seconds:.1f}".translate(written),
                          seconds=f"{args.seconds:g}".translate(written)))


if __name__ == "__main__":
    main()
