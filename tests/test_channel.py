"""The channel below the socket: a fake socket that takes what the test says, a fake loop
that records what the channel asks of it, and a protocol that records what it is told.

Short writes, EAGAIN, the write interest, backpressure, the linger after the last
reply, the deadline re-armed from the protocol's phase, a TLS handshake that wants to
read then to write, and a splice that falls back to recv: each driven by hand, one
call at a time, no server, no select().
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import socket
import ssl
import weakref
from typing import Any, Callable, Iterator

import pytest

from muxserver.buffers import FileRegion
from muxserver.channel import Channel
from muxserver.limits import Limits
from muxserver.loop import EVENT_READ, EVENT_WRITE
from muxserver.transport import BaseProtocol, ChannelState, Phase

pytestmark = pytest.mark.timeout(30)


class FakeSocket:
    """A socket whose sends take at most ``take`` bytes (None: all; 0: EAGAIN) and whose
    recvs return what the test queued (b"" queued: end of stream; nothing: EAGAIN)."""

    def __init__(self) -> None:
        self.take: int | None = None
        self.sent = bytearray()
        self.incoming: list[bytes] = []
        self.shut: list[int] = []
        self.closed = False

    def fileno(self) -> int:
        return 99

    def sendmsg(self, chunks: list[memoryview]) -> int:
        data = b"".join(bytes(c) for c in chunks)
        if self.take == 0:
            raise BlockingIOError(errno.EAGAIN, "would block")
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent += data[:n]
        return n

    def send(self, data: bytes | memoryview) -> int:
        return self.sendmsg([memoryview(data)])

    def recv_into(self, buf: memoryview) -> int:
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "would block")
        data = self.incoming.pop(0)
        buf[:len(data)] = data
        return len(data)

    def shutdown(self, how: int) -> None:
        self.shut.append(how)

    def close(self) -> None:
        self.closed = True


class FakeTLSSocket(ssl.SSLSocket):
    """Enough of an SSLSocket for the channel (it looks at isinstance): a handshake that
    raises what the test queued, then succeeds."""

    def __new__(cls) -> "FakeTLSSocket":
        return socket.socket.__new__(cls)  # (SSLSocket has no public constructor)

    def __init__(self) -> None:  # noqa: D107  (no socket underneath)
        self.handshake_steps: list[type[Exception]] = []
        self.plain = FakeSocket()

    def do_handshake(self, block: bool = False) -> None:
        if self.handshake_steps:
            raise self.handshake_steps.pop(0)()

    def fileno(self) -> int:
        return 98

    def pending(self) -> int:
        return 0

    def recv_into(self, buf: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self.plain.recv_into(buf)

    def send(self, data: Any, flags: int = 0) -> int:
        return self.plain.send(data)

    def close(self) -> None:
        self.plain.closed = True


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """What a channel asks of its loop, recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.scratch = memoryview(bytearray(64 * 1024))
        self.interest: dict[Any, int] = {}
        self.timers: list[Timer] = []
        self.to_flush: list[Any] = []
        self.to_close: list[Any] = []
        self.soon: list[Callable[[], None]] = []
        self.pipe: Any = None

    def set_interest(self, sock: Any, handler: Any, events: int) -> None:
        old, handler.events = handler.events, events
        self.interest[handler] = events
        if old != events:
            handler.on_interest_changed(old, events)

    def call_at(self, when: float, callback: Callable[[], None], owner: Any = None) -> Timer:
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None], owner: Any = None) -> Timer:
        return self.call_at(self.now + delay, callback)

    def call_soon(self, callback: Callable[[], None], owner: Any = None) -> None:
        self.soon.append(callback)

    def flush_before_sleep(self, channel: Any) -> None:
        self.to_flush.append(channel)

    def close_after_batch(self, channel: Any) -> None:
        self.to_close.append(channel)

    def splice_pipe(self) -> Any:
        return self.pipe

    def next_timer(self) -> Timer:
        return min((t for t in self.timers if not t.cancelled), key=lambda t: t.when)

    def fire(self, timer: Timer) -> None:
        """The timer is due: it leaves the heap, then runs (as the loop does it)."""
        timer.cancelled = True
        timer.callback()


class Recorder(BaseProtocol):
    """A protocol that records what its channel tells it."""

    def __init__(self, channel: Any) -> None:
        super().__init__(channel)
        self.told: list[tuple[str, Any]] = []
        self.phase: tuple[Phase, float] = (Phase.IDLE, 0.0)

    def data_received(self, data: memoryview) -> None:
        self.told.append(("data", bytes(data)))

    def eof_received(self) -> None:
        self.told.append(("eof", None))

    def pause_writing(self) -> None:
        self.told.append(("pause_writing", None))

    def resume_writing(self) -> None:
        self.told.append(("resume_writing", None))

    def timeout_phase(self) -> tuple[Phase, float]:
        return self.phase

    def on_timeout(self, phase: Phase) -> None:
        self.told.append(("timeout", phase))

    def connection_lost(self) -> None:
        self.told.append(("lost", None))


def open_channel(sock: Any = None, **limits: Any) -> tuple[Channel, FakeLoop, Any, Recorder]:
    loop = FakeLoop()
    sock = sock if sock is not None else FakeSocket()
    channel = Channel(loop, sock, "192.0.2.1:5000", 1, Limits(**limits),  # type: ignore
                      on_closed=lambda ch: None, peer_host="192.0.2.1")
    protocol = Recorder(channel)
    channel.start(protocol)
    return channel, loop, sock, protocol


# ------------------------------------------------------------------- writing


def test_a_short_write_keeps_the_rest_and_asks_for_writability_until_it_is_sent():
    channel, loop, sock, _ = open_channel()
    assert loop.interest[channel] == EVENT_READ  # nothing queued: no EVENT_WRITE
    sock.take = 3
    channel.write(b"0123456789")
    channel.flush()
    assert bytes(sock.sent) == b"012" and channel.out.total == 7
    assert loop.interest[channel] == EVENT_READ | EVENT_WRITE
    sock.take = None
    channel.on_events(EVENT_WRITE)
    assert bytes(sock.sent) == b"0123456789" and not channel.out
    assert loop.interest[channel] == EVENT_READ  # dropped the moment the queue emptied


def test_eagain_on_send_sends_nothing_and_waits_for_writability():
    channel, loop, sock, _ = open_channel()
    sock.take = 0
    channel.write(b"abc")
    channel.flush()
    assert sock.sent == b"" and channel.out.total == 3
    assert loop.interest[channel] & EVENT_WRITE


def test_a_file_region_goes_by_pread_and_send_where_sendfile_cannot(tmp_path):
    channel, loop, sock, _ = open_channel()
    channel.use_sendfile = False  # (a fake socket has no descriptor to sendfile to)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 5000)
    done: list[bool] = []
    region = FileRegion(os.open(path, os.O_RDONLY), 0, 5000, on_done=lambda: done.append(True))
    channel.write(b"HEAD")
    channel.write_file(region)
    for _ in range(3):
        channel.flush()
    assert bytes(sock.sent) == b"HEAD" + b"x" * 5000 and done == [True]
    assert region.fd == -1  # closed once sent


def test_backpressure_pauses_the_protocol_above_high_water_and_resumes_below_low():
    channel, loop, sock, protocol = open_channel(output_high_water=1000, output_low_water=100)
    sock.take = 0
    channel.write(b"a" * 600)
    channel.write(b"b" * 600)  # over the high-water mark
    assert protocol.told == [("pause_writing", None)]
    sock.take = 1150
    channel.flush()  # 50 left: below the low-water mark
    assert protocol.told[-1] == ("resume_writing", None)


def test_a_peer_that_never_reads_is_closed_at_the_output_cap():
    channel, loop, sock, _ = open_channel(max_output_buffer=10_000)
    sock.take = 0
    channel.write(b"z" * 10_001)
    assert channel.closed and loop.to_close == [channel]


# ------------------------------------------------------------------- reading


def test_recv_hands_the_bytes_on_and_b_empty_means_the_peer_finished():
    channel, loop, sock, protocol = open_channel()
    sock.incoming = [b"hello", b""]
    channel.on_events(EVENT_READ)  # (a recv that did not fill the buffer: the last one)
    channel.on_events(EVENT_READ)
    assert protocol.told[:2] == [("data", b"hello"), ("eof", None)]
    assert channel.read_closed and not loop.interest[channel] & EVENT_READ


def test_a_spurious_wake_up_reads_nothing_and_tells_nothing():
    channel, _, sock, protocol = open_channel()
    channel.on_events(EVENT_READ)  # (recv_into: EAGAIN)
    assert protocol.told == [] and not channel.closed


# ----------------------------------------------------------------- closing


def test_closing_sends_what_is_queued_then_half_closes_and_lingers_until_the_peer_closes():
    channel, loop, sock, protocol = open_channel()
    sock.take = 2
    channel.write(b"last reply")
    channel.close_when_done("done")
    assert channel.state is ChannelState.DRAINING
    sock.take = None
    channel.flush()
    assert channel.state is ChannelState.LINGERING and sock.shut == [socket.SHUT_WR]
    assert loop.interest[channel] == EVENT_READ  # reading what the peer still sends
    sock.incoming = [b"late bytes", b""]
    channel.on_events(EVENT_READ)
    channel.on_events(EVENT_READ)
    assert ("data", b"late bytes") not in protocol.told  # discarded
    assert channel.closed and loop.to_close == [channel]
    channel.finish_close()
    assert sock.closed and protocol.told[-1] == ("lost", None)
    assert loop.interest[channel] == 0  # unregistered before closed


@contextlib.contextmanager
def without_the_cyclic_collector() -> Iterator[None]:
    """Only reference counting frees anything inside the block."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def test_a_closed_channel_lets_go_of_its_protocol_so_both_are_freed_at_once():
    # (The two hold each other. Left to the cyclic collector, a thousand closed
    # connections are found by a full collection, which stops the loop for ms.)
    with without_the_cyclic_collector():
        channel, loop, sock, protocol = open_channel()
        gone = weakref.ref(protocol)
        channel.abort("done")
        channel.finish_close()
        assert protocol.told[-1] == ("lost", None)
        del protocol
        assert gone() is None


def test_a_read_scheduled_before_the_close_reads_nothing_after_it():
    # (TLS: bytes OpenSSL decrypted already are read by a callback the loop runs later.)
    channel, loop, sock, protocol = open_channel()
    sock.incoming = [b"late"]
    channel.abort("reset")
    channel.finish_close()
    channel.on_readable()
    assert sock.incoming == [b"late"] and protocol.told == [("lost", None)]


def test_a_sent_region_lets_go_of_its_callback_so_what_holds_it_is_freed_at_once(tmp_path):
    # (A get's transfer record holds its region, whose callback holds the transfer.)
    class Transfer:
        region: FileRegion | None = None
        finished = False

        def finish(self) -> None:
            self.finished = True

    channel, loop, sock, _ = open_channel()
    channel.use_sendfile = False  # (a fake socket has no descriptor to sendfile to)
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * 3000)
    with without_the_cyclic_collector():
        transfer = Transfer()
        transfer.region = FileRegion(os.open(path, os.O_RDONLY), 0, 3000,
                                     on_done=transfer.finish)
        channel.write_file(transfer.region)
        channel.flush()
        assert bytes(sock.sent) == b"y" * 3000 and transfer.finished
        gone = weakref.ref(transfer)
        del transfer
        assert gone() is None


def test_regions_still_queued_at_the_close_are_closed_and_never_called(tmp_path):
    channel, loop, sock, _ = open_channel()
    path = tmp_path / "f.bin"
    path.write_bytes(b"z" * 100)
    called: list[bool] = []
    region = FileRegion(os.open(path, os.O_RDONLY), 0, 100, on_done=lambda: called.append(True))
    channel.use_sendfile = False  # (a fake socket has no descriptor to sendfile to)
    sock.take = 0  # (the socket takes nothing: the region waits)
    channel.write_file(region)
    channel.flush()
    channel.abort("reset")
    channel.finish_close()
    assert region.fd == -1 and region.on_done is None and called == []


# ------------------------------------------------------------------ deadlines


def test_the_deadline_follows_the_protocols_phase_and_fires_once_due(monkeypatch):
    import time

    channel, loop, _, protocol = open_channel(idle_timeout=300, header_timeout=60)
    assert loop.next_timer().when == 1000 + 300  # idle
    protocol.phase = (Phase.HEADER, 1010.0)
    channel.rearm_timer()
    assert loop.next_timer().when == 1010 + 60  # moved earlier: a header began
    timer = loop.next_timer()
    loop.now = 1020.0
    monkeypatch.setattr(time, "monotonic", lambda: loop.now)
    protocol.phase = (Phase.IDLE, 0.0)  # the header came: the deadline moved away
    channel.last_io = 1020.0
    loop.fire(timer)  # fires early: re-arms at the newer deadline, tells nothing
    assert ("timeout", Phase.IDLE) not in protocol.told
    assert loop.next_timer().when == 1020 + 300


def test_a_deadline_that_passed_tells_the_protocol_which_phase(monkeypatch):
    import time

    channel, loop, _, protocol = open_channel(stall_timeout=60)
    protocol.phase = (Phase.TRANSFER, 0.0)
    channel.rearm_timer()
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0 + 61)
    loop.fire(loop.next_timer())
    assert protocol.told[-1] == ("timeout", Phase.TRANSFER)


# ----------------------------------------------------------------------- TLS


def test_a_tls_handshake_asks_for_what_openssl_waits_for():
    tls = FakeTLSSocket()
    tls.handshake_steps = [ssl.SSLWantReadError, ssl.SSLWantWriteError]
    channel, loop, _, protocol = open_channel(tls)
    assert channel.state is ChannelState.HANDSHAKE and loop.interest[channel] == EVENT_READ
    channel.on_events(EVENT_READ)
    assert loop.interest[channel] == EVENT_WRITE  # it wants to write now
    channel.on_events(EVENT_WRITE)
    assert channel.state is ChannelState.OPEN and loop.interest[channel] == EVENT_READ
    assert not channel.use_sendfile  # (sendfile would bypass the encryption)


def test_a_tls_record_without_application_data_reads_nothing():
    tls = FakeTLSSocket()
    channel, _, _, protocol = open_channel(tls)

    def ticket(buf: Any, nbytes: int = 0, flags: int = 0) -> int:
        raise ssl.SSLWantReadError()

    tls.recv_into = ticket  # type: ignore[method-assign]  (a TLS 1.3 session ticket)
    channel.on_events(EVENT_READ)
    assert protocol.told == [] and not channel.closed


# -------------------------------------------------------------------- splice


class SpliceSink(Recorder):
    def splice_sink(self) -> tuple[int, int, int] | None:
        return 7, 0, 1000  # (a file descriptor, an offset, the body still to come)


def test_without_a_splice_pipe_the_body_comes_by_recv_and_splice_is_not_tried_again():
    loop = FakeLoop()
    sock = FakeSocket()
    channel = Channel(loop, sock, "192.0.2.1:5000", 1, Limits(), lambda ch: None)  # type: ignore
    protocol = SpliceSink(channel)
    channel.start(protocol)
    sock.incoming = [b"body bytes"]
    channel.on_events(EVENT_READ)
    assert protocol.told == [("data", b"body bytes")] and channel.use_splice is False
