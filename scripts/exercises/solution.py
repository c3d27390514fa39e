"""One answer to the three exercises of skeleton.py (try yours first).

    python scripts/exercises/check.py scripts/exercises/solution.py
(es) Una respuesta a los tres ejercicios de skeleton.py (intenta antes la tuya).
"""

from __future__ import annotations

import json
import selectors
import socket
import struct

PREFIX = struct.Struct("!4sBBH")
MAGIC = b"\x89MUX"


class Decoder:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.header: dict | None = None   # set between a complete header and its body

    def feed(self, data: bytes) -> list[tuple[dict, bytes]]:
        self.buffer += data
        done = []
        while True:
            if self.header is None:
                if len(self.buffer) < PREFIX.size:        # even the prefix comes in pieces
                    return done
                magic, _version, _flags, header_length = PREFIX.unpack_from(self.buffer)
                if magic != MAGIC:
                    raise ValueError(f"bad magic number {bytes(magic).hex(' ')}")
                if len(self.buffer) < PREFIX.size + header_length:
                    return done
                end = PREFIX.size + header_length
                self.header = json.loads(self.buffer[PREFIX.size:end])
                del self.buffer[:end]
            length = self.header.get("length", 0)
            if len(self.buffer) < length:
                return done
            done.append((self.header, bytes(self.buffer[:length])))
            del self.buffer[:length]                  # what follows is the next request
            self.header = None


def flush(sock: socket.socket, outbox: bytearray) -> None:
    while outbox:
        try:
            sent = sock.send(outbox)                  # may take fewer bytes than offered
        except BlockingIOError:
            return                                    # full: wait for EVENT_WRITE
        del outbox[:sent]


def interest(outbox_bytes: int, paused: bool, peer_done: bool) -> int:
    events = 0
    if not paused and not peer_done:
        events |= selectors.EVENT_READ
    if outbox_bytes:
        events |= selectors.EVENT_WRITE               # only while something waits
    return events
