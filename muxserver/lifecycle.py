"""The request state machine: what the request under way on a connection is doing.

Theory of operation (h11's ``_state.py`` is the model). A connection serves its
requests one after another, so one request at a time is *under way*, and what it is
doing is one :class:`Work` state. The codecs (``native.py``, ``http.py``) and the shared
rules (``session.py``) never set the state: they report what happened, an
:class:`Event`, and :data:`TRANSITIONS` says where that leads. An event the table does
not have for the current state is a bug, and raises :class:`IllegalEvent` at once
(the loop then closes that connection only) instead of being ignored::

    IDLE ──upload_opened──▶ RECEIVING ──body_ended──▶ AWAITING_DIGEST (a native trailer)
      ▲                       │    │                        │
      │                       │    └──helper_verifies──▶ VERIFYING ◀──┘
      ├────upload_ended───────┴─────────────────────────────┘ (stored, failed, parked)
      ├──hash_started──▶ HASHING ──hash_ended──┐  (a get's file, by the helper thread)
      ├──job_started──▶ STEPPING ──job_ended───┤  (a listing, a removal, an archive)
      ├──check_started──▶ CHECKING ──check_ended─┤  (a password, by its helper thread)
      ◀────────────────────────────────────────┘
    any ──lost──▶ CLOSED

Everything that depends on the state asks :class:`RequestState`, once: whether
decoding must wait (``must_wait``: the helper or a job is at work, and replies stay in
order), whether a transfer is under way (``busy``: the timeout phase, a graceful stop),
whether an upload's file is open (``uploading``), and what the console calls it (the
state's value).

This module does no I/O.
"""

from __future__ import annotations

import enum
import time


class Work(enum.Enum):
    """What the request under way is doing; the value is what the console shows."""

    IDLE = "idle"  # nothing: the next request may be decoded
    RECEIVING = "receiving body"  # an upload's body arrives, into its temporary file
    AWAITING_DIGEST = "waiting for the digest"  # body stored; the trailer frame brings it
    VERIFYING = "verifying"  # the helper thread hashes the upload's tail; then commit
    HASHING = "hashing"  # the helper hashes a get's file (before its reply, or beside it)
    STEPPING = "working in steps"  # a reply made a bounded step per loop turn
    CHECKING = "checking a password"  # its helper hashes it; then the request is admitted
    CLOSED = "closed"  # the connection is gone

    # What each state means, set below from the tables once: asked many times a
    # request, they are plain attributes (an enum member's hash is a Python call).
    waits: bool
    uploading: bool
    helper_works: bool  # a helper thread works for the request (HELPER_WORK)
    moves: dict[Event, Work]  # what each event leads to (TRANSITIONS)


class Event(enum.IntEnum):
    """What happened to the request under way (an IntEnum: hashed as an int, fast)."""

    UPLOAD_OPENED = enum.auto()  # its target checked, its temporary file open
    BODY_ENDED = enum.auto()  # the body is stored; its digest comes after it
    HELPER_VERIFIES = enum.auto()  # the last bytes went to the helper thread
    UPLOAD_ENDED = enum.auto()  # committed, failed, aborted, or (tus) parked
    HASH_STARTED = enum.auto()
    HASH_ENDED = enum.auto()
    JOB_STARTED = enum.auto()
    JOB_ENDED = enum.auto()
    CHECK_STARTED = enum.auto()  # a password went to its helper thread
    CHECK_ENDED = enum.auto()
    LOST = enum.auto()  # the connection closed, whatever was under way


TRANSITIONS: dict[Work, dict[Event, Work]] = {
    Work.IDLE: {Event.UPLOAD_OPENED: Work.RECEIVING, Event.HASH_STARTED: Work.HASHING,
                Event.JOB_STARTED: Work.STEPPING, Event.CHECK_STARTED: Work.CHECKING},
    Work.RECEIVING: {Event.BODY_ENDED: Work.AWAITING_DIGEST,
                     Event.HELPER_VERIFIES: Work.VERIFYING, Event.UPLOAD_ENDED: Work.IDLE},
    Work.AWAITING_DIGEST: {Event.HELPER_VERIFIES: Work.VERIFYING,
                           Event.UPLOAD_ENDED: Work.IDLE},
    Work.VERIFYING: {Event.UPLOAD_ENDED: Work.IDLE},
    Work.HASHING: {Event.HASH_ENDED: Work.IDLE},
    Work.STEPPING: {Event.JOB_ENDED: Work.IDLE},
    Work.CHECKING: {Event.CHECK_ENDED: Work.IDLE},
    Work.CLOSED: {},
}
for _state in Work:  # whatever was under way, a lost connection ends it
    if _state is not Work.CLOSED:
        TRANSITIONS[_state][Event.LOST] = Work.CLOSED

#: The states in which no request may be decoded: the helper or a job is at work, and
#: the next request's reply must not overtake this one's.
WAITING = frozenset({Work.VERIFYING, Work.HASHING, Work.STEPPING, Work.CHECKING})
#: The states in which the server works for the request on a helper thread (a hash, a
#: verification, a password): the client waits for us, so no client timeout runs
#: (session.timeout_phase), however long a big file takes to read on a busy machine.
HELPER_WORK = frozenset({Work.VERIFYING, Work.HASHING, Work.CHECKING})
#: The states of an upload: its temporary file is open.
UPLOADING = frozenset({Work.RECEIVING, Work.AWAITING_DIGEST, Work.VERIFYING})
for _state in Work:
    _state.waits = _state in WAITING
    _state.helper_works = _state in HELPER_WORK
    _state.uploading = _state in UPLOADING
    _state.moves = dict(TRANSITIONS[_state])


class IllegalEvent(Exception):
    """An event the current state has no transition for: a bug, never a client's doing.
    (An Exception rather than a RuntimeError: mypyc, which compiles this module in the
    compiled build, cannot derive a class from RuntimeError.)"""


class RequestState:
    """One connection's request state, moved only by events."""

    __slots__ = ("state", "helper_done_at")

    def __init__(self) -> None:
        self.state = Work.IDLE
        self.helper_done_at = 0.0  # (monotonic) when the helper's last work here ended

    def __repr__(self) -> str:
        return f"<RequestState {self.state.name}>"

    def move(self, event: Event) -> Work:
        state = self.state.moves.get(event)
        if state is None:
            raise IllegalEvent(f"{event.name} while {self.state.name}")
        if self.state.helper_works and not state.helper_works:
            self.helper_done_at = time.monotonic()  # a stall counts from here, not before
        self.state = state
        return state

    @property
    def must_wait(self) -> bool:
        return self.state.waits

    @property
    def busy(self) -> bool:
        """A transfer or a job is under way (a body, a hash, a job)."""
        return self.state is not Work.IDLE and self.state is not Work.CLOSED

    @property
    def uploading(self) -> bool:
        return self.state.uploading
