#!/usr/bin/env python3
"""Demo: a client that resets its connection in the middle of an upload.

The client sends half of a file, then closes with SO_LINGER (1, 0), which makes the
kernel send RST instead of FIN.

What to watch: the server's next recv fails with "reset by peer"; the connection is
unregistered, then closed; the upload's temporary file is deleted (nothing appears
under the name); and the server goes on serving: a second client lists the root right
after. One connection's error must never take the server down. Code:
muxserver/channel.py (Channel.on_readable, Channel.finish_close),
muxserver/storage/uploads.py (Upload.abort).

    python scripts/demo_reset.py [--lang es] [--port P]
"""

import hashlib
import os
import socket
import struct

from demolib import parser, read_replies, say, settle, traced_server

from muxserver import protocol


def main() -> None:
    args = parser(__doc__).parse_args()
    data = os.urandom(200_000)
    with traced_server(args) as (host, port, root):
        sock = socket.create_connection((host, port))
        sock.sendall(protocol.encode_put(1, "never-finished.bin", len(data),
                                         hashlib.sha256(data).hexdigest()) + data[:100_000])
        settle()
        say("SO_LINGER (1, 0) and close(): the kernel sends RST, not FIN",
            "SO_LINGER (1, 0) y close(): el núcleo envía RST, no FIN")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        settle()
        with socket.create_connection((host, port)) as other:
            other.sendall(protocol.encode_list(2, ""))
            fields, body = read_replies(other, 1)[0]
            settle()  # (the server's lines about this reply first)
            listing = body.decode() or ("(vacía)" if args.lang == "es" else "(empty)")
            say(f"another client lists the root: {listing}",
                f"otro cliente lista la raíz: {listing}")
        if args.port is None:
            files = os.listdir(root) or ("ninguno" if args.lang == "es" else "none")
            say(f"files in the root, hidden ones included: {files}",
                f"archivos en la raíz, ocultos incluidos: {files}")


if __name__ == "__main__":
    main()
