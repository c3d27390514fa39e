"""The request lifecycle both protocols share: admission, waiting, transfers,
timeouts, stopping. What each request does is in ``rules.py``; ``native.py`` and
``http.py`` only translate their wire formats.

A session sits between a channel (bytes) and the root (files). Its subclass decodes
requests and encodes replies; everything a request *means* to the server is decided
once, in this module and ``rules.py``, so the native protocol and HTTP keep the same
promises by construction:

* **Admission.** Every request is authorized on its own (:meth:`Session.admit`),
  before anything else about it is looked at; a refused request's body is never read
  (the connection is closed instead), and refusals count as strikes: per connection
  here, per address in ``access.py``.
* **Waiting.** Requests run one after another, so replies stay in order. What the
  request under way is doing is one state (lifecycle.py); while the helper thread or a
  job (a reply produced in bounded steps, one per loop turn) is at work, or queued
  output is over the high-water mark (the channel said ``pause_writing``), the next
  request waits and the channel stops reading.
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
import time
from typing import Any, Callable, Generator, Protocol

from mypy_extensions import mypyc_attr

from .access import READ, Access, Credential, Grant, Refusal
from .accounts import PasswordCheck
from .digests import Digest
from .hashing import HashJob
from .lifecycle import Event, RequestState, Work
from .limits import Limits
from .locks import LockTable
from .loop import Owner
from .names import printable
from .protocol import NEED_DATA
from .storage import (
    Root,
    StorageError,
    Upload,
)
from .transport import BaseProtocol, ChannelState, Phase, Transport
from .turnlog import TurnLog

log = logging.getLogger("muxserver")

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

    def __init__(self, loop: Scheduler, root: Root, limits: Limits, access: Access,
                 locks: LockTable | None = None) -> None:
        self.loop = loop
        self.root = root
        self.limits = limits
        self.access = access
        #: WebDAV's locks, every process's (locks.py); else this process's own
        self.locks = locks if locks is not None else LockTable()
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


#: Work done a bounded step at a time: each ``next()`` is one step (see start_job).
Job = Generator[None, None, None]

#: The grant of a request not admitted (yet).
NO_RIGHTS = Grant(frozenset(), replace=False)


# Compiled by mypyc in the compiled build (setup.py): HTTP's sessions, which stay plain
# Python, inherit from this class, and mypyc allows that only when told.
@mypyc_attr(allow_interpreted_subclasses=True)
class Session(BaseProtocol):
    """The lifecycle of requests on one connection; subclasses speak a wire format."""

    @property
    def wire(self) -> str:
        """How log lines and the console name the protocol: "" here, "HTTP " for HTTP.
        (A property, not a class attribute a subclass reassigns: compiled by mypyc, this
        class would read its own value, see setup.py.)"""
        return ""

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(channel)
        self.services = services
        self.limits = services.limits
        self.work = RequestState()  # what the request under way does (lifecycle.py)
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

    def interrupt_upload(self) -> None:
        """The connection broke, timed out, or the server stops: the upload under way
        is cut off (rules.py)."""

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

    def admit(self, offered: Credential | str | None, *, has_body: bool,
              again: Callable[[], None]) -> bool:
        """Authorize one request: True to go on. Called before anything else about the
        request is checked. A refusal is answered here; a request with a body, a third
        strike or an address in back-off also closes the connection unread. A password
        not checked yet is hashed by a helper thread first (never by the loop: about
        30 ms of CPU): False meanwhile, and ``again()`` starts the request over once it
        is known (the answer is remembered, so that admit answers at once)."""
        verdict = self.services.access.check(self.channel.peer_host, offered,
                                             can_wait=self.work.state is Work.IDLE)
        if isinstance(verdict, Grant):
            self.grant = verdict
            return True
        if isinstance(verdict, PasswordCheck):
            busy = self.check_password(verdict, again)
            if busy is None:
                return False
            verdict = busy
        refusal = verdict
        self.grant = NO_RIGHTS
        self.strikes += 1
        close = (has_body or self.strikes >= self.limits.auth_failures
                 or refusal.code in ("too_many_attempts", "server_busy"))
        log.warning("%s %s%s (%d of %d)", self.channel.peer, self.wire, refusal.message,
                    self.strikes, self.limits.auth_failures,
                    extra={"event": "refused", "conn": self.channel.id})
        self.forget_transfer()
        self.send_refusal(refusal, close)
        if close:
            self.channel.close_when_done(refusal.message)
        return False

    def check_password(self, check: PasswordCheck, again: Callable[[], None]
                       ) -> Refusal | None:
        """Hand ``check`` to the password helper; reading waits (CHECKING) until it
        answers, then the request starts over. A refusal if too many wait already."""
        passwords = self.services.access.passwords
        address = self.channel.peer_host
        busy = passwords.busy_for(address)
        if busy:
            return Refusal("server_busy", busy, retry_after=1)
        loop = self.services.loop
        self.work.move(Event.CHECK_STARTED)
        self.channel.pause_reading()

        def checked(ok: bool) -> None:  # (in the helper thread)
            loop.call_soon_threadsafe(lambda: self.password_checked(check, ok, again),
                                      owner=self)

        passwords.check_later(check, checked, address)
        return None

    def password_checked(self, check: PasswordCheck, ok: bool,
                         again: Callable[[], None]) -> None:
        """The helper has checked a password (called in the loop)."""
        self.services.access.passwords.record(check, ok, self.channel.peer_host)
        if self.channel.closed or self.work.state is not Work.CHECKING:
            return  # (the connection went away meanwhile: the answer is kept anyway)
        self.work.move(Event.CHECK_ENDED)
        again()
        self.process()

    def require(self, right: str, what: str) -> None:
        """Refuse (StorageError "not_permitted") a request whose grant lacks ``right``."""
        if not self.grant.allows(right):
            raise StorageError("not_permitted", f"{what}: not permitted: "
                                                f"{self.services.access.why_not(right, self.grant)}")

    @property
    def blind(self) -> bool:
        """The request may write but not read: it must not learn which names exist."""
        return not self.grant.allows(READ)

    def require_sight(self, what: str) -> None:
        """Refuse what would tell a writer that may not read whether a name exists."""
        if self.blind:
            raise StorageError("not_permitted", f"{what}: not permitted: "
                                                f"{self.services.access.why_not_blind()}")

    def explained(self, exc: StorageError, name: str) -> StorageError:
        """``exc``, with the reason a replacement was refused: the server, or the token."""
        if exc.code != "overwrite_refused":
            return exc
        return StorageError(exc.code, f"{name!r} exists and may not be replaced: "
                                      f"{self.services.access.why_not_replace(self.grant)}")

    # -- waiting

    def must_wait(self) -> bool:
        """True (and reading paused) while a job, a verification, a file's hash or
        queued output (the channel said pause_writing) lasts."""
        if not self.work.state.waits and not self.writing_paused:
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

    def end_job(self) -> None:
        self.job = None
        self.work.move(Event.JOB_ENDED)

    # -- transfers: begun, counted once, logged once

    def begin_transfer(self, op: str, name: str, total: int = 0) -> Transfer:
        """A transfer of ``name`` (as the request names it: the log and the console
        name it below the served root, whatever folder the request's grant sees)."""
        scope = self.grant.scope
        if scope:
            name = f"{scope}/{name}" if name else scope
        self.active = Transfer(op, name, total, self.services.loop.now)
        return self.active

    @property
    def account(self) -> str:
        return self.grant.who

    @property
    def who(self) -> str:
        """The peer, for the log, and who it is (a user, a named token, a link)."""
        who = self.grant.who
        return f"{self.channel.peer} ({who})" if who else self.channel.peer

    def forget_transfer(self) -> None:
        """The request turned out not to be a transfer (a redirect, a refusal to a
        stranger): nothing to count."""
        self.active = None

    def transfer_done(self, transfer: Transfer, size: int, digest: Digest | None) -> None:
        if transfer.ended:
            return
        self._end(transfer)
        self.services.stats.transfers_done += 1
        self.services.turn_log.info("%s %s%s %s: %d bytes%s ok", self.who, self.wire,
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

    def request_failed(self, code: str, message: str, name: str = "", *,
                       expected: bool = False) -> None:
        """The current request is refused or failed: count its transfer, log it once.
        ``expected``: an answer clients ask for in their normal course (a WebDAV client
        probing whether a name or its folder exists): no trouble, not logged."""
        transfer = self.active
        what = transfer.op if transfer is not None else "request"
        name = name or (transfer.name if transfer is not None else "")
        self.transfer_failed(transfer)
        if expected:
            return
        log.warning("%s %s%s%s refused: %s (%s)", self.who, self.wire, what,
                    f" {printable(name)}" if name else "", message, code,
                    extra={"event": "refused", "conn": self.channel.id})

    def sending_body(self, transfer: Transfer) -> None:
        """The get's body is queued on the channel; the next request may begin."""
        self.sending.append(transfer)
        if self.active is transfer:
            self.active = None

    @property
    def transfer(self) -> Transfer | None:
        """What the console shows: the request being served, else the body being sent."""
        if self.active is not None:
            return self.active
        return self.sending[0] if self.sending else None

    # -- timeouts

    def timeout_phase(self) -> tuple[Phase, float]:
        queued = self.channel.get_write_buffer_size()
        if self.work.state.helper_works and not queued:
            return Phase.WORKING, 0.0  # (a stalled client would show as bytes queued)
        if queued or self.busy or self.reading_body():  # (cheapest first: once per event)
            return Phase.TRANSFER, self.work.helper_done_at
        if self.header_since is not None:
            return Phase.HEADER, self.header_since
        return Phase.IDLE, 0.0

    def on_timeout(self, phase: Phase) -> None:
        what = TIMEOUT_REASONS[phase]
        log.warning("%s timed out: %s", self.channel.peer, what,
                    extra={"event": "timeout", "conn": self.channel.id})
        self.channel.observe.timeout(self.channel.id, what)
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
        if self.job is not None:
            self.job.close()  # closes the file or directory it holds
            self.job = None
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
