"""The request lifecycle both protocols share; ``native.py`` and ``http.py`` only
translate their wire formats.

A session sits between a channel (bytes) and the root (files). Its subclass decodes
requests and encodes replies; everything a request *means* to the server is decided
here, once, so the native protocol and HTTP keep the same promises by construction:

* **Admission.** Every request is authorized on its own (:meth:`Session.admit`),
  before anything else about it is looked at; a refused request's body is never read
  (the connection is closed instead), and refusals count as strikes: per connection
  here, per address in ``access.py``.
* **Waiting.** Requests run one after another, so replies stay in order. Four things
  make the next request wait, and the channel stop reading meanwhile: a *job* (a reply
  produced in bounded steps, one per loop turn: a listing page by page, a tree removed
  entry by entry), *verifying* (the hashing helper thread finishing an upload's
  digest), a *file hash* (the helper hashing a file never hashed that a get sends:
  before its reply, or while its body goes when the digest may follow the body), and
  *backpressure* (queued output over the high-water mark).
* **Timeouts.** The phase (idle, header, transfer) is derived from the session's state
  in one function, :meth:`Session.timeout_phase`, for every protocol; the channel asks
  it after every event, so no phase can be forgotten.
* **Transfers.** A put or get is a :class:`Transfer`: begun when its request arrives,
  ended exactly once, as done or failed. That is where statistics are counted and the
  log line is written, and what the console shows.
* **Stopping.** A graceful stop closes idle connections and lets transfers finish.

A subclass provides :meth:`next_event`, :meth:`handle`, :meth:`header_pending`,
:meth:`reading_body`, and the replies: :meth:`send_refusal`, :meth:`send_timeout`,
:meth:`send_stopping`, :meth:`upload_failed` and :meth:`upload_stored`.

A session reaches the server only through :class:`Services`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Generator, Iterator, Protocol

from .access import DELETE, READ, WRITE, Access, Grant, Refusal
from .buffers import FileRegion
from .channel import BaseProtocol, ChannelState, Phase, Transport
from .digests import SHA256, Digest
from .hashing import READ_SIZE, HashJob
from .lifecycle import Event, RequestState, Work
from .limits import Limits
from .loop import Owner
from .names import printable
from .protocol import NEED_DATA
from .listings import LeftOutLog
from .storage import (
    Entry,
    LeftOut,
    OpenFile,
    Root,
    StorageError,
    Upload,
    partial_key,
    split_name,
)
from .turnlog import TurnLog
from .units import format_bytes

log = logging.getLogger("muxserver")

#: What a client is told, and the log says, when a phase of its connection times out.
TIMEOUT_REASONS = {Phase.HEADER: "the request header did not arrive in time",
                   Phase.TRANSFER: "the transfer stalled",
                   Phase.IDLE: "the connection was idle too long"}


@dataclasses.dataclass
class Stats:
    started: float = dataclasses.field(default_factory=time.monotonic)
    connections_total: int = 0
    transfers_done: int = 0
    transfers_failed: int = 0  # puts and gets refused, broken off, or failed
    refused_connections: int = 0
    bytes_in_closed: int = 0  # bytes of connections that have closed
    bytes_out_closed: int = 0


class Scheduler(Protocol):
    """What a session uses of the event loop: the time of this turn, and work for later
    (the loop's own methods; a test's fake loop is checked against this)."""

    @property
    def now(self) -> float:
        """time.monotonic() when this loop turn began."""

    def call_soon(self, callback: Callable[[], None], owner: Owner | None = None) -> None: ...

    def call_soon_threadsafe(self, callback: Callable[[], None],
                             owner: Owner | None = None) -> None: ...


class Services:
    """What a session may reach of the server, and nothing else."""

    def __init__(self, loop: Scheduler, root: Root, limits: Limits, access: Access) -> None:
        self.loop = loop
        self.root = root
        self.limits = limits
        self.access = access
        self.stats = Stats()
        self.stopping = False  # a graceful stop is under way: start no new request
        self.turn_log = TurnLog(log)  # the line per transfer, written once per loop turn


class Transfer:
    """A put or get, from its request to its end; what the console shows of it."""

    __slots__ = ("op", "name", "total", "received", "region", "started", "ended", "digest",
                 "hashing")

    def __init__(self, op: str, name: str, total: int, started: float) -> None:
        self.op, self.name, self.total, self.started = op, name, total, started
        self.received = 0  # body bytes that have arrived (put)
        self.region: Any = None  # the FileRegion of a get's body being sent
        self.ended = False  # counted (done or failed): never counted twice
        self.digest: Digest | None = None  # a get's, once known (the log line says it)
        self.hashing: HashJob | None = None  # a get's file being hashed before its reply

    @property
    def done(self) -> int:
        if self.region is not None:
            return self.total - self.region.remaining
        if self.hashing is not None:
            return self.hashing.hashed  # (an int the helper thread writes)
        return self.received


class FileHash:
    """The helper thread hashing the whole file of a get (one the cache does not know),
    so that the loop never does: before the reply, which needs the digest, or while the
    body is sent, when the digest follows the body (the protocol's trailer).

    Holds a descriptor of the file of its own, to remember the digest on it (an xattr)
    once known. ``waiting``: the file a reply not queued yet will send, closed if the
    connection ends first (a body being sent owns its descriptor already)."""

    __slots__ = ("job", "fd", "st", "ready", "waiting", "body_sent")

    def __init__(self, opened: OpenFile, ready: Callable[[Digest | None, str], None],
                 waiting: OpenFile | None) -> None:
        """StorageError, and ``opened`` closed, when no descriptor is left for it."""
        self.st = opened.st
        self.ready = ready  # (digest, or None and why not): called once, in the loop
        self.waiting = waiting
        self.body_sent = False  # (while sending: its last byte has gone)
        try:
            self.job = HashJob(opened.fd, opened.algorithm, already=opened.size)
            try:
                self.fd = os.dup(opened.fd)
            except OSError:
                self.job.cancel()
                raise
        except OSError as exc:
            opened.close()
            raise StorageError("io_error", f"cannot hash the file: {exc.strerror}") from None

    def close(self) -> None:
        self.job.cancel()  # (nothing left to do when it has finished)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.waiting is not None:
            self.waiting.close()


#: Files up to this size are hashed in the loop when a get needs their digest (see
#: Session.hashed_at_once): one helper step's worth, the size the loop once hashed per
#: turn.
HASH_AT_ONCE = READ_SIZE

#: Work done a bounded step at a time: each ``next()`` is one step (see start_job).
Job = Generator[None, None, None]

#: The grant of a request not admitted (yet).
NO_RIGHTS = Grant(frozenset(), replace=False)


class Session(BaseProtocol):
    """The lifecycle of requests on one connection; subclasses speak a wire format."""

    #: how log lines and the console name the protocol ("HTTP " for HTTP)
    wire = ""

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(channel)
        self.services = services
        self.limits = services.limits
        self.work = RequestState()  # what the request under way does (lifecycle.py)
        self.upload: Upload | None = None  # RECEIVING ... VERIFYING: the file it goes to
        self.file_hash: FileHash | None = None  # HASHING: the helper hashing a get's file
        self.job: Job | None = None  # STEPPING: the reply being produced in steps
        self.active: Transfer | None = None  # the put or get of the request being served
        self.sending: list[Transfer] = []  # gets on the wire (a few: see files_per_connection)
        self.header_since: float | None = None  # when the incomplete header began
        self.strikes = 0  # refused admissions on this connection
        self.grant = NO_RIGHTS  # what the request being served may do (see admit)
        self.writing_paused = False  # the channel's output is over its high-water mark
        self.job_label = ""  # what the job under way does, for the console

    # -- to provide: the wire format

    def next_event(self) -> Any:
        """The next decoded event; NEED_DATA; or None when the stream just broke (the
        subclass has answered and is closing)."""
        raise NotImplementedError

    def handle(self, event: Any) -> None:
        raise NotImplementedError

    def header_pending(self) -> bool:
        """Bytes of a request header that is not complete yet are held."""
        raise NotImplementedError

    def reading_body(self) -> bool:
        """The body of a request is arriving (stored or, if refused, skipped)."""
        raise NotImplementedError

    def send_refusal(self, refusal: Refusal, close: bool) -> None:
        """Answer a request that was not admitted."""
        raise NotImplementedError

    def send_timeout(self, phase: Phase, what: str) -> None:
        """Answer (if the protocol can) and close: ``phase`` timed out."""
        raise NotImplementedError

    def send_stopping(self) -> None:
        """Tell the client the server is stopping, if the protocol has a way."""

    def upload_failed(self, upload: Upload, exc: StorageError) -> None:
        """The upload could not be stored; it is already aborted. Reply."""
        raise NotImplementedError

    def upload_stored(self, upload: Upload, digest: Digest) -> None:
        """The upload is committed under its name. Reply."""
        raise NotImplementedError

    # -- decoding and running requests

    def process(self) -> None:
        """Decode and run requests until more bytes are needed or something must wait."""
        channel = self.channel
        while channel.state is ChannelState.OPEN and not channel.closed:
            if self.must_wait():
                break
            event = self.next_event()
            if event is None:
                break
            if event is NEED_DATA:
                channel.resume_reading()
                break
            self.handle(event)
        if self.services.stopping and not self.busy:
            self.close_for_stop()  # the transfer that kept us open is done
        self.note_progress()

    def note_progress(self) -> None:
        """Track when the current header began (the slowloris timeout counts from its
        first byte, however slowly the rest arrives)."""
        if self.header_pending():
            if self.header_since is None:
                self.header_since = self.services.loop.now
        else:
            self.header_since = None

    # -- admission

    def admit(self, offered: str | None, *, has_body: bool) -> bool:
        """Authorize one request: True to go on. Called before anything else about the
        request is checked. A refusal is answered here; a request with a body, a third
        strike or an address in back-off also closes the connection unread."""
        verdict = self.services.access.check(self.channel.peer_host, offered)
        if isinstance(verdict, Grant):
            self.grant = verdict
            return True
        refusal = verdict
        self.grant = NO_RIGHTS
        self.strikes += 1
        close = (has_body or self.strikes >= self.limits.auth_failures
                 or refusal.code == "too_many_attempts")
        log.warning("%s %s%s (%d of %d)", self.channel.peer, self.wire, refusal.message,
                    self.strikes, self.limits.auth_failures,
                    extra={"event": "refused", "conn": self.channel.id})
        self.forget_transfer()
        self.send_refusal(refusal, close)
        if close:
            self.channel.close_when_done(refusal.message)
        return False

    def require(self, right: str, what: str) -> None:
        """Refuse (StorageError "not_permitted") a request whose grant lacks ``right``."""
        if not self.grant.allows(right):
            raise StorageError("not_permitted", f"{what}: not permitted: "
                                                f"{self.services.access.why_not(right)}")

    @property
    def blind(self) -> bool:
        """The request may write but not read: it must not learn which names exist."""
        return not self.grant.allows(READ)

    def require_sight(self, what: str) -> None:
        """Refuse what would tell a writer that may not read whether a name exists."""
        if self.blind:
            raise StorageError("not_permitted", f"{what}: not permitted: "
                                                f"{self.services.access.why_not_blind()}")

    # -- what requests read, checked against the grant

    def open_download(self, name: str, algorithm: str = SHA256) -> OpenFile:
        self.require(READ, f"reading {name!r}")
        return self.services.root.open_file(name, algorithm)

    def describe(self, name: str) -> dict[str, Any]:
        self.require(READ, f"stat of {name!r}")
        return self.services.root.stat(name)

    def entries(self, path: str, recursive: bool = False) -> Generator[Entry, None, None]:
        self.require(READ, f"listing {path or '/'!r}")
        return self.services.root.iter_entries(path, recursive)

    # -- what requests change, checked against the grant

    def make_directory(self, name: str, *, parents: bool) -> bool:
        """Make ``name``; True if it was made. A writer that may not read is told it
        was, whatever was there: its folders go beside what is not one (storage/root.py)."""
        self.require(WRITE, f"making the directory {name!r}")
        made = self.services.root.make_dir(name, parents=parents, beside_if_taken=self.blind)
        if made:
            log.info("%s %smade the directory %s", self.channel.peer, self.wire,
                     printable(name), extra={"event": "changed", "conn": self.channel.id})
        return made or self.blind

    def start_removal(self, name: str, *, recursive: bool, done: Callable[[int], None],
                      failed: Callable[[StorageError], None]) -> None:
        """Remove ``name`` as a job (a tree goes in steps); then ``done(count)``."""
        self.require(DELETE, f"removing {name!r}")
        self.require_sight(f"removing {name!r}")
        steps = self.services.root.remove_in_steps(name, recursive=recursive)
        self.start_job(self._removal(name, steps, done, failed), label="removing")

    def _removal(self, name: str, steps: Iterator[int], done: Callable[[int], None],
                 failed: Callable[[StorageError], None]) -> Job:
        removed = 0
        try:
            for removed in steps:
                yield
        except StorageError as exc:
            failed(exc)
            return
        log.info("%s %sremoved %s (%d %s)", self.channel.peer, self.wire, printable(name),
                 removed, "entry" if removed == 1 else "entries",
                 extra={"event": "changed", "conn": self.channel.id})
        done(removed)

    def move_entry(self, src: str, dst: str, *, overwrite: bool) -> bool:
        """Rename ``src`` to ``dst``; True if a file was replaced."""
        self.require(DELETE, f"moving {src!r}")
        self.require(WRITE, f"moving to {dst!r}")
        self.require_sight(f"moving {src!r}")
        try:
            replaced = self.services.root.move(src, dst, overwrite=overwrite,
                                               allow_overwrite=self.grant.replace)
        except StorageError as exc:
            raise self.explained(exc, dst) from None
        log.info("%s %smoved %s to %s", self.channel.peer, self.wire, printable(src),
                 printable(dst), extra={"event": "changed", "conn": self.channel.id})
        return replaced

    def explained(self, exc: StorageError, name: str) -> StorageError:
        """``exc``, with the reason a replacement was refused: the server, or the token."""
        if exc.code != "overwrite_refused":
            return exc
        return StorageError(exc.code, f"{name!r} exists and may not be replaced: "
                                      f"{self.services.access.why_not_replace()}")

    # -- waiting

    def must_wait(self) -> bool:
        """True (and reading paused) while a job, a verification, a file's hash or
        queued output (the channel said pause_writing) lasts."""
        if not self.work.must_wait and not self.writing_paused:
            return False
        self.channel.pause_reading()
        return True

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.job is not None:
            self.services.loop.call_soon(self.run_job_step, owner=self)
        else:
            self.process()

    def start_job(self, job: Job, label: str = "") -> None:
        """Run the first step now (so the job owns its files from here on), the rest later.
        ``label``: what the console says the connection is doing meanwhile."""
        self.work.move(Event.JOB_STARTED)
        self.job = job
        self.job_label = label
        self.run_job_step(resume=False)

    def run_job_step(self, resume: bool = True) -> None:
        """One bounded step of the current job; reschedules itself until the job ends."""
        job = self.job
        if job is None or self.channel.closed:
            return
        if self.writing_paused:
            return  # resume_writing() runs the next step
        try:
            next(job)
        except StopIteration:
            self.end_job()
            if resume:  # go on with the requests that waited behind this one
                self.process()
            return
        except BaseException:
            self.end_job()  # a job that raised is over; the error goes up
            raise
        self.services.loop.call_soon(self.run_job_step, owner=self)

    def listing_job(self, entries: Generator[Entry, None, None], page_size: int,
                    left_out: LeftOutLog, page: Callable[[list[dict[str, Any]], bool], None],
                    failed: Callable[[list[dict[str, Any]], StorageError], None]) -> Job:
        """A listing as a job, the same way for every wire: ``page(entries, more)``
        for each ``page_size`` entries (the last one with ``more`` False, perhaps
        empty); entries whose names the rules refuse go to ``left_out``; a step handles
        ``page_size`` entries met, shown or not. A listing that cannot be finished
        (StorageError) ends with ``failed(the entries gathered, error)``, never with a
        silent gap."""
        batch: list[dict[str, Any]] = []
        met = 0
        try:
            for entry in entries:
                if isinstance(entry, LeftOut):
                    left_out.add(entry)
                else:
                    if len(batch) == page_size:
                        page(batch, True)
                        batch = []
                    batch.append(entry)
                met += 1
                if met % page_size == 0:
                    yield
        except StorageError as exc:
            failed(batch, exc)
            return
        finally:
            entries.close()
        left_out.report()
        page(batch, False)

    def end_job(self) -> None:
        self.job = None
        self.work.move(Event.JOB_ENDED)

    # -- hashing a get's file (on the helper thread, never on the loop)

    @staticmethod
    def hashed_at_once(opened: OpenFile) -> bool:
        """A file this small is hashed in the loop, at once, when its digest is needed
        (about a millisecond of SHA-256 at most): a bigger one by the helper thread."""
        return opened.size <= HASH_AT_ONCE

    def hash_then(self, opened: OpenFile, then: Callable[[], None],
                  failed: Callable[[StorageError], None]) -> None:
        """The reply to a get needs the digest of a file the cache does not know: a
        small one is hashed now, a bigger one by the helper while requests behind this
        one wait; then ``then()`` (``opened.digest`` set), or ``failed(error)``
        (``opened`` closed). StorageError (and ``opened`` closed) when the helper
        cannot even start."""
        if self.hashed_at_once(opened):
            try:
                self.services.root.hash_now(opened)
            except StorageError as exc:
                opened.close()
                failed(exc)
                return
            then()
            return
        transfer = self.active

        def ready(digest: Digest | None, why_not: str) -> None:
            if transfer is not None:
                transfer.hashing = None
            if digest is None:
                opened.close()
                failed(StorageError("io_error", why_not))
                return
            opened.digest = digest
            then()

        self.file_hash = FileHash(opened, ready, waiting=opened)
        if transfer is not None:  # (the console shows the hash's progress meanwhile)
            transfer.hashing, transfer.total = self.file_hash.job, opened.size
        self._start_hash(opened.size)

    def hash_while_sending(self, opened: OpenFile, transfer: Transfer,
                           send: Callable[[Digest | StorageError], None]) -> None:
        """The file of ``transfer`` is not hashed yet and its digest may follow its
        body: the helper hashes it while the caller queues the body, and ``send(digest)``
        (or ``send(error)``: it could not be read) queues what follows the body, before
        any later request is served. The file is read twice either way, but the second
        read overlaps the sending. StorageError (and ``opened`` closed) when it cannot
        even start."""

        def ready(digest: Digest | None, why_not: str) -> None:
            transfer.digest = digest
            if digest is None:
                self.active = transfer  # (the error reply fails, counts and logs this get)
                send(StorageError("io_error", why_not))
                return
            send(digest)
            if file_hash.body_sent:
                self.download_sent(transfer)

        file_hash = self.file_hash = FileHash(opened, ready, waiting=None)
        self._start_hash(opened.size)

    def _start_hash(self, size: int) -> None:
        file_hash, loop = self.file_hash, self.services.loop
        assert file_hash is not None
        self.work.move(Event.HASH_STARTED)
        file_hash.job.finish(size, lambda hexdigest: loop.call_soon_threadsafe(
            lambda: self._file_hashed(file_hash, hexdigest), owner=self))

    def _file_hashed(self, file_hash: FileHash, hexdigest: str | None) -> None:
        """The helper is done with a get's file (called in the loop)."""
        if self.file_hash is not file_hash or self.channel.closed:
            return  # the connection went away meanwhile: connection_lost closed it
        self.file_hash = None
        self.work.move(Event.HASH_ENDED)
        job = file_hash.job
        digest = None if hexdigest is None else Digest(job.algorithm, hexdigest)
        if digest is not None:
            self.services.root.hashes.remember(file_hash.fd, file_hash.st, digest)
        file_hash.waiting = None  # (the reply owns it from here)
        file_hash.close()
        why_not = (f"cannot read the file: {job.error.strerror}" if job.error is not None
                   else "the file changed while being read")
        file_hash.ready(digest, why_not)
        self.process()

    def with_digest(self, opened: OpenFile, then: Callable[[], None],
                    failed: Callable[[StorageError], None], *, sending: int,
                    may_follow: bool = False) -> None:
        """Go on with a get (``then()``) once its reply can say the file's digest: at
        once if it is known, or if it may follow the body (``may_follow``: the client
        takes a trailer) and the body is no small one (``sending`` bytes: a small body
        goes with its header, the digest in it); else after ``hash_then``."""
        if opened.digest is not None or (may_follow and not self.hashed_at_once(opened)
                                         and sending > self.limits.inline_file_size):
            then()
            return
        self.hash_then(opened, then, failed)

    def body_of(self, opened: OpenFile, offset: int, length: int,
                transfer: Transfer) -> bytes | FileRegion:
        """What follows a get's reply header, the same way for every wire: a small body
        (up to ``inline_file_size``) read now, its file closed at once (a queued reply
        then holds memory, not a descriptor); a bigger one as a region that sendfile
        sends as the socket drains (``download_sent`` when its last byte went).
        StorageError (the file closed) if a small one cannot be read."""
        transfer.total = length
        if length > self.limits.inline_file_size:
            region = FileRegion(opened.fd, offset, length,
                                on_done=lambda: self.download_sent(transfer))
            transfer.region = region
            return region
        try:
            return opened.read_exactly(offset, length)
        finally:
            opened.close()

    def check_size(self, size: int) -> None:
        """The largest file the server takes (StorageError "too_large"), for every way
        a size becomes known: declared, in pieces, or counted as a chunked body arrives."""
        limit = self.limits.max_file_size
        if size > limit:
            raise StorageError("too_large", f"{size} bytes is over the limit of {limit}")

    # -- transfers: begun, counted once, logged once

    def begin_transfer(self, op: str, name: str, total: int = 0) -> Transfer:
        self.active = Transfer(op, name, total, self.services.loop.now)
        return self.active

    def forget_transfer(self) -> None:
        """The request turned out not to be a transfer (a redirect, a refusal to a
        stranger): nothing to count."""
        self.active = None

    def transfer_done(self, transfer: Transfer, size: int, digest: Digest | None) -> None:
        if transfer.ended:
            return
        self._end(transfer)
        self.services.stats.transfers_done += 1
        self.services.turn_log.info("%s %s%s %s: %d bytes%s ok", self.channel.peer, self.wire,
                                    transfer.op, printable(transfer.name), size,
                                    f", {digest.short()}" if digest else "")

    def transfer_failed(self, transfer: Transfer | None) -> None:
        if transfer is None or transfer.ended:
            return
        self._end(transfer)
        self.services.stats.transfers_failed += 1

    def _end(self, transfer: Transfer) -> None:
        transfer.ended = True
        if self.active is transfer:
            self.active = None
        if transfer in self.sending:
            self.sending.remove(transfer)

    def request_failed(self, code: str, message: str, name: str = "") -> None:
        """The current request is refused or failed: count its transfer, log it once."""
        transfer = self.active
        what = transfer.op if transfer is not None else "request"
        name = name or (transfer.name if transfer is not None else "")
        self.transfer_failed(transfer)
        log.warning("%s %s%s%s refused: %s (%s)", self.channel.peer, self.wire, what,
                    f" {printable(name)}" if name else "", message, code,
                    extra={"event": "refused", "conn": self.channel.id})

    def sending_body(self, transfer: Transfer) -> None:
        """The get's body is queued on the channel; the next request may begin."""
        self.sending.append(transfer)
        if self.active is transfer:
            self.active = None

    def download_sent(self, transfer: Transfer) -> None:
        """The last byte of a get's body went to the socket."""
        if transfer.digest is None and self.file_hash is not None:
            self.file_hash.body_sent = True  # done when its digest has followed it
            return
        self.transfer_done(transfer, transfer.total, transfer.digest)
        if self.services.stopping and not self.busy:
            self.close_for_stop()

    @property
    def transfer(self) -> Transfer | None:
        """What the console shows: the request being served, else the body being sent."""
        if self.active is not None:
            return self.active
        return self.sending[0] if self.sending else None

    # -- uploads

    def start_upload(self, name: str, length: int, expected: Digest | None, *,
                     overwrite: bool, key: str = "", offset: int = 0,
                     total: int | None = None, mtime: float | None = None,
                     algorithm: str = SHA256) -> Upload:
        """Check the target and open the upload (StorageError if refused).

        ``expected``: the digest the sender declared; None when it comes later (after
        the body) or never (HTTP without one): the file is then hashed in
        ``algorithm``. ``key``: the partial file's key of a resumable upload
        (``partial_key``); ``total``: the whole file's size, when this body is one
        piece of it (tus).

        A writer that may not read (a drop box) must not learn which names exist: an
        upload to a taken name is stored beside it under a free one instead of being
        refused, and the reply says the name it asked for."""
        self.require(WRITE, f"storing {name!r}")
        self.check_size(offset + length if total is None else total)
        try:
            upload = self.services.root.begin_upload(
                name, length, expected, overwrite=overwrite, allow_overwrite=self.grant.replace,
                mtime=mtime, offset=offset, key=key, total=total,
                beside_if_taken=self.blind, algorithm=algorithm)
        except StorageError as exc:
            raise self.explained(exc, name) from None
        if offset and total is None:  # (the pieces of a tus upload: not each one)
            log.info("%s %sresumed %s at %s", self.channel.peer, self.wire, printable(name),
                     format_bytes(offset), extra={"event": "resumed", "conn": self.channel.id})
        self.upload = upload
        self.work.move(Event.UPLOAD_OPENED)
        transfer = self.active or self.begin_transfer("put", name)
        transfer.total, transfer.received = upload.size, upload.offset
        return upload

    def partial_key(self, name: str, identity: str, size: int) -> str:
        """The key of the partial file this writer's upload of ``name`` keeps
        (storage.partial_key): another writer's upload of the same file never has it."""
        return partial_key(split_name(name)[-1], self.grant.writer, identity, size)

    def write_body(self, data: memoryview | bytes) -> None:
        """Body bytes of the upload under way (those of a refused request are dropped)."""
        upload = self.upload
        if upload is None or self.work.state is not Work.RECEIVING:
            return
        try:
            upload.write(memoryview(data))
        except StorageError as exc:  # disk full, file too large, I/O error
            self.end_upload()
            upload.abort()
            self.upload_failed(upload, exc)
            return
        if self.active is not None:
            self.active.received = upload.offset + upload.received

    def finish_upload(self) -> None:
        """The body is complete: commit now, or once the helper has hashed the tail
        (requests behind this one wait meanwhile: replies stay in order)."""
        upload = self.upload
        if upload is None or not self.work.uploading:
            return  # (the end of a request that was no upload, or a refused one)
        loop = self.services.loop
        if upload.finish_hash(lambda digest: loop.call_soon_threadsafe(
                lambda: self.hash_ready(upload, digest), owner=self)):
            self.work.move(Event.HELPER_VERIFIES)
            return
        self.end_upload()
        self.commit(upload, None)

    def end_upload(self) -> None:
        """The upload under way is over (stored, failed, aborted, or a piece parked)."""
        self.upload = None
        self.work.move(Event.UPLOAD_ENDED)

    def hash_ready(self, upload: Upload, digest: str | None) -> None:
        """The helper finished hashing ``upload`` (called in the loop). ``digest``: the
        helper's hex digest, None if it could not read the file."""
        if self.upload is not upload or self.channel.closed:
            return  # the connection went away meanwhile: connection_lost aborted it
        self.end_upload()
        self.commit(upload, digest)
        self.process()

    def commit(self, upload: Upload, computed: str | None) -> None:
        try:
            digest = upload.commit(computed)
        except StorageError as exc:
            self.upload_failed(upload, exc)
            return
        if self.active is not None:
            self.transfer_done(self.active, upload.size, digest)
        self.upload_stored(upload, digest)

    def interrupt_upload(self) -> None:
        """The connection broke, timed out, or the server stops: the upload under way is
        cut off. A resumable one keeps what arrived, for ``put --resume``."""
        self._end_upload(interrupted=True)

    def discard_upload(self) -> None:
        """The upload under way is refused or failed: nothing of it is kept."""
        self._end_upload(interrupted=False)

    def _end_upload(self, interrupted: bool) -> None:
        upload = self.upload
        if upload is None or not self.work.uploading:
            return
        self.end_upload()
        kept = upload.abort(interrupted=interrupted)
        if kept:
            log.info("%s kept %s of %s for resume", self.channel.peer, format_bytes(kept),
                     printable(upload.name), extra={"event": "kept", "conn": self.channel.id})
        self.transfer_failed(self.active)

    # -- timeouts

    def timeout_phase(self) -> tuple[Phase, float]:
        if self.busy or self.channel.get_write_buffer_size() or self.reading_body():
            return Phase.TRANSFER, 0.0
        if self.header_since is not None:
            return Phase.HEADER, self.header_since
        return Phase.IDLE, 0.0

    def on_timeout(self, phase: Phase) -> None:
        what = TIMEOUT_REASONS[phase]
        log.warning("%s timed out: %s", self.channel.peer, what,
                    extra={"event": "timeout", "conn": self.channel.id})
        if self.channel.trace is not None:
            self.channel.trace("timeout", self.channel.id, why=what)
        self.interrupt_upload()
        if self.channel.sending_file():
            self.channel.abort(what)  # inside a body: no reply can be framed any more
            return
        self.send_timeout(phase, what)
        self.channel.close_when_done(what)

    # -- stopping

    def server_stopping(self) -> bool:
        """The server began a graceful stop. Return True if we closed at once (idle)."""
        if self.busy:
            return False  # closed when the transfer under way is done (see process)
        self.close_for_stop()
        return True

    def close_for_stop(self) -> None:
        if self.channel.state is not ChannelState.OPEN or self.channel.closed:
            return
        self.send_stopping()
        self.channel.close_when_done("server stopping")

    # -- the end

    @property
    def busy(self) -> bool:
        """A transfer is under way: a body in either direction, a hash, a job."""
        return self.work.busy or self.channel.sending_file()

    def connection_lost(self) -> None:
        self.interrupt_upload()
        if self.job is not None:
            self.job.close()  # closes the file or directory it holds
            self.job = None
        if self.file_hash is not None:
            self.file_hash.close()  # (its get fails below: the active one, or one sending)
            self.file_hash = None
        self.work.move(Event.LOST)
        self.transfer_failed(self.active)
        while self.sending:
            self.transfer_failed(self.sending[0])

    # -- what the console shows

    @property
    def state_label(self) -> str:
        channel = self.channel
        if channel.state is not ChannelState.OPEN:
            return channel.state.value
        state = self.work.state
        if state is Work.STEPPING:
            label = self.job_label or "listing"
        elif state in (Work.RECEIVING, Work.AWAITING_DIGEST, Work.VERIFYING):
            label = state.value
        elif channel.sending_file():
            label = "sending body"
        elif state is Work.HASHING:
            label = state.value
        elif channel.get_write_buffer_size():
            label = "sending reply"
        else:
            label = self.wire_state()
        return self.wire + label

    def wire_state(self) -> str:
        """The decoder's state, when nothing above applies."""
        return "idle"

