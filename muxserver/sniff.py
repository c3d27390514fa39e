"""The first protocol of every connection, and the one of a connection over the cap.

Both protocols share one port, and the client speaks first in both, so the first
bytes decide: the native protocol's frames start with the byte 0x89 (never the first
byte of text), HTTP requests with an upper-case method token and a space.
:class:`Sniffer` holds the first bytes until it can tell, then hands the connection
(and the bytes it holds) to a :class:`~muxserver.native.NativeSession` or an
:class:`~muxserver.http.HttpSession`. Until then the header timeout applies from the
first byte, as for any request header.

:class:`Refusal` is the protocol of a connection over the connection cap: it answers
the client's first bytes in the client's own protocol (an error frame, or HTTP 503),
then closes.
"""

from __future__ import annotations

import logging

from . import protocol
from .channel import Channel

# Imported at start: importing h11 on the first HTTP request held the loop for ~20 ms.
from .http import HttpSession
from .native import NativeSession
from .session import Services
from .transport import BaseProtocol, ChannelState, Phase, Transport

log = logging.getLogger("muxserver")


class Sniffer(BaseProtocol):
    """Waits for enough bytes to tell the native protocol from HTTP."""

    MAX_METHOD = 16  # longer than any HTTP method we could serve

    @property
    def state_label(self) -> str:
        return "new connection"

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(channel)
        self.services = services
        self.held = bytearray()
        self.since = 0.0  # when the first byte arrived

    def data_received(self, data: memoryview) -> None:
        if not self.held:
            self.since = self.services.loop.now
            if data[0] == protocol.MAGIC[0]:  # told by the first byte: nothing to hold
                self.hand_over("native", data)
                return
        self.held += data
        kind = self.decide()
        if kind is None:
            return
        if kind == "bad":
            self.refuse()
            return
        held, self.held = bytes(self.held), bytearray()
        self.hand_over(kind, memoryview(held))

    def hand_over(self, kind: str, data: memoryview) -> None:
        """The session for ``kind`` takes the connection from here, beginning with
        ``data`` (lent by the channel, as any recv's bytes are)."""
        if kind == "http":
            session: NativeSession | HttpSession = HttpSession(self.services, self.channel)
        else:
            session = NativeSession(self.services, self.channel)
        self.channel.observe.sniff(self.channel.id,
                                   "HTTP" if kind == "http" else "the native protocol")
        self.channel.set_protocol(session)
        session.header_since = self.since  # the request began with the first byte we held
        session.data_received(data)

    def decide(self) -> str | None:
        """"native", "http", "bad", or None: not enough bytes yet."""
        if self.held[0] == protocol.MAGIC[0]:
            return "native"
        space = self.held.find(b" ")
        token = bytes(self.held[:space if space >= 0 else len(self.held)])
        if not token.isalpha() or not token.isupper():
            return "bad"
        if space > 0:
            return "http"
        return "bad" if len(self.held) > self.MAX_METHOD else None

    def refuse(self) -> None:
        log.warning("%s speaks neither muxserver nor HTTP", self.channel.peer,
                    extra={"event": "refused", "conn": self.channel.id})
        frame = protocol.encode_error(None, "bad_magic", f"expected magic 89 4d 55 58 or an "
                                      f"HTTP request, got {bytes(self.held[:4]).hex(' ')}")
        self.channel.observe.reply(self.channel.id, None, "bad_magic", len(frame))
        self.channel.write(frame)
        self.channel.close_when_done("neither muxserver nor HTTP")

    def eof_received(self) -> None:
        self.channel.close_when_done("closed before a request")

    def timeout_phase(self) -> tuple[Phase, float]:
        return (Phase.HEADER, self.since) if self.held else (Phase.IDLE, 0.0)

    def on_timeout(self, phase: Phase) -> None:
        log.warning("%s timed out before its first request", self.channel.peer,
                    extra={"event": "timeout", "conn": self.channel.id})
        self.channel.observe.timeout(self.channel.id, "no request in time")
        self.channel.abort("timed out before a request")


class Refusal(BaseProtocol):
    """A connection over the cap: one answer in the client's protocol, then close.
    A client that says nothing is closed after ``close_linger`` seconds."""

    @property
    def state_label(self) -> str:
        return "refusing"

    def __init__(self, channel: Channel, max_connections: int) -> None:
        super().__init__(channel)
        self.max_connections = max_connections
        self.timer = channel.loop.call_at(channel.loop.now + channel.limits.close_linger,
                                          lambda: channel.abort("too many clients"),
                                          owner=channel)

    def data_received(self, data: memoryview) -> None:
        if self.channel.state is not ChannelState.OPEN:
            return
        message = (f"the server is at its limit of {self.max_connections} "
                   "connections; retry later")
        if data[0] == protocol.MAGIC[0]:
            self.channel.write(protocol.encode_error(None, "too_many_clients", message))
        else:
            body = (message + "\n").encode()
            self.channel.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                               b"Content-Type: text/plain\r\nConnection: close\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.channel.close_when_done("too many clients")

    def eof_received(self) -> None:
        self.channel.abort("too many clients")

    def connection_lost(self) -> None:
        self.timer.cancel()
