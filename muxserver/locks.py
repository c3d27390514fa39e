"""WebDAV's write locks (RFC 4918, sections 6 and 7), kept once for every process.

A lock says: until it expires or is unlocked, only requests that submit its token (and
come from the principal that took it) may change what it covers. It covers its root
name and, with depth infinity, everything below it. Exclusive locks conflict with any
other lock on what they cover, shared locks only with exclusive ones.

The rule that a locked name is changed only by its lock's holder is the request
machine's (rules.py), for every wire: a native client, which has no way to submit a
token, cannot change a name a WebDAV client has locked either.

Where they are kept: ``--workers`` processes must all see every lock, so the table is a
small SQLite database in a private temporary directory made when the server starts,
which every worker opens (SQLite's own file locks keep them consistent; a query takes
microseconds, a change one short transaction, never a wait on the network). Locks are
promises of the running server only: a restart starts with none (the directory is
made anew), and a client whose token is gone is told so (412) and locks again. Names
are those below the served root, whatever folder a request's grant sees.

The table is bounded (``MAX_LOCKS``; the oldest expiry is not evicted: a new lock is
refused) and a lock's timeout at most ``MAX_TIMEOUT`` seconds.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from typing import Callable, TypeVar

from .storage.errors import StorageError

T = TypeVar("T")

#: Locks at most, in the whole server, of one holder (a principal, or for a server
#: without accounts an address), and on one name (shared locks): a client that locks
#: without end is refused, and what a PROPFIND says of a name's locks stays short.
MAX_LOCKS = 10_000
MAX_PER_HOLDER = 256
MAX_PER_NAME = 16
#: The longest the loop waits for another process's change of the table (SQLite's busy
#: timeout, in seconds); the changes themselves take microseconds.
BUSY_WAIT = 0.005
#: The longest a lock lives without a refresh, and the timeout of one that asks for
#: none or for "Infinite" (clients refresh before it ends).
MAX_TIMEOUT = 3600
DEFAULT_TIMEOUT = 600
#: An owner element kept with a lock (what the client said of itself), at most.
MAX_OWNER = 4096
#: A lock token is a URI the server makes up (RFC 4918, 6.5): 128 random bits. Short,
#: because clients build If headers in fixed buffers: litmus's holds 199 characters, and
#: a list of a token and two of our ETags (66 characters each: a SHA-256) leaves 37
#: for the token, so ``urn:uuid:`` and 36 more do not fit.
TOKEN_PREFIX = "urn:x-lock:"

_SCHEMA = """
create table if not exists locks (
    token text primary key,
    root text not null,          -- the name locked, below the served root ('' the root)
    infinite integer not null,   -- depth infinity: everything below it too
    exclusive integer not null,
    owner text not null,         -- the client's <owner> element, as it sent it
    principal text not null,     -- who took it (access.Grant.principal), '' if nobody
    timeout integer not null,    -- seconds, as granted
    expires real not null,       -- time.time() when it lapses
    holder text not null         -- whose count it is in: the principal, or an address
);
create index if not exists locks_root on locks (root);
"""


@dataclasses.dataclass(frozen=True)
class Lock:
    token: str
    root: str
    infinite: bool
    exclusive: bool
    owner: str
    principal: str
    timeout: int
    expires: float

    def covers(self, name: str) -> bool:
        """Whether ``name`` is this lock's root or (depth infinity) below it."""
        return name == self.root or (self.infinite and _below(name, self.root))


class LockConflict(Exception):
    """A lock cannot be granted: ``held`` are the locks in its way."""

    def __init__(self, held: list[Lock]) -> None:
        super().__init__("locked")
        self.held = held


class TooManyLocks(Exception):
    pass


class LocksBusy(StorageError):
    """Another process kept the table longer than BUSY_WAIT: "server_busy", as a
    storage call short of a resource says it (the client tries again)."""

    def __init__(self, why: object) -> None:
        super().__init__("server_busy", f"the lock table is busy ({why}); try again")


class LockTable:
    """The server's locks, in a database every process of it opens."""

    def __init__(self, directory: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``directory``: where the processes of one server keep the table (made
        before they fork); None: a server of one process, whose private directory is
        made at its first lock."""
        self.directory = directory
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    @classmethod
    def made_anew(cls) -> "LockTable":
        """A table in a new private directory (mode 0700), for the worker processes
        about to be forked."""
        return cls(tempfile.mkdtemp(prefix="muxserver-locks-"))

    @property
    def path(self) -> str | None:
        return None if self.directory is None else os.path.join(self.directory, "locks.sqlite")

    def remove(self) -> None:
        """The server has stopped: its locks go with it."""
        self.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """This process's connection (a forked worker opens its own: SQLite connections
        do not survive a fork)."""
        if self._db is None or self._pid != os.getpid():
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="muxserver-locks-")
            db = sqlite3.connect(os.path.join(self.directory, "locks.sqlite"),
                                 timeout=BUSY_WAIT, isolation_level=None,
                                 check_same_thread=False)
            try:
                db.execute("pragma journal_mode=wal")  # (readers never wait for a writer)
                db.execute("pragma synchronous=off")  # (a lock need not survive a crash)
                db.executescript(_SCHEMA)
            except sqlite3.OperationalError as exc:
                db.close()
                raise LocksBusy(exc) from None
            self._db, self._pid = db, os.getpid()
        return self._db

    # -- what holds

    @property
    def empty(self) -> bool:
        """No lock was ever taken (the database is not even made: most servers)."""
        path = self.path
        return self._db is None and (path is None or not os.path.exists(path))

    def _rows(self, where: str, args: tuple[object, ...]) -> list[Lock]:
        if self.empty:
            return []
        try:
            rows = self.db.execute(
                f"select token, root, infinite, exclusive, owner, principal, timeout, "
                f"expires from locks where expires > ? and ({where})",
                (self._clock(), *args)).fetchall()
        except sqlite3.OperationalError as exc:
            raise LocksBusy(exc) from None
        return [Lock(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def covering(self, name: str) -> list[Lock]:
        """The live locks that cover ``name`` (rooted there, or above with depth infinity)."""
        above = ancestors(name)
        marks = ",".join("?" * len(above))
        return [lock for lock in self._rows(f"root = ? or (infinite and root in ({marks}))",
                                            (name, *above))]

    def below(self, name: str) -> list[Lock]:
        """The live locks rooted strictly below ``name``."""
        if name == "":
            return self._rows("root != ''", ())
        return self._rows("root >= ? and root < ?", (name + "/", name + "0"))

    def find(self, token: str) -> Lock | None:
        found = self._rows("token = ?", (token,))
        return found[0] if found else None

    def any(self) -> bool:
        """Whether any lock is live (most servers have none: one cheap query)."""
        return not self.empty and bool(self.db.execute(
            "select 1 from locks where expires > ? limit 1", (self._clock(),)).fetchone())

    # -- changes (each one short transaction; a busy table is an answer, not a wait)

    def _change(self, change: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``change`` in a write transaction. Another process's transaction is
        waited for at most BUSY_WAIT (on the loop: it must stay short); longer, and
        the table is busy (LocksBusy: the client is told to try again)."""
        db = self.db
        try:
            db.execute("begin immediate")
        except sqlite3.OperationalError as exc:
            raise LocksBusy(exc) from None
        try:
            result = change(db)
            db.execute("commit")
            return result
        except BaseException:
            db.execute("rollback")
            raise

    def take(self, root: str, *, infinite: bool, exclusive: bool, owner: str,
             principal: str, timeout: int, holder: str = "") -> Lock:
        """A new lock; LockConflict if one in the way holds, TooManyLocks if the table,
        its ``holder`` (who asks: a principal, or an address) or the name hold as many
        as they may, LocksBusy if another process keeps the table."""
        if len(owner) > MAX_OWNER:
            raise ValueError(f"the owner of a lock is {len(owner)} characters, over "
                             f"{MAX_OWNER}")

        def insert(db: sqlite3.Connection) -> Lock:
            now = self._clock()
            db.execute("delete from locks where expires <= ?", (now,))
            held = self.covering(root) + (self.below(root) if infinite else [])
            in_way = [lock for lock in held if exclusive or lock.exclusive]
            if in_way:
                raise LockConflict(in_way)
            (count,) = db.execute("select count(*) from locks").fetchone()
            (mine,) = db.execute("select count(*) from locks where holder = ?",
                                 (holder,)).fetchone()
            (here,) = db.execute("select count(*) from locks where root = ?",
                                 (root,)).fetchone()
            if count >= MAX_LOCKS or mine >= MAX_PER_HOLDER or here >= MAX_PER_NAME:
                raise TooManyLocks(
                    f"the server holds {MAX_LOCKS} locks already" if count >= MAX_LOCKS
                    else f"you hold {MAX_PER_HOLDER} locks already: unlock some"
                    if mine >= MAX_PER_HOLDER else f"{MAX_PER_NAME} locks are shared on "
                                                   "this name already")
            lock = Lock(TOKEN_PREFIX + secrets.token_urlsafe(16), root, infinite, exclusive,
                        owner, principal, timeout, now + timeout)
            db.execute("insert into locks values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*dataclasses.astuple(lock), holder))
            return lock

        return self._change(insert)

    def refresh(self, token: str, timeout: int) -> Lock | None:
        """The lock ``token`` with a new timeout; None if it is gone."""
        if self.empty:
            return None
        now = self._clock()
        changed = self._change(lambda db: db.execute(
            "update locks set timeout = ?, expires = ? where token = ? and expires > ?",
            (timeout, now + timeout, token, now)).rowcount)
        return self.find(token) if changed else None

    def release(self, token: str) -> bool:
        """Unlock; False if no such live lock."""
        if self.empty:
            return False
        now = self._clock()
        return self._change(lambda db: db.execute(
            "delete from locks where token = ? and expires > ?", (token, now)).rowcount) > 0

    def moved_or_removed(self, name: str) -> None:
        """``name`` (and all below it) was removed or moved away: its locks end
        (RFC 4918, 7.5 and 9.9.1: a lock does not move with its resource). LocksBusy
        if the table stays busy: the change is made, its locks then end with their
        timeouts (at most MAX_TIMEOUT)."""
        if self.empty:
            return
        if name == "":
            self._change(lambda db: db.execute("delete from locks"))
            return
        self._change(lambda db: db.execute(
            "delete from locks where root = ? or (root >= ? and root < ?)",
            (name, name + "/", name + "0")))


def ancestors(name: str) -> list[str]:
    """The names above ``name``: '' (the root), then each folder down to its parent."""
    if name == "":
        return []
    parts = name.split("/")
    return [""] + ["/".join(parts[:i]) for i in range(1, len(parts))]


def _below(name: str, root: str) -> bool:
    return root == "" and name != "" or name.startswith(root + "/")


def parse_timeout(value: str) -> int:
    """The ``Timeout:`` header (``Second-600, Infinite``): the first form we grant,
    bounded by MAX_TIMEOUT; DEFAULT_TIMEOUT when none is asked for or Infinite."""
    for item in value.split(","):
        item = item.strip().lower()
        if item.startswith("second-"):
            digits = item[len("second-"):]
            if digits.isdigit() and digits.isascii():
                return max(1, min(int(digits), MAX_TIMEOUT))
    return DEFAULT_TIMEOUT
