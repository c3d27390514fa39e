#!/usr/bin/env python3
"""Demo: sendall() on a non-blocking socket raises part-way, and cannot say how much went.

A peer accepts but does not read. We make our socket non-blocking and sendall() 64 MiB:
the kernel's buffers fill, sendall() raises BlockingIOError, and the exception carries no
count. Then the peer reads everything that did arrive: megabytes went out that the
exception never mentioned. Resending "the message" would duplicate them; giving up would
lose the rest. send() instead returns what it took, every time (muxserver: Channel._send_chunks
accounts each sendmsg).

What to watch: "sendall raised BlockingIOError" with no count, then the bytes the peer
really received; then send(), which says how much it took; last, what a loop that
ignores that count does to the next message.
(es) Qué observar: sendall lanza BlockingIOError sin decir cuánto salió; el otro extremo
recibió megabytes de todos modos. send() sí devuelve lo que tomó.

    python scripts/demo_sendall_nonblocking.py [--lang es]
"""

import socket

from demolib import num, parser, say

MiB = 1024 * 1024


def drain(sock: socket.socket) -> int:
    """Read what has arrived (the peer has stopped sending): a count of bytes."""
    return len(drain_all(sock))


def main() -> None:
    parser(__doc__).parse_args()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        with sender, receiver:
            sender.setblocking(False)
            try:
                sender.sendall(b"x" * (64 * MiB))
                say("sendall returned (the buffers held everything)",
                    "sendall volvió (los búferes lo aguantaron todo)")
            except BlockingIOError as exc:
                say(f"sendall raised BlockingIOError: {exc.strerror}; how many bytes went out? "
                    "the exception does not say",
                    f"sendall lanzó BlockingIOError: {exc.strerror}; ¿cuántos bytes salieron? "
                    "la excepción no lo dice")
            went = drain(receiver)
            say(f"yet the peer received {num(went)} bytes of the 64 MiB message",
                f"y sin embargo el otro extremo recibió {num(went)} bytes del mensaje de 64 MiB")
            taken = sender.send(b"y" * (64 * MiB))
            say(f"send() instead returns what it took: {num(taken)} bytes; the rest is ours to "
                "keep",
                f"send() en cambio devuelve lo que tomó: {num(taken)} bytes; el resto lo "
                "guardamos "
                "nosotros")
            ignored(sender, receiver)


def ignored(sender: socket.socket, receiver: socket.socket) -> None:
    """The pitfall itself: a loop that sends message A, ignores what send() returned,
    and sends message B. The peer gets the start of A, then B: no boundary is left."""
    drain_all(receiver)
    message_a, message_b = b"A" * (16 * MiB), b"B" * 16
    sender.send(message_a)          # the mistake: what it returned is thrown away
    arrived = drain_all(receiver)   # (the peer reads; there is room again)
    sender.send(message_b)          # "A went out": on to the next message
    arrived += drain_all(receiver)
    of_a = len(arrived) - len(arrived.lstrip(b"A"))
    say(f"a loop that ignores it sent message A ({num(len(message_a))} bytes), then B: the "
        f"peer got {num(of_a)} bytes of A and then B, with no way to tell where A ended",
        f"un bucle que lo ignora envió el mensaje A ({num(len(message_a))} bytes) y luego B: "
        f"el otro extremo recibió {num(of_a)} bytes de A y después B, sin manera de saber "
        "dónde acabó A")


def drain_all(sock: socket.socket) -> bytes:
    """What has arrived so far, all of it."""
    sock.setblocking(False)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


if __name__ == "__main__":
    main()
