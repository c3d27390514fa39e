"""The frame decoder the stages share from stage 6 on: bytes in, whole requests out.

Sans-I/O, like muxserver's own (muxserver/protocol.py): it never touches a socket, so
the same class serves a blocking loop (stage 6), a non-blocking one (stages 7 to 12) and
asyncio (stage 14). Whatever recv() splits or joins, it keeps what it has: a prefix in
pieces, half a header, the start of the next request.
(es) El decodificador de tramas que comparten las etapas desde la 6: entran bytes, salen
peticiones enteras. Nunca toca un socket; guarda lo que tiene, llegue como llegue.
"""

from __future__ import annotations

from wire import PREFIX, parse_header, parse_prefix


class FrameDecoder:
    def __init__(self) -> None:
        self.buffer = bytearray()   # received, not yet used: partial parts and leftovers
        self.header: dict | None = None   # set once the header is complete

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_request(self) -> tuple[dict, bytes] | None:
        """The next whole request, or None until more bytes come.
        (es) La siguiente petición entera, o None hasta que lleguen más bytes."""
        if self.header is None:
            if len(self.buffer) < PREFIX.size:
                return None                # the prefix itself can come in pieces
            end = PREFIX.size + parse_prefix(bytes(self.buffer[:PREFIX.size]))
            if len(self.buffer) < end:
                return None
            self.header = parse_header(bytes(self.buffer[PREFIX.size:end]))
            del self.buffer[:end]
        length = self.header.get("length", 0)
        if len(self.buffer) < length:
            return None
        request = (self.header, bytes(self.buffer[:length]))
        del self.buffer[:length]           # what follows is the next request: kept
        # (es) lo que sigue es la petición siguiente: se conserva
        self.header = None
        return request
