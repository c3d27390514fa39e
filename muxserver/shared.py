"""The counts a server keeps once, however many processes serve it.

Two limits belong to the server, not to a process: the cap on connections, and the
back-off after wrong tokens (a guesser must not get N times the tries by landing on N
worker processes). Each comes in two implementations of one small contract:

* ``Local...``: plain Python objects, for a server of one process (the default);
* ``Shared...``: a few fields in an anonymous shared memory mapping made *before*
  ``--workers`` forks the worker processes (workers.py), so every worker sees the same
  bytes, guarded by one lock. Each operation holds the lock for a few microseconds:
  never a system call that can block, never a loop step of another worker's.

A worker may die (a bug, the OOM killer) and be started again, so nothing it leaves
behind may jam the others: each worker counts its own connections in a slot of its
own (the cap compares their sum), and the supervisor empties a dead worker's slot
before its successor starts; the lock is one the kernel lets go of when its holder
dies (see ProcessLock), which a semaphore is not.

The wrong-token book holds at most ``STRIKE_SLOTS`` addresses in both forms: past that,
the one whose record is oldest is forgotten (the memory cap of access.py).
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import hashlib
import mmap
import struct
import tempfile
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .locks import LockTable

#: Addresses remembered for the back-off; the oldest is forgotten past this (memory cap).
STRIKE_SLOTS = 4096


class ConnectionCount(Protocol):
    """How many clients the server has, across all its processes."""

    def take(self, cap: int) -> bool:
        """Count one more client if there are fewer than ``cap``; False if full."""
        ...

    def give_back(self) -> None:
        """A counted client has gone."""
        ...

    @property
    def value(self) -> int: ...


class StrikeBook(Protocol):
    """Wrong tokens per client address, and the back-off they earned."""

    def blocked_until(self, address: str) -> float:
        """When the address may try again (0: it may now), on the monotonic clock."""
        ...

    def strike(self, address: str, now: float, window: float, threshold: int) -> None:
        """One wrong token from ``address``: ``threshold`` of them within ``window``
        seconds block it for ``window`` seconds."""
        ...


class LocalConnections:
    def __init__(self) -> None:
        self.value = 0

    def take(self, cap: int) -> bool:
        if self.value >= cap:
            return False
        self.value += 1
        return True

    def give_back(self) -> None:
        self.value -= 1


@dataclasses.dataclass(slots=True)
class _Strikes:
    count: int
    since: float  # when the first counted failure happened
    blocked_until: float = 0.0


class LocalStrikes:
    def __init__(self) -> None:
        self._book: collections.OrderedDict[str, _Strikes] = collections.OrderedDict()

    def blocked_until(self, address: str) -> float:
        strikes = self._book.get(address)
        return strikes.blocked_until if strikes is not None else 0.0

    def strike(self, address: str, now: float, window: float, threshold: int) -> None:
        strikes = self._book.get(address)
        if strikes is None or now - strikes.since > window:
            strikes = self._book[address] = _Strikes(0, now)
        self._book.move_to_end(address)
        strikes.count += 1
        if strikes.count >= threshold:
            strikes.blocked_until = now + window
            strikes.count, strikes.since = 0, now + window
        while len(self._book) > STRIKE_SLOTS:
            self._book.popitem(last=False)


# ------------------------------------------------------------------ across processes

_COUNT = struct.Struct("=q")  # one worker's connection count; the slots begin at 0
# A strike slot: the address's key (8 bytes of its BLAKE2b; 0: a free slot), the
# count, when its first strike happened, and when its back-off ends.
_SLOT = struct.Struct("=QIxxxxdd")
_PROBES = 16  # slots looked at for one address (open addressing, linear probing)


class ProcessLock:
    """A lock between processes that the kernel lets go of when its holder dies: a
    POSIX record lock (``fcntl``) on an unlinked temporary file opened before the
    fork. A worker killed inside a critical section therefore cannot leave the others
    waiting forever, as it would holding a semaphore (``multiprocessing.Lock``).

    Record locks belong to a process: a forked child does not inherit one held, and
    threads of one process do not exclude each other (only each worker's loop thread
    and the supervisor take this lock)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()

    def __enter__(self) -> None:
        fcntl.lockf(self._file, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self._file, fcntl.LOCK_UN)


class SharedState:
    """The shared page(s) and their lock: make one before forking, use it in every
    worker (its two views below)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        # The strike slots start after the connection counts, at a cache line.
        self.slots_at = -(-workers * _COUNT.size // 64) * 64
        self.memory = mmap.mmap(-1, self.slots_at + STRIKE_SLOTS * _SLOT.size)  # MAP_SHARED
        self.lock = ProcessLock()
        self.strikes = SharedStrikes(self)
        #: WebDAV's locks: a table every worker opens (locks.py), made by the supervisor
        #: before it forks them and removed when they are all gone
        self.locks: LockTable | None = None

    def connections(self, worker: int) -> "SharedConnections":
        """Worker ``worker``'s view of the connection count."""
        return SharedConnections(self, worker)

    def forget_worker(self, worker: int) -> None:
        """Worker ``worker`` died: its connections died with it (the kernel closed
        them); they no longer count against the cap."""
        with self.lock:
            _COUNT.pack_into(self.memory, worker * _COUNT.size, 0)


class SharedConnections:
    """One worker's count, in its own slot; the cap applies to the sum of all slots."""

    def __init__(self, state: SharedState, worker: int) -> None:
        self._memory, self._lock = state.memory, state.lock
        self._slots = struct.Struct(f"={state.workers}q")
        self._mine = worker * _COUNT.size

    @property
    def value(self) -> int:
        return sum(self._slots.unpack_from(self._memory, 0))

    def take(self, cap: int) -> bool:
        with self._lock:
            if sum(self._slots.unpack_from(self._memory, 0)) >= cap:
                return False
            mine = _COUNT.unpack_from(self._memory, self._mine)[0]
            _COUNT.pack_into(self._memory, self._mine, mine + 1)
            return True

    def give_back(self) -> None:
        with self._lock:
            mine = _COUNT.unpack_from(self._memory, self._mine)[0]
            _COUNT.pack_into(self._memory, self._mine, max(0, mine - 1))


class SharedStrikes:
    def __init__(self, state: SharedState) -> None:
        self._memory, self._lock = state.memory, state.lock
        self._slots_at = state.slots_at

    @staticmethod
    def _key(address: str) -> int:
        key = int.from_bytes(hashlib.blake2b(address.encode("utf-8", "surrogatepass"),
                                             digest_size=8).digest(), "little")
        return key or 1  # (0 marks a free slot)

    def _find(self, key: int) -> tuple[int, bool]:
        """(offset of the slot for ``key``, whether it holds it already): its own slot,
        else a free one, else the probed slot whose record is oldest."""
        start = key % STRIKE_SLOTS
        oldest, oldest_since = -1, float("inf")
        for probe in range(_PROBES):
            offset = self._slots_at + ((start + probe) % STRIKE_SLOTS) * _SLOT.size
            slot_key, _count, since, _blocked = _SLOT.unpack_from(self._memory, offset)
            if slot_key == key:
                return offset, True
            if slot_key == 0:
                return offset, False
            if since < oldest_since:
                oldest, oldest_since = offset, since
        return oldest, False

    def blocked_until(self, address: str) -> float:
        with self._lock:
            offset, found = self._find(self._key(address))
            return _SLOT.unpack_from(self._memory, offset)[3] if found else 0.0

    def strike(self, address: str, now: float, window: float, threshold: int) -> None:
        key = self._key(address)
        with self._lock:
            offset, found = self._find(key)
            _key, count, since, blocked = _SLOT.unpack_from(self._memory, offset)
            if not found or now - since > window:
                count, since, blocked = 0, now, 0.0  # (any back-off is long over)
            count += 1
            if count >= threshold:
                blocked, count, since = now + window, 0, now + window
            _SLOT.pack_into(self._memory, offset, key, count, since, blocked)
