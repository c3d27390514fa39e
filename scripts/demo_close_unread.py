#!/usr/bin/env python3
"""Demo: closing a socket with unread input sends RST, and the RST eats the reply.

A client sends a request and more bytes after it, and does not read yet. The server reads
the request, send()s a 200,000-byte error reply (the kernel takes it all: send returns
200000) and close()s. Its receive queue still holds the client's extra bytes, so Linux
answers with RST instead of FIN and throws away the reply bytes still queued. The client
then reads a few KiB and gets ConnectionResetError: the rest of a reply that send()
"took" never arrives.

The second run does what muxserver does (Channel.close_when_done and LINGERING): send,
shutdown(SHUT_WR), read and drop the input until the client closes, then close. The whole
reply arrives, then the end of stream.

What to watch: "send() took 200,000 bytes" both times; the client's count and its
ConnectionResetError the first time, the whole reply and b"" the second.
(es) Qué observar: send() tomó 200.000 bytes las dos veces; la primera, el cliente recibe
unos pocos KiB y ConnectionResetError; la segunda, la respuesta entera.

    python scripts/demo_close_unread.py [--lang es]
"""

import socket

from demolib import num, parser, say

REPLY = b"E" * 200_000


def run(graceful: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
        client.connect(listener.getsockname())
        server_side, _ = listener.accept()
        with client:
            client.sendall(b"REQUEST\n" + b"x" * 1000)  # the request, then bytes unread
            server_side.recv(8)
            server_side.setblocking(False)
            taken = server_side.send(REPLY)
            say(f"server: send() took {num(taken)} bytes of the reply",
                f"servidor: send() tomó {num(taken)} bytes de la respuesta")
            if graceful:
                server_side.setblocking(True)
                server_side.shutdown(socket.SHUT_WR)  # FIN after the reply
                client.shutdown(socket.SHUT_WR)       # (the client, done sending)
                while server_side.recv(65536):        # read and drop until the client's FIN
                    pass
            server_side.close()
            got = 0
            try:
                while chunk := client.recv(65536):
                    got += len(chunk)
                say(f"client: the whole reply, {num(got)} bytes, then b'' (FIN)",
                    f"cliente: la respuesta entera, {num(got)} bytes, y después b'' (FIN)")
            except ConnectionResetError:
                say(f"client: {num(got)} bytes, then ConnectionResetError: the RST threw the "
                    "rest away",
                    f"cliente: {num(got)} bytes y después ConnectionResetError: el RST tiró el "
                    "resto")


def main() -> None:
    parser(__doc__).parse_args()
    say("=== close() with unread input ===", "=== close() con entrada sin leer ===")
    run(graceful=False)
    say("=== shutdown(SHUT_WR), drain the input, then close() ===",
        "=== shutdown(SHUT_WR), vaciar la entrada y después close() ===")
    run(graceful=True)


if __name__ == "__main__":
    main()
