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
a partial: only a real interruption does. The books (:class:`PartialFiles`) only
keep the accounts; :class:`PartialPolicy` opens directories and removes files.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import functools
import hashlib
import logging
import os
import time
from typing import Callable, Iterator

from mypy_extensions import mypyc_attr

from ..digests import Digest
from ..names import RESERVED_PREFIX, printable
from .errors import StorageError, split_name
from .root import _O_DIR, RootCore

log = logging.getLogger("muxserver")

TEMP_PREFIX = RESERVED_PREFIX + "tmp-"  # an upload in progress
PARTIAL_PREFIX = RESERVED_PREFIX + "part-"  # what an interrupted resumable upload left
#: Without --partial-budget, partial files may use this fraction (1/N) of the space that
#: was free when the server started.
PARTIAL_SHARE_OF_FREE_SPACE = 4


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
        # Partials a request is writing now (renamed to their claim name): still counted,
        # never evicted or expired under it; kept again (add) or forgotten when it ends.
        self._claimed: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Partial]:
        return iter(list(self._files.values()))

    def add(self, partial: Partial) -> None:
        """Note a partial file (again, if it was kept before: it is now the newest, and
        no request writes it any more)."""
        self.discard(partial.where, partial.name)
        self._files[(partial.where, partial.name)] = partial
        self.bytes += partial.size
        self._writers[partial.writer] += 1

    def claim(self, partial: Partial) -> None:
        """A request writes this partial file now: it keeps its place in the count."""
        if (partial.where, partial.name) not in self._files:
            self.add(partial)
        self._claimed.add((partial.where, partial.name))

    def discard(self, where: str, name: str) -> None:
        self._claimed.discard((where, name))
        old = self._files.pop((where, name), None)
        if old is not None:
            self.bytes -= old.size
            self._writers[old.writer] -= 1
            if not self._writers[old.writer]:
                del self._writers[old.writer]

    def oldest(self, writer: str | None = None) -> Partial | None:
        """The oldest partial no request is writing (of ``writer``, if given)."""
        return next((p for key, p in self._files.items() if key not in self._claimed
                     and (writer is None or p.writer == writer)), None)

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

    def __contains__(self, where_and_name: tuple[str, str]) -> bool:
        return where_and_name in self._files

    def named(self, where: str, prefix: str) -> list[Partial]:
        """The partials in ``where`` whose names start with ``prefix`` (one target's)."""
        return [p for p in self._files.values() if p.where == where
                and p.name.startswith(prefix)]


@mypyc_attr(native_class=False)
class PartialPolicy(RootCore):
    """The partial files of the root: kept, counted, evicted, expired, swept at start."""

    def __init__(self, path: str | os.PathLike[str], partial_ttl: float = 24 * 3600,
                 partial_budget: int | None = None, budget_shares: int = 1,
                 partial_count: int = 1 << 62, partials_per_writer: int = 1 << 62,
                 claim_lease: float = 120.0) -> None:
        """``budget_shares``: the processes serving this root (--workers); each keeps its
        share of the partial files' budget and counts, so that together they keep to
        all of it. ``claim_lease``: seconds after which a claimed partial file nobody
        has written is no one's (``Uploads._claim_partial``)."""
        super().__init__(path)
        self.claim_lease = claim_lease
        # Partial files this server knows of: found by the start-up sweep or kept by an
        # interrupted upload; the server calls expire_partials() when the first is due.
        if partial_budget is None:
            partial_budget = self.free_space() // PARTIAL_SHARE_OF_FREE_SPACE
        self.partials = PartialFiles(partial_ttl, partial_budget // budget_shares,
                                     max(1, partial_count // budget_shares),
                                     max(1, partials_per_writer // budget_shares))
        self.on_partial_kept: Callable[[], None] | None = None

    def sweep_temporary_files(self) -> tuple[int, int]:
        """Clean up after a server that died; return (files removed, partials kept).

        Temporary files of resumable uploads become partial files (the client can
        resume them); other temporary files, and partial files untouched for
        ``partial_ttl`` seconds, are removed; the partials kept are remembered, to
        expire while the server runs. Only one server may sweep a root: an exclusive
        lock on the root directory, held for the server's life, tells a second server
        not to touch the files of the first one's running uploads.
        """
        try:
            fcntl.flock(self.dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("another muxserver serves %s; leaving its temporary files alone",
                        self.path)
            return 0, 0
        removed = 0
        kept: list[tuple[str, str, float, int]] = []
        stack = [(os.open(".", _O_DIR, dir_fd=self.dir_fd), "")]
        expired_before = time.time() - self.partials.ttl
        while stack:
            fd, where = stack.pop()
            try:
                removed += _sweep_dir(fd, where, stack, expired_before, kept)
            finally:
                os.close(fd)
        for where, partial, mtime, size in sorted(kept, key=lambda k: k[2]):
            self.partials.add(Partial(where, partial, size, mtime, writer_of(partial)))
        self.enforce_partial_budget()
        return removed, len(kept)

    def partial_kept(self, where: str, partial: str, size: int) -> int:
        """An interrupted upload left ``partial`` (``size`` bytes) in the directory
        ``where``. Returns the bytes kept: 0 if the budget had no room for it."""
        writer = writer_of(partial)
        self.partials.add(Partial(where, partial, size, time.time(), writer))
        self.enforce_partial_budget(writer)
        if self.on_partial_kept is not None:
            self.on_partial_kept()
        return size if (where, partial) in self.partials else 0

    def enforce_partial_budget(self, writer: str | None = None) -> None:
        """Evict partials while they are over their counts or their budget of bytes.
        ``writer``: the one that just kept one. Over the counts, it loses its own oldest
        (perhaps the one it just kept), never another writer's: nobody's upload under
        way is evicted by somebody else's; over the bytes, the oldest of all go."""
        books = self.partials
        for each in [writer] if writer is not None else books.writers():
            while books.held_by(each) > books.per_writer:
                if not self._evict_oldest(each, "over the partial files one writer may keep"):
                    break
        while len(books) > books.count:
            if not self._evict_oldest(writer, "over the partial files' count"):
                break
        while books.over_budget():
            if not self._evict_oldest(None, "over the partial files' budget"):
                break

    def _evict_oldest(self, writer: str | None, why: str) -> bool:
        """Evict the oldest partial (``writer``'s, or anybody's); False if none can go
        (all of them are being written: they end soon, and are counted)."""
        oldest = self.partials.oldest(writer)
        if oldest is None:
            return False
        self._remove_partial(oldest, why)
        return True

    def make_room(self, needed: int) -> int:
        """The disk is full: evict partials, oldest first, until ``needed`` bytes are
        freed or none is left. Returns the bytes freed (0: nothing could be done)."""
        freed = 0
        while freed < needed:
            oldest = self.partials.oldest()
            if oldest is None:
                break  # (none left, or only those being written)
            self._remove_partial(oldest, "the disk is full")
            freed += oldest.size
        return freed

    def _remove_partial(self, partial: Partial, why: str) -> None:
        self.partials.discard(partial.where, partial.name)
        try:
            parent = self.open_dir(split_name(partial.where) if partial.where else [])
        except StorageError:
            return  # the directory went away, and the partial with it
        try:
            os.unlink(partial.name, dir_fd=parent)
            log.warning("removed %d bytes kept for a resume in %s: %s", partial.size,
                        printable(partial.where or "/"), why,
                        extra={"event": "evicted"})
        except OSError:
            pass  # resumed meanwhile (renamed into an upload) or removed by hand
        finally:
            os.close(parent)

    def forget_partials(self, asked_name: str, writer: str, dirs: list[str],
                        parent: int) -> None:
        """A file was just stored by ``writer`` (its tag) in the directory ``dirs``
        (``parent``), asked for as ``asked_name``: that writer's interrupted uploads to
        that name, of whatever content, are superseded; remove their partial files.
        Another writer's are not (its upload under way must not vanish), and the name
        asked for is what counts, not the one the file got (a drop box's may differ:
        its answer must not depend on which names exist)."""
        if not len(self.partials):
            return  # (the common case: nothing to look for, no name to work out)
        leaf, where = split_name(asked_name)[-1], "/".join(dirs)
        for partial in self.partials.named(where, f"{PARTIAL_PREFIX}{_leaf_key(leaf)}-{writer}-"):
            self.partials.discard(where, partial.name)
            unlink_quietly(partial.name, parent)

    def next_partial_expiry(self) -> float | None:
        """When (``time.time()``) the first known partial file may expire, if any."""
        return self.partials.next_expiry()

    def expire_partials(self) -> int:
        """Remove the partial files untouched for ``partial_ttl``; return how many."""
        now = time.time()
        removed = 0
        while True:
            due = self.partials.next_expiry()
            if due is None or due > now:
                return removed
            oldest = self.partials.oldest()
            assert oldest is not None
            self._remove_partial(oldest, "untouched too long")
            removed += 1


# -------------------------------------------------------------- their names


def partial_key(leaf: str, writer: bytes, identity: str, size: int) -> str:
    """What names an interrupted upload's partial file: the file name, who wrote it
    (``writer_tag``), what it holds, its size. ``identity`` is 17 characters whose first
    says whose namespace it is, so that no upload's key can ever be another's: "n" for
    the native protocol (``native_identity``), "u" for tus (tus.py)."""
    return f"{_leaf_key(leaf)}-{writer_tag(writer)}-{identity}-{size}"


def native_identity(digest: Digest | None, mtime: float | None) -> str:
    """A native upload's identity in its partial file's key: its declared digest, or,
    when the digest comes only after the body, the source file's mtime (with its name
    and size, it tells one version of a file from another; the digest at the end still
    checks every byte)."""
    if digest is not None:
        return "n" + digest.key
    return "nt" + hashlib.sha256(repr(mtime).encode()).hexdigest()[:15]


@functools.lru_cache(maxsize=256)  # (once per request: a hash each time costs a microsecond)
def writer_tag(writer: bytes) -> str:
    """Eight hex digits standing for a writer (``access.Grant.writer``): partial files
    are counted per writer, and one writer's keys never meet another's."""
    return hashlib.sha256(b"muxserver writer " + writer).hexdigest()[:8]


def writer_of(partial: str) -> str:
    """The writer tag in a partial file's name (or key); "" for one from before keys
    had it."""
    fields = partial.rsplit("-", 3)
    return fields[1] if len(fields) == 4 and len(fields[1]) == 8 else ""


def claim_name(key: str) -> str:
    """The name a partial file has while a request writes it (``Root._claim_partial``).
    A temporary file's name with the key after a dot: a server that died meanwhile
    turns it back into the partial file at its next start."""
    return f"{TEMP_PREFIX}claim.{key}"


def _leaf_key(leaf: str) -> str:
    """The part of a partial file's key that names the file (fixed length, any name)."""
    return hashlib.sha256(leaf.encode()).hexdigest()[:24]


# ------------------------------------------------------------ the start-up sweep


def _sweep_dir(fd: int, where: str, stack: list[tuple[int, str]], expired_before: float,
               kept: list[tuple[str, str, float, int]]) -> int:
    """Sweep one directory (``where`` below the root); return the files removed, add the
    partial files kept to ``kept`` as (directory, name, mtime, size) and subdirectories
    to ``stack``."""
    removed = 0
    with os.scandir(fd) as entries:
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((os.open(name, _O_DIR, dir_fd=fd),
                                  f"{where}/{name}" if where else name))
                elif not name.startswith(RESERVED_PREFIX) or entry.is_symlink():
                    continue
                elif name.startswith(TEMP_PREFIX) and "." in name[len(TEMP_PREFIX):]:
                    # a resumable upload's temporary file: from now on a partial file
                    partial = PARTIAL_PREFIX + name[len(TEMP_PREFIX):].split(".", 1)[1]
                    st = entry.stat(follow_symlinks=False)
                    os.replace(name, partial, src_dir_fd=fd, dst_dir_fd=fd)
                    removed += _keep_or_expire(fd, where, partial, st, expired_before, kept)
                elif name.startswith(TEMP_PREFIX):
                    os.unlink(name, dir_fd=fd)
                    removed += 1
                elif name.startswith(PARTIAL_PREFIX):
                    st = entry.stat(follow_symlinks=False)
                    removed += _keep_or_expire(fd, where, name, st, expired_before, kept)
            except OSError:
                continue  # vanished or unreadable: nothing to clean
    return removed


def _keep_or_expire(fd: int, where: str, partial: str, st: os.stat_result,
                    expired_before: float, kept: list[tuple[str, str, float, int]]) -> int:
    """Remove a partial file untouched since ``expired_before`` (return 1), else note it
    in ``kept`` (return 0)."""
    if st.st_mtime < expired_before:
        os.unlink(partial, dir_fd=fd)
        return 1
    kept.append((where, partial, st.st_mtime, st.st_size))
    return 0


def unlink_quietly(name: str, parent: int) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass  # already gone
