"""The event loop: one thread, one selector, every socket.

One turn of the loop (``run_once``), in order:

1. **flush**: every channel that queued output during the last turn tries to send it
   now (Redis's "before sleep" step); only what the socket refuses stays queued, and
   only those channels ask for EVENT_WRITE;
2. **select** with a timeout that ends at the next timer, or 0 when work is ready,
   or forever when there is nothing to wait for (an idle server does not wake up);
3. **dispatch** each ready key to its handler's ``on_events(mask)``; a handler closed
   earlier in the same batch ignores its event (its fd number may already be reused);
4. **timers** that are due, then the **ready** callbacks (work cut into steps, such as
   hashing a large file, so one client never holds the loop for long);
5. **closes** requested during the turn: unregister first, then close the socket.

Every unit of work in a turn (one handler's events, one flush, one timer, one ready
callback, one close) is a *step*; the loop records the longest step it has run
(``longest_step``), because one slow step delays every client: the measure of
"nobody holds the loop" is that no step is long.

Timers and ready callbacks carry their *owner* (the connection they work for): if one
raises, its owner is failed and closed, nobody else. A cancelled timer lets go of its
callback at once (so a closed connection is freed now, not when its timer would have
fired), and the heap is rebuilt when most of it is cancelled (asyncio's rule).

All changes of interest go through :meth:`EventLoop.set_interest`, which compares with
the current mask, so the selector is only told about real changes, and EVENT_WRITE is
only ever set while output is pending: with it always on, a level-triggered selector
reports the writable socket on every turn and the loop spins at 100 % CPU.

This module knows nothing of the protocol, of files, or of the console.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import signal
import socket
import time
from typing import Any, Callable, Protocol

from .observe import NOBODY, Observer
from .zerocopy import SplicePipe

log = logging.getLogger("muxserver")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Owner(Protocol):
    """What a timer or a ready callback works for: failed (and closed) if it raises."""

    def fail(self, exc: Exception) -> None: ...


class Handler(Owner, Protocol):
    """Anything registered with the loop: it owns a socket and reacts to readiness."""

    events: int  # the mask currently registered (0: not registered)

    @property
    def closed(self) -> bool: ...

    @property
    def label(self) -> str:
        """What the trace and --step call it: "#3" for a connection, "listener", ..."""

    def on_events(self, mask: int) -> None: ...

    def on_interest_changed(self, old: int, new: int) -> None:
        """The selector now watches for ``new`` instead of ``old`` (for the trace)."""


class Connection(Handler, Protocol):
    """A handler with output to flush before the loop sleeps, closed after its batch
    (a channel: see ``flush_before_sleep`` and ``close_after_batch``)."""

    def flush(self) -> None:
        """Send what the socket takes now (once per turn, before select())."""

    def finish_close(self) -> None:
        """Unregister, then close: called once, after the turn's events."""


class Scheduled(Protocol):
    """A timer as its owner sees it: when it fires, and a way to call it off."""

    @property
    def when(self) -> float: ...

    def cancel(self) -> None: ...


class ChannelLoop(Protocol):
    """What a channel asks of its event loop (EventLoop below; the channel tests' fake
    loop provides the same)."""

    @property
    def now(self) -> float:
        """time.monotonic() when this loop turn began."""

    @property
    def scratch(self) -> memoryview:
        """The loop's one receive buffer, shared by every channel (bytes are handed on
        before the next recv)."""

    def set_interest(self, sock: socket.socket | int, handler: Handler, events: int
                     ) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None],
                owner: Owner | None = None) -> Scheduled: ...

    def call_soon(self, callback: Callable[[], None], owner: Owner | None = None) -> None: ...

    def flush_before_sleep(self, channel: Connection) -> None: ...

    def close_after_batch(self, channel: Connection) -> None: ...

    def splice_pipe(self) -> SplicePipe | None: ...


#: A cancelled timer stays in the heap (lazy deletion) until the heap is rebuilt: when
#: more than this many are cancelled and they are over half the heap (asyncio: 100, 1/2).
MIN_CANCELLED_TO_COMPACT = 64
#: A step longer than this is counted as slow (docs/PERFORMANCE.md: the target).
SLOW_STEP = 0.020


class Timer:
    """A callback scheduled at a monotonic time; cancel() is O(1) (lazy deletion)."""

    __slots__ = ("when", "callback", "owner", "_loop")

    def __init__(self, when: float, callback: Callable[[], None], owner: Any,
                 loop: "EventLoop") -> None:
        self.when = when
        self.callback: Callable[[], None] | None = callback
        self.owner = owner  # failed and closed if the callback raises
        self._loop = loop

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = self.owner = None  # let go of what it would have run
            self._loop._timer_cancelled()


class EventLoop:
    """A selectors loop with timers, ready callbacks, before-sleep flushes and deferred closes."""

    def __init__(self, scratch_size: int = 256 * 1024) -> None:
        self.selector = selectors.DefaultSelector()
        #: The one receive buffer every channel reads into (recv_into, never recv).
        self.scratch = memoryview(bytearray(scratch_size))
        self.wakeups = 0  # select() returns: about zero per second on an idle server
        self.timeout_wakeups = 0  # of those, the ones that only ended a timeout (timers)
        self.turn_events = 0  # the events of the turn under way: the clients it serves
        self.now = time.monotonic()
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled = 0  # cancelled timers still in the heap
        self._seq = itertools.count()
        self._ready: collections.deque[tuple[Callable[[], None], Any]] = collections.deque()
        self.longest_step = 0.0  # seconds: the longest single step run so far
        self.longest_step_what = ""  # what that step was
        self.slow_steps = 0  # steps over SLOW_STEP
        self._to_flush: dict[Connection, None] = {}  # insertion-ordered set of channels
        self._before_sleep: list[Callable[[], None]] = []  # every turn, after the flushes
        self._to_close: list[Connection] = []
        self._pipe: SplicePipe | None = None
        self._running = False
        self._stop_asked = False  # stop() was called: this turn must not sleep
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._waker = _Waker(self._waker_r)
        self.set_interest(self._waker_r, self._waker, EVENT_READ)
        #: Who watches (the trace, --step: observe.py): told what select() returned,
        #: before anything is handled.
        self.observe: Observer = NOBODY
        self._signal_callbacks: dict[int, Callable[[], None]] = {}
        self._previous_handlers: dict[int, Any] = {}

    # -- registration

    def set_interest(self, sock: socket.socket | int, handler: Handler, events: int) -> None:
        """Make the selector watch ``sock`` for exactly ``events`` (0: not at all)."""
        current = handler.events
        if events == current:
            return
        if current == 0:
            self.selector.register(sock, events, handler)
        elif events == 0:
            self.selector.unregister(sock)
        else:
            self.selector.modify(sock, events, handler)
        handler.events = events
        handler.on_interest_changed(current, events)

    # -- scheduling

    def call_at(self, when: float, callback: Callable[[], None],
                owner: Owner | None = None) -> Timer:
        """Run ``callback`` at monotonic time ``when``. ``owner``: what to fail if it
        raises (without one, the error is only logged)."""
        timer = Timer(when, callback, owner, self)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None],
                   owner: Owner | None = None) -> Timer:
        return self.call_at(time.monotonic() + delay, callback, owner)

    def call_soon(self, callback: Callable[[], None], owner: Owner | None = None) -> None:
        """Run ``callback`` after this turn's events (next turn if called from a ready one)."""
        self._ready.append((callback, owner))

    @property
    def timer_count(self) -> int:
        """Timers in the heap, cancelled ones not yet dropped included."""
        return len(self._timers)

    def _timer_cancelled(self) -> None:
        self._cancelled += 1
        timers = self._timers
        if self._cancelled > MIN_CANCELLED_TO_COMPACT and self._cancelled * 2 > len(timers):
            self._timers = [entry for entry in timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def splice_pipe(self) -> SplicePipe | None:
        """The loop's one pipe for splice(2), or None where there is no splice. One is
        enough: the loop is single-threaded and each use empties it."""
        if self._pipe is None and SplicePipe.available():
            self._pipe = SplicePipe()
        return self._pipe

    def call_soon_threadsafe(self, callback: Callable[[], None],
                             owner: Owner | None = None) -> None:
        """call_soon() from another thread (the hashing helper): wakes select() up."""
        self._ready.append((callback, owner))  # deque.append is atomic
        self.wake()

    def flush_before_sleep(self, channel: Connection) -> None:
        """Ask for ``channel.flush()`` before the loop next sleeps in select()."""
        self._to_flush[channel] = None

    def add_before_sleep(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in every turn, after the channels' flushes, before select()
        (Redis's beforeSleep): work worth doing once per turn, not once per event."""
        self._before_sleep.append(callback)

    def close_after_batch(self, channel: Connection) -> None:
        """Close ``channel`` (``channel.finish_close()``) once this turn's events are done."""
        self._to_close.append(channel)

    # -- signals and stopping

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the loop when ``signum`` arrives (main thread only).

        The C-level handler writes the signal number to the waker socket
        (signal.set_wakeup_fd), which wakes select(); the callback then runs as an
        ordinary loop event, never in the middle of another handler.
        """
        if not self._signal_callbacks:
            signal.set_wakeup_fd(self._waker_w.fileno(), warn_on_full_buffer=False)
        self._signal_callbacks[signum] = callback
        self._previous_handlers.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, lambda _signum, _frame: None)
        self._waker.on_signal = self._dispatch_signal

    @property
    def handles_signals(self) -> bool:
        return bool(self._signal_callbacks)

    def _dispatch_signal(self, signum: int) -> None:
        callback = self._signal_callbacks.get(signum)
        if callback is not None:
            callback()

    def stop(self) -> None:
        """Make run() return after the current turn (which then does not sleep: a stop
        asked for by a flush, before select(), must not wait for the next event)."""
        self._running = False
        self._stop_asked = True

    def stop_threadsafe(self) -> None:
        """stop() from another thread (tests run servers in threads)."""
        self.call_soon_threadsafe(self.stop)

    def wake(self) -> None:
        try:
            self._waker_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the waker is already full of wake-ups, or closed: select will return anyway

    # -- running

    def run(self) -> None:
        self._running, self._stop_asked = True, False
        while self._running:
            self.run_once()

    def run_once(self, max_wait: float | None = None) -> None:
        """One turn. ``max_wait`` caps the sleep (tests drive the loop turn by turn)."""
        self._flush_pending()
        for callback in self._before_sleep:
            self._call(callback, None)
        timeout = self._select_timeout()
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        events = self.selector.select(timeout)
        self.wakeups += 1
        if not events:
            self.timeout_wakeups += 1
        self.now = time.monotonic()
        self.turn_events = len(events)
        self.observe.wakeup(events, self.wakeups)
        for key, mask in events:
            handler = key.data
            if not handler.closed:  # closed earlier in this batch: ignore its stale event
                started = time.perf_counter()
                try:
                    handler.on_events(mask)
                except Exception as exc:
                    self.fault(handler, exc)
                self._timed(started, "events", handler)
        self._run_due_timers()
        self._run_ready()
        self._close_pending()

    def _select_timeout(self) -> float | None:
        if self._ready or self._to_close or self._stop_asked:
            return 0
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
            self._cancelled -= 1
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _flush_pending(self) -> None:
        while self._to_flush:
            channels = list(self._to_flush)
            self._to_flush.clear()
            for channel in channels:
                if not channel.closed:
                    started = time.perf_counter()
                    try:
                        channel.flush()
                    except Exception as exc:
                        self.fault(channel, exc)
                    self._timed(started, "flush", channel)
            self._close_pending()

    def _run_due_timers(self) -> None:
        now = self.now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _when, _seq, timer = heapq.heappop(timers)
            callback, owner = timer.callback, timer.owner
            if callback is None:
                self._cancelled -= 1
                continue
            timer.callback = timer.owner = None  # fired: it holds nothing any more
            self._call(callback, owner)

    def _run_ready(self) -> None:
        for _ in range(len(self._ready)):
            callback, owner = self._ready.popleft()
            self._call(callback, owner)

    def _call(self, callback: Callable[[], None], owner: Any) -> None:
        started = time.perf_counter()
        try:
            callback()
        except Exception as exc:
            self.fault(owner, exc)
        self._timed(started, "call", callback)

    def _close_pending(self) -> None:
        while self._to_close:
            closing, self._to_close = self._to_close, []
            for channel in closing:
                started = time.perf_counter()
                try:
                    channel.finish_close()
                except Exception as exc:
                    log.exception("error while closing %r: %s", channel, exc)
                self._timed(started, "close", channel)

    def _timed(self, started: float, kind: str, step: object) -> None:
        """Account one step that began at ``started`` (perf_counter): ``step`` is the
        handler, channel or callback, named only when it is the longest so far (naming
        a callback costs more than timing it, and the name is needed once a run)."""
        took = time.perf_counter() - started
        if took > SLOW_STEP:
            self.slow_steps += 1
        if took > self.longest_step:
            self.longest_step = took
            name = callback_name(step) if kind == "call" else type(step).__name__
            self.longest_step_what = f"{kind}: {name}"

    def fault(self, owner: Owner | None, exc: Exception) -> None:
        """A bug or an unexpected error in one handler: contain it to that handler.

        The owner's ``fail(exc)`` closes what it owns (one connection); the loop and
        every other connection go on. Without an owner, the error is only logged.
        """
        if owner is None:
            log.error("unexpected error in the event loop", exc_info=exc)
            return
        try:
            owner.fail(exc)
        except Exception as second:  # containment must never take the loop down
            log.error("error while handling an earlier error", exc_info=second)

    def close(self) -> None:
        """Release the selector and the waker (after run() returned)."""
        if self._signal_callbacks:
            signal.set_wakeup_fd(-1)
            for signum, previous in self._previous_handlers.items():
                signal.signal(signum, previous)
            self._signal_callbacks.clear()
        self.selector.close()
        self._waker_r.close()
        self._waker_w.close()
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


class _Waker:
    """The read end of the loop's socketpair: wake-ups and signal numbers arrive here."""

    label = "waker"  # (a signal or another thread woke the loop)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.events = 0
        self.closed = False
        self.on_signal: Callable[[int], None] | None = None

    def on_interest_changed(self, old: int, new: int) -> None:
        pass

    def fail(self, exc: Exception) -> None:
        log.error("unexpected error while reading the loop's waker", exc_info=exc)

    def on_events(self, mask: int) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if self.on_signal is not None:
            for signum in data:
                if signum:
                    self.on_signal(signum)


def callback_name(callback: object) -> str:
    """A callback as the stop summary names it: ``Session.finish_upload``, not
    ``Session.finish_upload.<locals>.<lambda>.<locals>.<lambda>`` (a lambda is named
    after the method that made it)."""
    name = getattr(callback, "__qualname__", type(callback).__name__)
    return ".".join(part for part in name.split(".") if part not in ("<locals>", "<lambda>"))
