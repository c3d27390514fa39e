"""The books of partial files: what interrupted resumable uploads left, oldest first.

A resumable upload that is cut off (reset, EOF, timeout, server stop) leaves what it
received in a hidden partial file beside its target, so the client can continue it
later (``put --resume``, docs/PROTOCOL.md section 5.5). Hidden bytes that no client can
see or remove must not be able to fill the disk, so they have an owner and two limits:

* a **time to live** (``--partial-ttl``): a partial untouched that long is removed;
* a **space budget** (``--partial-budget``): the partials together may hold at most that
  many bytes; keeping a new one evicts the oldest until they fit, and an upload that
  finds the disk full evicts partials before it gives up;
* a **count** (``--partial-count``, and ``--partials-per-writer`` for each token): an
  empty partial file costs no bytes but an inode and a directory entry, so there may
  be only so many. Keeping one more evicts the oldest (the writer's own first); an
  upload in pieces (tus) that would need one more is refused at its creation instead,
  so that nobody's upload under way is evicted by somebody else's new one.

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
    writer: str  # who made it: the tag in its key (storage.writer_tag), "" if unknown


class PartialFiles:
    """Partial files by age (the order they were kept in, oldest first), with sizes."""

    def __init__(self, ttl: float, budget: int, count: int = 1 << 62,
                 per_writer: int = 1 << 62) -> None:
        self.ttl = ttl
        self.budget = budget
        self.count = count  # partials, at most
        self.per_writer = per_writer  # partials of one writer, at most
        self.bytes = 0  # all partials together
        self._files: collections.OrderedDict[tuple[str, str], Partial] = (
            collections.OrderedDict())
        self._writers: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Partial]:
        return iter(list(self._files.values()))

    def add(self, partial: Partial) -> None:
        """Note a partial file (again, if it was kept before: it is now the newest)."""
        self.discard(partial.where, partial.name)
        self._files[(partial.where, partial.name)] = partial
        self.bytes += partial.size
        self._writers[partial.writer] += 1

    def discard(self, where: str, name: str) -> None:
        old = self._files.pop((where, name), None)
        if old is not None:
            self.bytes -= old.size
            self._writers[old.writer] -= 1
            if not self._writers[old.writer]:
                del self._writers[old.writer]

    def oldest(self, writer: str | None = None) -> Partial | None:
        """The oldest partial (of ``writer``, if given)."""
        if writer is None:
            return next(iter(self._files.values()), None)
        return next((p for p in self._files.values() if p.writer == writer), None)

    def over_budget(self) -> bool:
        return self.bytes > self.budget

    def writers(self) -> list[str]:
        return list(self._writers)

    def held_by(self, writer: str) -> int:
        return self._writers[writer]

    def full_for(self, writer: str) -> str:
        """Why one more partial of ``writer`` may not be kept ("" if it may)."""
        if self._writers[writer] >= self.per_writer:
            return (f"you have {self._writers[writer]} unfinished uploads, the most one "
                    "writer may keep: finish or give up one of them first")
        if len(self._files) >= self.count:
            return (f"the server keeps {len(self._files)} unfinished uploads, as many as "
                    "it may: try again when some are finished or expired")
        return ""

    def next_expiry(self) -> float | None:
        """When (``time.time()``) the oldest partial expires; None when there is none."""
        oldest = self.oldest()
        return None if oldest is None else oldest.mtime + self.ttl

    def named(self, where: str, prefix: str) -> list[Partial]:
        """The partials in ``where`` whose names start with ``prefix`` (one target's)."""
        return [p for p in self._files.values() if p.where == where
                and p.name.startswith(prefix)]
