"""The digest of a file while it is being written (or sent), in a helper thread.

The event loop stays single-threaded for every socket and every file-system decision.
What it hands to this helper is pure computation: "the bytes of this file up to offset
N are written; hash them". ``hashlib`` and ``blake3`` release the GIL while they hash
large buffers, so on a machine with a second core the hash of an upload runs *beside*
the loop's ``recv`` and ``write`` instead of after them (SHA-256 is the slowest step of
an upload: about 1.2 GB/s here; BLAKE3 about 5 GB/s, see digests.py).

The helper reads back what the loop wrote (``os.preadv`` from the page cache) instead of
being handed the loop's buffer: the receive buffer is reused by the next ``recv``, and a
copy on the loop's thread would cost as much as the read does on the helper's. It reads
through a descriptor of its own (``os.dup``), so an upload that is aborted and closed
while the helper is behind can never make it read a descriptor number reused meanwhile.

One helper thread serves every file, a job at most ``FAIR_SHARE`` bytes at a time (a
whole big file being sent must not hold up the uploads waiting for their last bytes'
digest); jobs are cancelled, never waited for, by the loop.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from typing import Any, Callable

from .digests import new_hasher

READ_SIZE = 1024 * 1024  # bytes read back and hashed per step
FAIR_SHARE = 64 * READ_SIZE  # then a job with more to hash goes to the back of the queue


class HashJob:
    """The running digest (``algorithm``: digests.py) of one file still being written;
    ``already``: bytes it holds now (a resumed upload, or a whole file being sent)."""

    def __init__(self, fd: int, algorithm: str, *, already: int = 0) -> None:
        self.fd = os.dup(fd)
        self.algorithm = algorithm
        self.hasher = new_hasher(algorithm)
        self.hashed = 0  # written only by the helper thread
        self.available = already  # bytes written so far (``already``: a resumed upload)
        self.total: int | None = None
        self.cancelled = False
        self.error: OSError | None = None
        self._on_done: Callable[[str | None], None] | None = None
        self._lock = threading.Lock()
        self._queued = False
        self._done = threading.Event()
        self.digest: str | None = None
        if already:
            self._enqueue_locked_free()

    # -- called by the owner (the loop, or a client)

    def written(self, upto: int) -> None:
        """The file now holds ``upto`` bytes; hash them when the helper gets to it."""
        with self._lock:
            self.available = upto
            self._enqueue()

    def finish(self, total: int, on_done: Callable[[str | None], None]) -> None:
        """No more bytes come. ``on_done(hexdigest or None on error)`` is called once,
        from the helper thread: hand it to the loop with ``call_soon_threadsafe``."""
        with self._lock:
            self.available = self.total = total
            self._on_done = on_done
            self._enqueue()

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until finished (for clients, which have no loop to call back into)."""
        self._done.wait(timeout)
        return self.digest

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            self._enqueue()

    # -- the helper's side

    def _enqueue(self) -> None:
        if not self._queued:
            self._queued = True
            _worker().put(self)

    def _enqueue_locked_free(self) -> None:
        with self._lock:
            self._enqueue()

    def _run(self, buf: bytearray) -> None:
        """Hash what is available, up to FAIR_SHARE bytes; finish, stop, or queue again.
        Runs on the helper thread; ``buf``: its read buffer, READ_SIZE bytes, reused for
        every read (a new 1 MiB object per read would be a fresh mapping whose pages the
        kernel faults in and zeroes each time: a tenth more CPU per gibibyte)."""
        budget = FAIR_SHARE
        while True:
            with self._lock:
                if self.cancelled:
                    self._queued = False
                    self._close()
                    return
                start, end = self.hashed, self.available
                if start >= end:
                    self._queued = False
                    finished = self.total is not None and start >= self.total
                    break
                if budget <= 0:  # (still queued: the flag stays set)
                    _worker().put(self)
                    return
            want = min(end - start, READ_SIZE)
            try:
                got = os.preadv(self.fd, [memoryview(buf)[:want]], start)
            except OSError as exc:
                self.error = exc
                got = 0
            if not got:  # an I/O error, or the file shrank under us
                with self._lock:
                    self._queued = False
                    self.cancelled = True
                self._complete(None)
                return
            self.hasher.update(memoryview(buf)[:got])
            self.hashed = start + got
            budget -= got
        if finished:
            self._complete(self.hasher.hexdigest())

    def _complete(self, digest: str | None) -> None:
        self.digest = digest
        self._close()
        self._done.set()
        if self._on_done is not None:
            self._on_done(digest)

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_queue: queue.SimpleQueue[HashJob] | None = None
_start_lock = threading.Lock()
_MAIN_THREAD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


def _worker() -> queue.SimpleQueue[Any]:
    """The one helper thread, started on first use."""
    global _queue
    if _queue is None:
        with _start_lock:
            if _queue is None:
                jobs: queue.SimpleQueue[HashJob] = queue.SimpleQueue()
                start_helper(_serve, jobs, "muxserver-hash")
                _queue = jobs
    return _queue


def start_helper(serve: Callable[[Any], None], jobs: Any, name: str) -> None:
    """Start a helper thread that runs ``serve(jobs)`` for the life of the process.

    It is born with the signals of Ctrl-C and stopping blocked, so the kernel delivers
    them to the main thread: one that reached a helper would only be noticed when the
    main thread's select() or recv() returned by itself (a Ctrl-C of the client took up
    to its whole timeout, 1 in 10)."""
    helper = threading.Thread(target=serve, args=(jobs,), name=name, daemon=True)
    unblock = signal.pthread_sigmask(signal.SIG_BLOCK, _MAIN_THREAD_SIGNALS)
    try:
        helper.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblock)


def _forget_worker() -> None:
    """A forked process has no helper thread (threads do not survive fork): start anew."""
    global _queue
    _queue = None


os.register_at_fork(after_in_child=_forget_worker)


def _serve(jobs: queue.SimpleQueue[HashJob]) -> None:
    buf = bytearray(READ_SIZE)
    while True:
        jobs.get()._run(buf)
