"""What every protocol session shares, native (``handlers.py``) or HTTP (``http.py``).

A session sits between a channel (bytes) and the root (files). Whatever its wire
format, it runs requests one after another and keeps three kinds of waiting in the
same place:

* a **job**: a reply produced in bounded steps (hashing a file never hashed, a listing
  page by page), one step per loop turn, so one client cannot hold up the others;
* **verifying**: an upload whose last bytes the hashing helper thread is still hashing;
  it is committed when the helper calls back into the loop;
* **backpressure**: queued output over the high-water mark.

While any of them lasts, the session decodes no further request (replies must stay in
order) and the channel stops reading.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterator

from .buffers import FileRegion
from .channel import Channel, Phase
from .storage import OpenFile, StorageError, Upload

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("muxserver")

#: What a client is told, and the log says, when a phase of its connection times out.
TIMEOUT_REASONS = {Phase.HEADER: "the request header did not arrive in time",
                   Phase.TRANSFER: "the transfer stalled",
                   Phase.IDLE: "the connection was idle too long"}


class Transfer:
    """A put or get in progress, as the console and the logs see it."""

    __slots__ = ("op", "name", "total", "received", "region", "started")

    def __init__(self, op: str, name: str, total: int, started: float) -> None:
        self.op, self.name, self.total, self.started = op, name, total, started
        self.received = 0  # body bytes that have arrived (put) or been hashed (hash)
        self.region: FileRegion | None = None  # the body of a get being sent

    @property
    def done(self) -> int:
        if self.region is not None:
            return self.total - self.region.remaining
        return self.received


class Session:
    """The machinery shared by the protocol sessions; subclasses speak the protocol."""

    def __init__(self, server: "Server", channel: Channel) -> None:
        self.server = server
        self.channel = channel
        self.upload: Upload | None = None  # the body arriving now is written here
        self.verifying: Upload | None = None  # waiting for the helper's hash to commit
        self.job: Iterator[None] | None = None  # a reply being produced in steps
        self.transfer: Transfer | None = None
        self.header_since: float | None = None

    # -- to provide

    def process(self) -> None:
        raise NotImplementedError

    def commit(self, upload: Upload, digest: str | None) -> None:
        raise NotImplementedError

    # -- waiting

    def must_wait(self) -> bool:
        """True (and reading paused) while a job, a verification or queued output lasts."""
        channel = self.channel
        if self.job is None and self.verifying is None and not channel.output_full:
            return False
        channel.wants_drain = channel.output_full
        channel.pause_reading()
        return True

    def output_drained(self) -> None:
        if self.job is not None:
            self.server.loop.call_soon(self.run_job_step)
        else:
            self.process()

    def start_job(self, job: Iterator[None]) -> None:
        """Run the first step now (so the job owns its files from here on), the rest later."""
        self.job = job
        self.run_job_step(resume=False)

    def run_job_step(self, resume: bool = True) -> None:
        """One bounded step of the current job; reschedules itself until the job ends."""
        job = self.job
        if job is None or self.channel.closed:
            return
        if self.channel.output_full:
            self.channel.wants_drain = True  # resumed by output_drained()
            return
        try:
            next(job)
        except StopIteration:
            self.job = None
            if resume:  # go on with the requests that waited behind this one
                self.process()
            return
        except BaseException:
            self.job = None  # a job that raised is over; the error goes up
            raise
        self.server.loop.call_soon(self.run_job_step)

    def hash_then(self, opened: OpenFile, name: str, then: Callable[[], None],
                  failed: Callable[[StorageError], None]) -> Iterator[None]:
        """A job: hash a file the cache does not know, step by step, then ``then()``."""
        self.transfer = Transfer("hash", name, opened.size, self.server.loop.now)
        try:
            for done in self.server.root.hash_in_steps(opened, self.server.limits.hash_step):
                self.transfer.received = done
                yield
        except GeneratorExit:
            opened.close()
            raise
        except StorageError as exc:
            opened.close()
            self.transfer = None
            failed(exc)
            return
        self.transfer = None
        then()

    # -- finishing uploads

    def finish_upload(self) -> None:
        """The body is complete: commit now, or once the helper has hashed the tail."""
        upload, self.upload = self.upload, None
        if upload is None:
            return
        loop = self.server.loop
        if upload.finish_hash(lambda digest: loop.call_soon_threadsafe(
                lambda: self.hash_ready(upload, digest))):
            self.verifying = upload  # requests behind this one wait, replies stay in order
            return
        self.commit(upload, None)

    def hash_ready(self, upload: Upload, digest: str | None) -> None:
        """The helper finished hashing ``upload`` (called in the loop)."""
        if self.verifying is not upload or self.channel.closed:
            return  # the connection went away meanwhile: connection_lost aborted it
        self.verifying = None
        self.commit(upload, digest)
        self.process()

    def abort_upload(self) -> None:
        for upload in (self.upload, self.verifying):
            if upload is not None:
                upload.abort()
                self.server.stats.transfers_failed += 1
        self.upload = self.verifying = None

    # -- the end

    def note_timeout(self, phase: Phase) -> str:
        """Log (and trace) that ``phase`` timed out; return the reason to give the client.
        The subclass's ``on_timeout`` then ends the request in its own protocol."""
        what = TIMEOUT_REASONS[phase]
        log.warning("%s timed out: %s", self.channel.peer, what,
                    extra={"event": "timeout", "conn": self.channel.id})
        if self.channel.trace is not None:
            self.channel.trace("timeout", self.channel.id, why=what)
        return what

    @property
    def busy(self) -> bool:
        """A transfer is under way: a body in either direction, a job, a verification."""
        return (self.upload is not None or self.job is not None or self.verifying is not None
                or bool(self.channel.out.file_bytes))

    def connection_lost(self) -> None:
        self.abort_upload()
        if self.job is not None:
            self.job.close()  # closes the file or directory it holds
            self.job = None
        if self.transfer is not None and self.transfer.op == "get":
            self.server.stats.transfers_failed += 1
        self.transfer = None

    def fail(self, exc: Exception) -> None:
        """An unexpected error in a step of this session (see EventLoop.fault)."""
        self.channel.fail(exc)
