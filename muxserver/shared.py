"""The counts a server keeps once, however many processes serve it.

Two limits belong to the server, not to a process: the cap on connections, and the
back-off after wrong tokens (a guesser must not get N times the tries by landing on N
worker processes). Each comes in two implementations of one small contract:

* ``Local...``: plain Python objects, for a server of one process (the default);
* ``Shared...``: a few fields in an anonymous shared memory mapping made *before*
  ``--workers`` forks the worker processes (workers.py), so every worker sees the same
  bytes, guarded by one lock (``multiprocessing.Lock``: a POSIX semaphore, also shared
  across the fork). Each operation holds the lock for a few microseconds: never a
  system call that can block, never a loop step of another worker's.

The wrong-token book holds at most ``STRIKE_SLOTS`` addresses in both forms: past that,
the one whose record is oldest is forgotten (the memory cap of access.py).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import mmap
import multiprocessing
import struct
from typing import Protocol

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

_COUNTER = struct.Struct("=q")  # the connection count, at offset 0
# A strike slot: the address's key (8 bytes of its BLAKE2b; 0: a free slot), the
# count, when its first strike happened, and when its back-off ends.
_SLOT = struct.Struct("=QIxxxxdd")
_SLOTS_AT = 64
_PROBES = 16  # slots looked at for one address (open addressing, linear probing)


class SharedState:
    """The shared page(s) and their lock: make one before forking, use it in every
    worker (its two views below)."""

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, _SLOTS_AT + STRIKE_SLOTS * _SLOT.size)  # MAP_SHARED
        self.lock = multiprocessing.Lock()
        self.connections = SharedConnections(self)
        self.strikes = SharedStrikes(self)


class SharedConnections:
    def __init__(self, state: SharedState) -> None:
        self._memory, self._lock = state.memory, state.lock

    @property
    def value(self) -> int:
        return _COUNTER.unpack_from(self._memory, 0)[0]

    def take(self, cap: int) -> bool:
        with self._lock:
            count = _COUNTER.unpack_from(self._memory, 0)[0]
            if count >= cap:
                return False
            _COUNTER.pack_into(self._memory, 0, count + 1)
            return True

    def give_back(self) -> None:
        with self._lock:
            count = _COUNTER.unpack_from(self._memory, 0)[0]
            _COUNTER.pack_into(self._memory, 0, max(0, count - 1))


class SharedStrikes:
    def __init__(self, state: SharedState) -> None:
        self._memory, self._lock = state.memory, state.lock

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
            offset = _SLOTS_AT + ((start + probe) % STRIKE_SLOTS) * _SLOT.size
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
