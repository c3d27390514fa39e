"""The contracts between a channel and the protocol it carries, declared.

asyncio's ``transports.py`` and ``protocols.py`` are the model: :class:`Transport` says
what a protocol may use of its channel (queue output, pause and resume reading, ask how
much output waits, close), and :class:`ConnectionProtocol` what the channel calls on
the protocol, and in which order. mypy checks both (``.ci/run``), the test's fake
channel included; :class:`BaseProtocol` gives every method a harmless default.

This module does no I/O.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from .buffers import FileRegion
    from .observe import Observer
    from .session import Transfer


class ChannelState(enum.Enum):
    HANDSHAKE = "TLS handshake"
    OPEN = "open"
    DRAINING = "closing: sending"  # the last replies go out first
    LINGERING = "closing: draining"  # reading what the peer still sends, so no RST
    CLOSED = "closed"


class Phase(enum.Enum):
    """What the connection waits for, which decides the timeout that applies."""

    IDLE = "idle"  # between requests: idle_timeout since the last byte
    HEADER = "header"  # a frame started: header_timeout since its first byte (slowloris)
    TRANSFER = "transfer"  # a body moves in or out: stall_timeout since the last byte
    WORKING = "working"  # the server works for the request (a helper): no client timeout


class ConnectionProtocol(Protocol):
    """What a channel calls on the protocol it carries (and what observers read).

    In the order asyncio's ``protocols.py`` gives: ``data_received``* then
    ``eof_received``? while open, ``pause_writing`` and ``resume_writing`` in pairs
    whenever the queued output crosses its water marks, ``timeout_phase`` after every
    event and ``on_timeout`` when its deadline passes, and ``connection_lost`` once, last.
    """

    @property
    def state_label(self) -> str:
        """What the console shows in the connection's state column."""

    @property
    def recv_buffered(self) -> int:
        """Bytes received but not handled yet (partial headers, pipelined requests)."""

    @property
    def transfer(self) -> "Transfer | None":
        """The put or get under way, for the console; None between transfers."""

    @property
    def account(self) -> str:
        """Who the connection is signed in as, for the console ("" when nobody is, or
        the server has no accounts)."""

    def data_received(self, data: memoryview) -> None:
        """Bytes from recv_into; the view is only valid during the call."""

    def eof_received(self) -> None:
        """recv returned b"": the peer finished sending (half close or full close)."""

    def pause_writing(self) -> None:
        """The queued output went over the high-water mark: produce no more for now."""

    def resume_writing(self) -> None:
        """The queued output fell below the low-water mark again."""

    def timeout_phase(self) -> tuple[Phase, float]:
        """What the connection waits for now, and since when (HEADER only)."""

    def on_timeout(self, phase: Phase) -> None:
        """The deadline of ``phase`` passed."""

    def splice_sink(self) -> tuple[int, int, int] | None:
        """(fd, offset, count): body bytes may go from the socket to this file."""

    def spliced(self, count: int) -> None:
        """``count`` body bytes went to the splice sink."""

    def splice_failed(self, count: int, exc: OSError) -> None:
        """Writing ``count`` spliced bytes to the file failed."""

    def server_stopping(self) -> bool:
        """A graceful stop began; return True if the connection closes at once."""

    def connection_lost(self) -> None:
        """The channel is closed: release files, delete temporary files."""

    def fail(self, exc: Exception) -> None:
        """An unexpected error in one of this protocol's steps (see EventLoop.fault)."""


class Transport(Protocol):
    """What a protocol may use of its channel (the shape of asyncio's
    ``transports.py``): queue output, pause and resume reading, ask how much output
    waits, close. Flow control comes to the protocol as ``pause_writing`` and
    ``resume_writing`` (above); the channel decides when. A test's fake channel is
    checked against this declaration (tests/session_harness.py, under mypy)."""

    @property
    def id(self) -> int:
        """The connection's number, for logs, the trace and the console."""

    @property
    def peer(self) -> str:
        """"address:port", as logs and the console show it."""

    @property
    def peer_host(self) -> str:
        """The address alone: what the back-off after wrong tokens counts."""

    @property
    def tls(self) -> bool: ...

    @property
    def state(self) -> ChannelState: ...

    @property
    def closed(self) -> bool: ...

    #: who watches (the trace, --step): told what happens, typed (observe.py)
    observe: Observer

    def set_protocol(self, protocol: ConnectionProtocol) -> None:
        """Carry another protocol from now on (the sniffer hands over to a session)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def write_file(self, region: FileRegion) -> None: ...

    def get_write_buffer_size(self) -> int:
        """Bytes queued and not sent yet, file regions included."""

    def sending_file(self) -> bool:
        """A file region is queued: a body is on its way and no frame can come between."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close_when_done(self, reason: str) -> None:
        """Send what is queued, then close."""

    def abort(self, reason: str) -> None:
        """Close at the end of this loop turn, whatever is queued."""

    def fail(self, exc: Exception) -> None:
        """An unexpected error: log it, close this connection only."""


# (Compiled in the compiled build, and inherited from by plain Python protocols: see
# session.Session.)
@mypyc_attr(allow_interpreted_subclasses=True)
class BaseProtocol:
    """A :class:`ConnectionProtocol` whose every method does the harmless thing."""

    def __init__(self, channel: Transport) -> None:
        self.channel = channel

    @property
    def state_label(self) -> str:
        return "open"

    @property
    def recv_buffered(self) -> int:
        return 0

    @property
    def transfer(self) -> "Transfer | None":
        return None

    @property
    def account(self) -> str:
        return ""

    def data_received(self, data: memoryview) -> None:
        pass

    def eof_received(self) -> None:
        self.channel.close_when_done("peer finished sending")

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def timeout_phase(self) -> tuple[Phase, float]:
        return Phase.IDLE, 0.0

    def on_timeout(self, phase: Phase) -> None:
        self.channel.abort(f"timed out ({phase.value})")

    def splice_sink(self) -> tuple[int, int, int] | None:
        return None

    def spliced(self, count: int) -> None:
        raise AssertionError("spliced() without a splice sink")

    def splice_failed(self, count: int, exc: OSError) -> None:
        raise AssertionError("splice_failed() without a splice sink")

    def server_stopping(self) -> bool:
        self.channel.close_when_done("server stopping")
        return True

    def connection_lost(self) -> None:
        pass

    def fail(self, exc: Exception) -> None:
        self.channel.fail(exc)
