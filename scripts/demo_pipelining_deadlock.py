#!/usr/bin/env python3
"""Demo: the pipelining deadlock. A client that sends without reading stops the server.

The client pipelines 2,200 gets in one blocking ``sendall`` (200 of a 64 KiB file, then
2,000 with 4 KB names, so that a few megabytes of requests fit in few of them) and reads
nothing until it returns. The server answers as fast as it can; the replies fill the
client's receive buffer, then the server's send buffer, then its own output queue up to
the high-water mark, where it stops reading (backpressure, lesson 8). The requests then
fill the server's receive queue and the client's send buffer, and ``sendall`` waits for
room that only the client itself could make, by reading. Neither side ever moves.

What to watch: the verdict comes from the kernel, not from a timer: the client's thread
asleep in send(), the server asleep, and both directions' queues full; then what
``ss -tn`` shows of the same connection (Recv-Q and Send-Q, both ends). Then the same requests from a client that reads
while it writes (a non-blocking socket, EVENT_WRITE only while it has bytes to send)
all get their replies. Blocking sockets give backpressure for free, to the server; a
client that pipelines must take its replies as they come. Code: muxserver/session.py
(Session.must_wait), muxserver/channel.py (Channel.pause_reading).

    python scripts/demo_pipelining_deadlock.py [--lang es] [--port P]
"""

import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import demolib
from demolib import num, parser, say, traced_server

from muxserver import protocol
from muxserver.protocol import FrameDecoder, FrameEnd, NEED_DATA
from muxserver.step import kernel_queues

BIG, LONG = 200, 2_000  # gets of a 64 KiB file, then gets of names 4 KB long
REQUESTS = BIG + LONG
SENDTO = {"x86_64": 44, "aarch64": 206}.get(os.uname().machine)


def main() -> None:
    args = parser(__doc__).parse_args()
    long_name = "/".join(["n" * 250] * 16)  # (no such file: a short error reply)
    stream = b"".join(protocol.encode_get(i, "big.bin") for i in range(BIG)) + b"".join(
        protocol.encode_get(BIG + i, long_name) for i in range(LONG))
    with traced_server(args, narrate=False) as (host, port, root):
        if args.port is None:
            (root / "big.bin").write_bytes(os.urandom(64 * 1024))
        blocked(host, port, stream)
        reading(host, port, stream)


def blocked(host: str, port: int, stream: bytes) -> None:
    say(f"one blocking sendall() of {num(len(stream))} bytes: {num(REQUESTS)} gets, and no "
        "recv() until it returns",
        f"un solo sendall() bloqueante de {num(len(stream))} bytes: {num(REQUESTS)} gets, y "
        "ningún recv() hasta que vuelva")  # (--port: the server needs big.bin, 64 KiB)
    sock = socket.create_connection((host, port))
    sender = threading.Thread(target=send_all, args=(sock, stream), daemon=True)
    sender.start()
    seen = 0
    while seen < 3 and sender.is_alive():  # the same state three looks in a row
        time.sleep(0.05)
        seen = seen + 1 if stuck(sender.native_id, sock, port) else 0
    if not sender.is_alive():
        say("sendall() returned: the buffers held every request here; no deadlock this time",
            "sendall() volvió: los búferes guardaron todas las peticiones; esta vez no hay "
            "bloqueo mutuo")
        sock.close()
        return
    unread, unsent = kernel_queues(sock.fileno()) or (0, 0)
    server_unread = server_queue(port, sock.getsockname()[1])
    say("stuck: the client sleeps in send(), the server sleeps, and nothing moves:",
        "atascados: el cliente duerme en send(), el servidor duerme, y nada se mueve:")
    say(f"  the client holds {num(unread)} bytes of replies it never reads (its Recv-Q)",
        f"  el cliente tiene {num(unread)} bytes de respuestas que nunca lee (su Recv-Q)")
    say(f"  its send queue holds {num(unsent)} bytes the server has not taken (its Send-Q)",
        f"  su cola de envío guarda {num(unsent)} bytes que el servidor no ha tomado "
        "(su Send-Q)")
    say(f"  the server's receive queue holds {num(server_unread)} bytes of requests: it "
        "stopped reading, its replies over the high-water mark",
        f"  la cola de recepción del servidor guarda {num(server_unread)} bytes de "
        "peticiones: dejó de leer, con sus respuestas por encima del umbral alto")
    show_ss(port, sock.getsockname()[1])
    sock.shutdown(socket.SHUT_RDWR)  # (the only way out: sendall fails, the thread ends)
    sender.join()
    sock.close()


def show_ss(port: int, client_port: int) -> None:
    """What ``ss -tn`` says of this connection, both ends: the same queues, as an
    operator would look at them (skipped where ss, from iproute2, is missing)."""
    if shutil.which("ss") is None:
        return
    query = f"( sport = :{port} and dport = :{client_port} ) or ( sport = :{client_port} )"
    lines = subprocess.run(["ss", "-tn", "state", "established", query], capture_output=True,
                           text=True).stdout.splitlines()
    say("  ss -tn says the same:", "  ss -tn dice lo mismo:")
    for line in lines[1:]:
        recv_q, send_q, local = line.split()[:3]
        client = local.rsplit(":", 1)[1] == str(client_port)
        say(f"    {'client' if client else 'server'} end: Recv-Q {num(int(recv_q))}, "
            f"Send-Q {num(int(send_q))}",
            f"    extremo del {'cliente' if client else 'servidor'}: Recv-Q "
            f"{num(int(recv_q))}, Send-Q {num(int(send_q))}")


def send_all(sock: socket.socket, stream: bytes) -> None:
    try:
        sock.sendall(stream)
    except OSError:
        pass  # shut down by the demo: the deadlock it shows was real


def stuck(thread_id: int | None, sock: socket.socket, port: int) -> bool:
    """The client's thread asleep in send(), the server's process asleep, replies
    unread on the client and requests unread on the server."""
    task = Path(f"/proc/self/task/{thread_id}")
    try:
        asleep = (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "S"
        call = int((task / "syscall").read_text().split()[0])
    except (OSError, ValueError):
        return False
    server = demolib._NARRATOR  # (None with --port: a server we did not start)
    return (asleep and call == SENDTO and (kernel_queues(sock.fileno()) or (0, 0))[0] > 0
            and server_queue(port, sock.getsockname()[1]) > 0
            and (server is None or demolib.server_asleep(server.proc.pid)))


def server_queue(port: int, client_port: int) -> int:
    """The server end's receive queue, from /proc/net/tcp (what ss -tn calls Recv-Q)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local, remote = int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16)
        if local == port and remote == client_port:
            return int(cols[4].split(":")[1], 16)
    return 0


def reading(host: str, port: int, stream: bytes) -> None:
    """The same requests, sent by a client that takes its replies as they come."""
    sock = socket.create_connection((host, port))
    sock.setblocking(False)
    selector, decoder = selectors.DefaultSelector(), FrameDecoder()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    view, replies = memoryview(stream), 0
    while replies < REQUESTS:
        for _key, events in selector.select():
            if events & selectors.EVENT_WRITE:
                view = view[sock.send(view):]
                if not view:  # nothing left to send: watch for reading only
                    selector.modify(sock, selectors.EVENT_READ)
            if events & selectors.EVENT_READ:
                decoder.receive_data(sock.recv(1 << 20))
                while (event := decoder.next_event()) is not NEED_DATA:
                    replies += type(event) is FrameEnd
                decoder.keep_leftover()
    sock.close()
    say(f"the same {num(REQUESTS)} gets from a client that reads while it writes: "
        f"{num(replies)} replies, every one",
        f"los mismos {num(REQUESTS)} gets desde un cliente que lee mientras escribe: "
        f"{num(replies)} respuestas, todas")


if __name__ == "__main__":
    main()
