#!/usr/bin/env python3
"""Demo: a bad frame gets an error reply, then a careful close.

The client speaks neither of the server's protocols (muxserver frames start with the
byte 0x89, HTTP requests with an upper-case method): it sends a line of text, then more
bytes after it.

What to watch: the server sniffs the first bytes, answers with a bad_magic error frame,
stops reading requests, and after the reply is out it half-closes its side ("half-closed our side
after the last reply; reading until the peer closes"). It keeps reading (and
dropping) what the client still sends until the client closes. Closing at once,
with unread bytes in the receive buffer, would make the kernel send RST, and the RST
can destroy the error reply before the client reads it (lesson 10 of
docs/TUTORIAL.md). Code: muxserver/channel.py (Channel.close_when_done,
Channel._start_lingering).

    python scripts/demo_bad_frame.py [--lang es] [--port P]
"""

import socket

from demolib import parser, read_replies, say, settle, traced_server


def main() -> None:
    args = parser(__doc__).parse_args()
    with traced_server(args) as (host, port, _root):
        with socket.create_connection((host, port)) as sock:
            say("send: a line of text, neither a muxserver frame nor HTTP",
                "send: una línea de texto, ni trama de muxserver ni HTTP")
            sock.sendall(b"hello, who is there?\r\n")
            settle()
            sock.sendall(b"more bytes the server has not read yet")
            fields, _ = read_replies(sock, 1)[0]
            settle()
            say(f"reply: {fields['error']}: {fields['message']}",
                f"respuesta: {fields['error']}: {fields['message']}")
            say(f"then recv returns {sock.recv(10)!r}: the server half-closed",
                "después recv devuelve b'': el servidor cerró su mitad")
        settle()


if __name__ == "__main__":
    main()
