"""One client connection: its socket, its send queue, its timeouts and its close.

A channel moves bytes and never parses them. It reads into the loop's scratch
buffer and hands the bytes to its *protocol*, which answers by queueing reply bytes
or file regions with :meth:`Channel.write` and :meth:`Channel.write_file`. What each
side may ask of the other is declared in ``transport.py`` (:class:`ConnectionProtocol`,
:class:`Transport`, asyncio's shapes), and checked by mypy. The protocols are the
first-byte sniffer and the refusal over the cap (``sniff.py``), then the native and
HTTP sessions (``native.py``, ``http.py``).

After every readiness event the channel recomputes its deadline from the protocol's
``timeout_phase()``: no protocol can forget to re-arm its timeouts.

Lessons of the Socket HOWTO this file obeys:

* ``send`` may take fewer bytes than offered: the queue keeps the rest and the
  channel asks for EVENT_WRITE only while something is queued.
* ``recv`` returning ``b""`` means the peer *finished sending*, not that it is gone:
  the replies still queued are sent before closing.
* ``socket.sendfile`` refuses non-blocking sockets and ``sendall`` cannot say how much
  went out before it raised: we call ``os.sendfile`` with an explicit offset and
  ``sendmsg`` ourselves, and account every byte.
* Closing a socket with unread input makes the kernel send RST, which can destroy the
  reply the peer has not read yet. A channel that closes on an error therefore sends
  its reply, shuts down its write side, and reads (discarding) until the peer closes
  or ``close_linger`` seconds pass.
* One connection's failure (reset, broken pipe) closes that connection only.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import time
from typing import Callable

from .buffers import FileRegion, SendQueue
from .limits import Limits
from .loop import EVENT_READ, EVENT_WRITE, ChannelLoop, Scheduled
from .observe import NOBODY, Observer
from .transport import BaseProtocol, ChannelState, ConnectionProtocol, Phase
from .zerocopy import UNSUPPORTED

log = logging.getLogger("muxserver")

MAX_IOVECS = 64  # chunks gathered into one sendmsg call (IOV_MAX is 1024 on Linux)
MAX_SENDS_PER_TURN = 64  # with --send-size 1, a big reply must not hold the loop
# sendfile cannot be used (file system or socket type without support): pread + send.
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK}


class Channel:
    """A connected socket, registered with the loop, feeding one protocol object."""

    __deletable__ = ["protocol"]  # (for mypyc: finish_close lets go of it)

    def __init__(self, loop: ChannelLoop, sock: socket.socket, peer: str, conn_id: int,
                 limits: Limits, on_closed: Callable[["Channel"], None],
                 peer_host: str = "") -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer  # "address:port", as logs and the console show it
        self.peer_host = peer_host or peer  # the address alone: what auth back-off counts
        self.id = conn_id
        self.limits = limits
        self.protocol: ConnectionProtocol = BaseProtocol(self)
        self.out = SendQueue()
        self.events = 0  # interest registered with the selector (see EventLoop.set_interest)
        self.state = ChannelState.OPEN
        self.closed = False
        self.close_reason = ""
        self.reading_paused = False  # backpressure: the protocol asked us to stop reading
        self.read_closed = False  # the peer sent FIN
        self.writing_paused = False  # the protocol was told to pause_writing()
        self.tls_sock = sock if isinstance(sock, ssl.SSLSocket) else None
        self.tls = self.tls_sock is not None
        self.use_sendfile = not self.tls  # sendfile would bypass the encryption
        self.use_splice = not self.tls  # (so would splice, for uploads)
        self.counted = False  # counts toward the server's connection cap
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened = self.last_io = loop.now
        self._timer: Scheduled | None = None
        self._closing_since = 0.0
        self._on_closed = on_closed
        self.observe: Observer = NOBODY  # who watches (the trace, --step): observe.py

    @property
    def label(self) -> str:
        return f"#{self.id}"

    # -- lifecycle

    def set_protocol(self, protocol: ConnectionProtocol) -> None:
        self.protocol = protocol

    def start(self, protocol: ConnectionProtocol) -> None:
        self.protocol = protocol
        if self.tls:
            self.state = ChannelState.HANDSHAKE
            self._closing_since = self.opened  # the handshake timeout counts from here
            self.continue_handshake()
        else:
            self._update_interest()
        self.rearm_timer()

    def on_events(self, mask: int) -> None:
        if self.state is ChannelState.HANDSHAKE:
            self.continue_handshake()
            return
        if mask & EVENT_READ:
            self.on_readable()
        if mask & EVENT_WRITE and not self.closed:
            self.on_writable()
        if not self.closed:
            # What the protocol waits for may have changed (a header began, a body
            # started, replies were queued): move the deadline if it came closer.
            self.rearm_timer()

    def continue_handshake(self) -> None:
        """One step of the non-blocking TLS handshake; OpenSSL says what it waits for."""
        assert self.tls_sock is not None
        try:
            self.tls_sock.do_handshake()
        except ssl.SSLWantReadError:
            self.loop.set_interest(self.sock, self, EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self.loop.set_interest(self.sock, self, EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as exc:  # plaintext on the TLS port lands here
            log.warning("%s: TLS handshake failed: %s", self.peer, _describe(exc),
                        extra={"event": "refused", "conn": self.id})
            self.abort("TLS handshake failed")
            return
        self.state = ChannelState.OPEN
        self.last_io = self.loop.now
        self.observe.handshake(self.id)
        self._update_interest()
        self.rearm_timer()
        self._read_pending_tls()

    # -- reading

    def on_readable(self) -> None:
        """Read what the socket has: a few recv calls while each one fills the buffer
        (a full buffer means more is waiting), at most ``reads_per_event`` of them so
        one busy connection cannot starve the others."""
        if self.closed:  # (a read scheduled for decrypted TLS bytes, after a close)
            return
        scratch = self.loop.scratch
        buf = scratch[:self.limits.recv_size] if self.limits.recv_size < len(scratch) else scratch
        for _ in range(self.limits.reads_per_event):
            sink = (self.protocol.splice_sink()
                    if self.use_splice and self.state is ChannelState.OPEN else None)
            if sink is not None:
                n, full = self._splice_once(*sink)
                if n is None:
                    continue  # splice is not possible here after all: recv from now on
            else:
                n = self._recv_once(buf)
                full = n == len(buf)
            if not full or self.closed or self.reading_paused or (
                    self.state is not ChannelState.OPEN):
                break
        if self.tls and not self.closed:
            self._read_pending_tls()

    def _splice_once(self, fd: int, offset: int, count: int) -> tuple[int | None, bool]:
        """Move body bytes from the socket to a file without passing them through
        Python (see zerocopy.py); only ``count`` bytes, the rest of the body.

        Returns (bytes moved, whether a full pipe's worth came), or (None, False) when
        the kernel cannot splice this socket or file (the caller falls back to recv).
        """
        pipe = self.loop.splice_pipe()
        if pipe is None:
            self.use_splice = False
            return None, False
        want = min(count, pipe.capacity)
        try:
            n = pipe.take_from_socket(self.fd, want)
        except (BlockingIOError, InterruptedError):
            return 0, False
        except OSError as exc:
            if exc.errno in UNSUPPORTED:
                self.use_splice = False
                return None, False
            self.observe.io_error(self.id, "splice", _describe(exc))
            self.abort(_describe(exc))
            return 0, False
        self.last_io = self.loop.now
        if n == 0:  # end of stream, exactly as recv returning b""
            self.observe.eof(self.id)
            self.read_closed = True
            self._update_interest()
            self.protocol.eof_received()
            return 0, False
        self.bytes_in += n
        try:
            pipe.give_to_file(fd, offset, n)
        except OSError as exc:  # disk full, file too large: the protocol decides
            self.protocol.splice_failed(n, exc)
            return n, False
        self.observe.splice(self.id, n)
        self.protocol.spliced(n)
        return n, n == want

    def _recv_once(self, buf: memoryview) -> int:
        """One recv_into; hand the bytes on. Returns the count (0 when nothing came)."""
        try:
            n = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError):
            # A spurious wake-up, or (TLS) a record that carried no application data
            # yet, such as a TLS 1.3 session ticket: nothing to read after all.
            return 0
        except OSError as exc:
            self.observe.io_error(self.id, "recv", _describe(exc))
            self.abort(_describe(exc))
            return 0
        self.last_io = self.loop.now
        data = buf[:n]
        if n:
            self.observe.recv(self.id, data)
        if self.state is ChannelState.LINGERING:
            if n == 0:
                self.abort("closed")
            return n  # discard: the connection is ending, we only wait for the peer's FIN
        if n == 0:
            self.observe.eof(self.id)
            self.read_closed = True
            self._update_interest()
            self.protocol.eof_received()
            return 0
        self.bytes_in += n
        self.protocol.data_received(data)
        return n

    def _read_pending_tls(self) -> None:
        """Come back for bytes OpenSSL decrypted already: select() cannot see them."""
        if (not self.closed and self.state is ChannelState.OPEN and not self.reading_paused
                and self.tls_sock is not None and self.tls_sock.pending()):
            self.loop.call_soon(self.on_readable, owner=self)

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self._update_interest()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self._update_interest()
            if self.tls:
                self._read_pending_tls()

    # -- writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes; they are sent before the loop next sleeps."""
        if self.state in (ChannelState.OPEN, ChannelState.DRAINING):
            self.out.append_bytes(data)
            self.loop.flush_before_sleep(self)
            if self.out.memory_bytes > self.limits.max_output_buffer:
                # Backpressure keeps a well-behaved peer far below this; only a peer that
                # never reads while replies pile up gets here. Memory stays bounded.
                log.warning("%s: output buffer over %d bytes, closing", self.peer,
                            self.limits.max_output_buffer,
                            extra={"event": "overflow", "conn": self.id})
                self.abort("output buffer over its cap")
            elif not self.writing_paused and self.output_full:
                self._pause_writing()

    def write_file(self, region: FileRegion) -> None:
        """Queue a file region, sent by sendfile as the socket drains."""
        if self.state in (ChannelState.OPEN, ChannelState.DRAINING):
            self.out.append_file(region)
            self.loop.flush_before_sleep(self)
            if not self.writing_paused and self.output_full:
                self._pause_writing()
        else:
            region.close()

    def get_write_buffer_size(self) -> int:
        return self.out.total

    def sending_file(self) -> bool:
        return bool(self.out.file_bytes)

    @property
    def output_full(self) -> bool:
        """Too much queued: bytes over the high-water mark, or as many open files as a
        connection may hold (each queued file region keeps its descriptor open, so
        counting bytes alone would let a peer that pipelines and never reads pin every
        descriptor of the process with small files)."""
        out = self.out
        return (out.total > self.limits.output_high_water
                or out.files >= self.limits.files_per_connection)

    def _pause_writing(self) -> None:
        self.writing_paused = True
        self.observe.pause(self.id, self.out.total, self.limits.output_high_water)
        self.protocol.pause_writing()

    def _maybe_resume_writing(self) -> None:
        """Below the low-water mark, with a file descriptor free again: tell the
        protocol it may produce again (asyncio's resume_writing)."""
        if (self.writing_paused and not self.closed
                and self.out.total <= self.limits.output_low_water
                and self.out.files < self.limits.files_per_connection):
            self.writing_paused = False
            self.observe.resume(self.id)
            self.protocol.resume_writing()

    def on_writable(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Send what the socket takes now; keep the rest and wait for writability."""
        try:
            self._send_queued()
        except OSError as exc:
            self.observe.io_error(self.id, "send", _describe(exc))
            self.abort(_describe(exc))
            return
        self._update_interest()
        if not self.out:
            if self.state is ChannelState.DRAINING:
                self._start_lingering()
                return
        self._maybe_resume_writing()

    def _send_queued(self) -> None:
        out = self.out
        for _ in range(MAX_SENDS_PER_TURN):
            if not out:
                return
            region = out.head_region()
            if region is not None:
                self._send_region(region)
                return  # one sendfile per turn: other connections get their share
            offered, sent = self._send_chunks(out.leading_chunks(MAX_IOVECS))
            out.consume_memory(sent)
            if sent < offered:
                return  # a short write: the socket buffer is full, wait for EVENT_WRITE

    def _send_chunks(self, chunks: list[memoryview]) -> tuple[int, int]:
        if self.tls:
            chunks = chunks[:1]  # an SSL socket has no sendmsg: one record write at a time
        offered = sum(len(c) for c in chunks)
        cap = self.limits.send_size
        if cap is not None:  # --send-size: the call takes at most cap bytes of the offer,
            chunks = _cap_chunks(chunks, cap)  # a short write as a full socket would give
        try:
            sent = self.sock.send(chunks[0]) if self.tls else self.sock.sendmsg(chunks)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                ssl.SSLWantReadError):
            sent = 0
        self._note_send(sent)
        self.observe.send(self.id, offered, sent, self.out.total - sent, chunks)
        return offered, sent

    def _send_region(self, region: FileRegion) -> None:
        offered = count = min(region.remaining, self.limits.sendfile_chunk)
        if self.limits.send_size is not None:  # (a short write, as in _send_chunks)
            count = min(count, self.limits.send_size)
        try:
            if self.use_sendfile:
                sent = os.sendfile(self.fd, region.fd, region.offset, count)
            else:
                sent = self._pread_send(region, count)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            if exc.errno in _NO_SENDFILE and self.use_sendfile:
                self.use_sendfile = False  # this file system cannot: copy through memory
                return self._send_region(region)
            raise
        else:
            if sent == 0:
                raise OSError(errno.EIO, "the file shrank while it was being sent")
        self._note_send(sent)
        self.observe.sendfile(self.id, offered, sent, self.out.total - sent)
        if sent:
            self.out.advance_region(region, sent)

    def _pread_send(self, region: FileRegion, count: int) -> int:
        data = os.pread(region.fd, min(count, 256 * 1024), region.offset)
        return self.sock.send(data) if data else 0

    def _note_send(self, taken: int) -> None:
        if taken:
            self.bytes_out += taken
            self.last_io = self.loop.now

    # -- interest

    def _update_interest(self) -> None:
        if self.closed:
            return
        events = 0
        if self.state is ChannelState.LINGERING or (
                self.state is ChannelState.OPEN and not self.reading_paused
                and not self.read_closed):
            events |= EVENT_READ
        if self.out and self.state is not ChannelState.LINGERING:
            events |= EVENT_WRITE
        self.loop.set_interest(self.sock, self, events)

    def on_interest_changed(self, old: int, new: int) -> None:
        if not self.closed:
            self.observe.interest(self.id, old, new)

    # -- timeouts

    def rearm_timer(self) -> None:
        """(Re)compute the deadline; move the timer earlier if the rules tightened it.

        Activity only stamps ``last_io`` (no heap work per byte); a timer that fires
        early simply re-arms itself at the newer deadline.
        """
        deadline = self._deadline()
        if self._timer is None or deadline < self._timer.when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self.check_deadline, owner=self)

    def _deadline(self) -> float:
        if self.state is ChannelState.HANDSHAKE:
            # The handshake is the first part of the first request: it gets no more
            # time than a request header would (a dribbling TLS client is a slowloris).
            limits = self.limits
            return self.opened + min(limits.handshake_timeout, limits.header_timeout)
        if self.state is not ChannelState.OPEN:
            return self._closing_since + self.limits.close_linger
        phase, since = self.protocol.timeout_phase()
        limits = self.limits
        if phase is Phase.HEADER:
            return since + limits.header_timeout
        if phase is Phase.TRANSFER:  # (``since``: when the server last made the peer wait)
            return max(self.last_io, since) + limits.stall_timeout
        if phase is Phase.WORKING:  # looked at again later: the server is the slow one
            return time.monotonic() + limits.stall_timeout
        return self.last_io + limits.idle_timeout

    def check_deadline(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        deadline = self._deadline()
        if deadline > now:
            self._timer = self.loop.call_at(deadline, self.check_deadline, owner=self)
        elif self.state is ChannelState.HANDSHAKE:
            log.warning("%s: TLS handshake timed out", self.peer,
                        extra={"event": "timeout", "conn": self.id})
            self.observe.timeout(self.id, "TLS handshake")
            self.abort("TLS handshake timed out")
        elif self.state is not ChannelState.OPEN:
            self.abort("closed after the linger time")
        else:
            self.protocol.on_timeout(self.protocol.timeout_phase()[0])

    # -- closing

    def close_when_done(self, reason: str) -> None:
        """Stop reading requests; send what is queued; then half-close and linger."""
        if self.state is not ChannelState.OPEN:
            return
        self.close_reason = reason
        self.state = ChannelState.DRAINING
        self._closing_since = time.monotonic()
        self.rearm_timer()
        if self.out:
            self._update_interest()
            self.loop.flush_before_sleep(self)
        else:
            self._start_lingering()

    def _start_lingering(self) -> None:
        if self.read_closed:
            self.abort(self.close_reason)  # the peer already finished: nothing to wait for
            return
        try:
            if not self.tls:  # SSLSocket.shutdown() would drop the TLS layer, not half-close
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort(self.close_reason)
            return
        self.state = ChannelState.LINGERING
        self._closing_since = time.monotonic()
        self.observe.linger(self.id)
        self._update_interest()
        self.rearm_timer()

    def abort(self, reason: str) -> None:
        """Close at the end of this loop turn, whatever is queued."""
        if self.closed:
            return
        if not self.close_reason:
            self.close_reason = reason
        self.closed = True
        self.loop.close_after_batch(self)

    def fail(self, exc: Exception) -> None:
        """An unexpected error while serving this connection: log it, close only this one.

        No error frame is attempted: the failure may have struck in the middle of a
        frame, and a frame sent then would be read as body bytes.
        """
        log.error("%s: internal error, closing the connection", self.peer, exc_info=exc,
                  extra={"event": "error", "conn": self.id})
        self.abort("internal error")

    def finish_close(self) -> None:
        """Unregister, then close: the order the selectors docs require."""
        if self.state is ChannelState.CLOSED:
            return
        self.closed = True
        self.loop.set_interest(self.sock, self, 0)
        self.state = ChannelState.CLOSED
        self.observe.close(self.id, self.close_reason or "closed")
        if self._timer is not None:
            self._timer.cancel()
        self.sock.close()
        self.out.clear()
        try:
            self.protocol.connection_lost()
        finally:
            self._on_closed(self)
            # Let go of the protocol, as asyncio's transports do: the two hold each
            # other, a cycle that only the cyclic collector would free, with all the
            # connection holds. A closed channel gets no more events to hand on.
            del self.protocol


def _cap_chunks(chunks: list[memoryview], cap: int) -> list[memoryview]:
    """At most ``cap`` bytes of ``chunks`` (the --send-size torture knob)."""
    capped = []
    for chunk in chunks:
        if len(chunk) >= cap:
            capped.append(chunk[:cap])
            break
        capped.append(chunk)
        cap -= len(chunk)
    return capped


def _describe(exc: OSError) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    return exc.strerror or str(exc)
