"""The books of partial files: what interrupted resumable uploads left, oldest first.

A resumable upload that is cut off (reset, EOF, timeout, server stop) leaves what it
received in a hidden partial file beside its target, so the client can continue it
later (``put --resume``, docs/PROTOCOL.md section 5.5). Hidden bytes that no client can
see or remove must not be able to fill the disk, so they have an owner and two limits:

* a **time to live** (``--partial-ttl``): a partial untouched that long is removed;
* a **space budget** (``--partial-budget``): the partials together may hold at most that
  many bytes; keeping a new one evicts the oldest until they fit, and an upload that
  finds the disk full evicts partials before it gives up.

A failed upload (disk full, file too large, a refused or mismatching body) never keeps
a partial: only a real interruption does. This module only keeps the accounts;
``storage.Root`` opens directories and removes files.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterator


@dataclasses.dataclass(frozen=True, slots=True)
class Partial:
    where: str  # its directory below the root ("" is the root)
    name: str  # its file name in that directory (PARTIAL_PREFIX + key)
    size: int
    mtime: float  # time.time() of its last byte


class PartialFiles:
    """Partial files by age (the order they were kept in, oldest first), with sizes."""

    def __init__(self, ttl: float, budget: int) -> None:
        self.ttl = ttl
        self.budget = budget
        self.bytes = 0  # all partials together
        self._files: collections.OrderedDict[tuple[str, str], Partial] = (
            collections.OrderedDict())

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Partial]:
        return iter(list(self._files.values()))

    def add(self, partial: Partial) -> None:
        """Note a partial file (again, if it was kept before: it is now the newest)."""
        self.discard(partial.where, partial.name)
        self._files[(partial.where, partial.name)] = partial
        self.bytes += partial.size

    def discard(self, where: str, name: str) -> None:
        old = self._files.pop((where, name), None)
        if old is not None:
            self.bytes -= old.size

    def oldest(self) -> Partial | None:
        return next(iter(self._files.values()), None)

    def over_budget(self) -> bool:
        return self.bytes > self.budget

    def next_expiry(self) -> float | None:
        """When (``time.time()``) the oldest partial expires; None when there is none."""
        oldest = self.oldest()
        return None if oldest is None else oldest.mtime + self.ttl

    def named(self, where: str, prefix: str) -> list[Partial]:
        """The partials in ``where`` whose names start with ``prefix`` (one target's)."""
        return [p for p in self._files.values() if p.where == where
                and p.name.startswith(prefix)]
