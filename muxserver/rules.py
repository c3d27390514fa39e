"""What each request does, once for every wire: reads and changes checked against
the request's grant, a get's digest (the helper thread hashes a file never hashed, the
loop never does) and body (small ones from memory, bigger ones by sendfile), listings
in pages, and uploads from their first byte to their commit.

:class:`RequestRules` is the session (``session.py``) with these rules; ``native.py`` and
the HTTP side (``http_codec.py`` and the modules it leads to) derive from it and only
translate their wires.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Generator, Iterator

from mypy_extensions import mypyc_attr

from .access import DELETE, LINK, READ, TOKEN, WRITE, Grant
from .buffers import FileRegion
from .digests import SHA256, Digest
from .hashing import READ_SIZE, HashJob
from .lifecycle import Event, Work
from .listings import LeftOutLog, passed_through
from .names import printable
from .storage import (
    Entry,
    LeftOut,
    OpenFile,
    StorageError,
    Upload,
    partial_key,
    split_name,
    writer_tag,
)
from .locks import Lock, LockConflict, LocksBusy, TooManyLocks
from .shares import MAX_EXPIRY, Link
from .transport import ChannelState, Transport
from .units import format_bytes

log = logging.getLogger("muxserver")

from .session import Job, Services, Session, Transfer


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
#: RequestRules.hashed_at_once): one helper step's worth, the size the loop once hashed
#: per turn.
HASH_AT_ONCE = READ_SIZE


def _nothing() -> Generator[Entry, None, None]:
    """A listing of nothing, begun (as iter_entries' are)."""
    yield None


#: The rights each operation needs, for every wire (access.py says what a grant holds):
#: a tus creation, piece or offset is a put, and so is asking what is held of an upload;
#: removing, moving and locking also need the sight of names (require_sight: a writer
#: that may not read is never told which names exist).
RIGHTS_NEEDED: dict[str, tuple[str, ...]] = {
    "get": (READ,), "stat": (READ,), "list": (READ,),
    "put": (WRITE,), "mkdir": (WRITE,),
    "rm": (DELETE,), "mv": (DELETE, WRITE), "cp": (READ, WRITE),
    "props": (WRITE,), "lock": (WRITE,),
}
NEEDS_SIGHT = frozenset({"rm", "mv", "lock"})


# (Compiled in the compiled build, and inherited from by HTTP's plain Python sessions:
# see Session.)
@mypyc_attr(allow_interpreted_subclasses=True)
class RequestRules(Session):
    """The rules of every request, whatever its wire."""

    def __init__(self, services: Services, channel: Transport) -> None:
        super().__init__(services, channel)
        self.upload: Upload | None = None  # RECEIVING ... VERIFYING: the file it goes to
        self.file_hash: FileHash | None = None  # HASHING: the helper hashing a get's file
        #: the lock tokens the request submits (WebDAV's If header; none on other wires)
        self.lock_tokens: frozenset[str] = frozenset()

    def check_rights(self, op: str, what: str) -> None:
        """Refuse (StorageError "not_permitted") an operation the request's grant does not
        cover (RIGHTS_NEEDED), saying ``what`` was refused and why."""
        for right in RIGHTS_NEEDED[op]:
            self.require(right, what)
        if op in NEEDS_SIGHT:
            self.require_sight(what)

    # -- the grant's folder: a user, a token or a link limited to one sees it as the root

    def inside(self, name: str) -> str:
        """The name below the served root of ``name`` as the request gives it, below
        the grant's folder (access.Grant.scope): what is above that folder does not
        exist for the request. The storage walks the joined name component by
        component from the root's descriptor, refusing ``..`` and symbolic links, so no
        name leads out of the folder. A link to one file reaches that file only."""
        grant = self.grant
        if grant.only and name != grant.only:
            raise StorageError("not_found", f"no such file {name!r}")
        if not grant.scope:
            return name
        split_name(name, allow_root=True)  # (a name's own fault is told as it was given)
        if self.blind:  # (a drop box walks beside what is taken: but not out of its folder)
            self._scope_is_there()
        joined = f"{grant.scope}/{name}" if name else grant.scope
        try:
            split_name(joined, allow_root=True)
        except StorageError:  # (the folder's own length or depth: never named)
            raise StorageError("bad_name", f"name {name[:100]!r} refused: too long or nested "
                                           "too deep below this account's folder") from None
        return joined

    def _scope_is_there(self) -> None:
        """The grant's folder is still a folder (a drop box writer's walk would go beside
        a file put in its place, out of the folder; it must not)."""
        try:
            os.close(self.services.root.open_dir(split_name(self.grant.scope)))
        except StorageError:
            raise StorageError("not_found", "the shared folder is gone") from None

    def outside(self, name: str) -> str:
        """``name`` below the served root, as the request's grant sees it."""
        scope = self.grant.scope
        if not scope or not name.startswith(scope):
            return name
        return "" if name == scope else name[len(scope) + 1:] if name[len(scope)] == "/" else name

    def scoped(self) -> "ScopedErrors":
        """Storage errors told as the grant sees the names: the folder it is limited to
        never appears in what it is told (``with self.scoped(): ...``)."""
        return ScopedErrors(self.grant)

    # -- what requests read, checked against the grant

    def open_download(self, name: str, algorithm: str = SHA256) -> OpenFile:
        self.check_rights("get", f"reading {name!r}")
        with self.scoped():
            return self.services.root.open_file(self.inside(name), algorithm)

    def describe(self, name: str) -> dict[str, Any]:
        self.check_rights("stat", f"stat of {name!r}")
        with self.scoped():
            info = self.services.root.stat(self.inside(name))
        info["name"] = self.outside(info["name"])
        return info

    def entries(self, path: str, recursive: bool = False) -> Generator[Entry, None, None]:
        self.check_rights("list", f"listing {path or '/'!r}")
        try:
            with self.scoped():
                entries = self.services.root.iter_entries(self.inside(path), recursive)
        except StorageError as exc:
            if (exc.code != "not_found" or path or not self.grant.scope
                    or self.grant.principal[:1] == (LINK,)):
                raise
            entries = _nothing()  # (an account's folder not made yet: empty, not missing)
        if not self.grant.scope:
            return entries
        return passed_through(entries, self._entry_outside, guard=self.scoped)

    def _entry_outside(self, entry: Entry) -> Entry:
        """An entry named as the request's grant sees it."""
        if isinstance(entry, LeftOut):
            return LeftOut(self.outside(entry.name), entry.why)
        if entry is not None:
            entry["name"] = self.outside(entry["name"])
        return entry

    # -- what requests change, checked against the grant

    def make_directory(self, name: str, *, parents: bool) -> bool:
        """Make ``name``; True if it was made. A writer that may not read is told it
        was, whatever was there: its folders go beside what is not one (storage/root.py)."""
        self.check_rights("mkdir", f"making the directory {name!r}")
        self.check_unlocked(name, membership=True)
        with self.scoped():
            made = self.services.root.make_dir(self.inside(name), parents=parents,
                                               beside_if_taken=self.blind)
        if made:
            log.info("%s %smade the directory %s", self.who, self.wire,
                     printable(self.inside(name)),
                     extra={"event": "changed", "conn": self.channel.id})
        return made or self.blind

    def start_removal(self, name: str, *, recursive: bool, done: Callable[[int], None],
                      failed: Callable[[StorageError], None]) -> None:
        """Remove ``name`` as a job (a tree goes in steps); then ``done(count)``."""
        self.check_rights("rm", f"removing {name!r}")
        if name == "" and self.grant.scope:
            raise StorageError("bad_name", "the top folder itself cannot be removed")
        self.check_unlocked(name, membership=True, tree=True)
        with self.scoped():
            steps = self.services.root.remove_in_steps(self.inside(name), recursive=recursive)
        self.start_job(self._removal(self.inside(name), steps, done, failed), label="removing")

    def _removal(self, name: str, steps: Iterator[int], done: Callable[[int], None],
                 failed: Callable[[StorageError], None]) -> Job:
        removed = 0
        try:
            with self.scoped():
                for removed in steps:
                    yield
        except StorageError as exc:
            failed(exc)
            return
        self.locks_end(name)
        log.info("%s %sremoved %s (%d %s)", self.who, self.wire, printable(name),
                 removed, "entry" if removed == 1 else "entries",
                 extra={"event": "changed", "conn": self.channel.id})
        done(removed)

    def move_entry(self, src: str, dst: str, *, overwrite: bool) -> bool:
        """Rename ``src`` to ``dst``; True if a file was replaced."""
        self.check_rights("mv", f"moving {src!r} to {dst!r}")
        if self.grant.scope and "" in (src, dst):
            raise StorageError("bad_name", "the top folder itself cannot be moved")
        self.check_unlocked(src, membership=True, tree=True)
        self.check_unlocked(dst, membership=True, tree=True)
        try:
            with self.scoped():
                replaced = self.services.root.move(self.inside(src), self.inside(dst),
                                                   overwrite=overwrite,
                                                   allow_overwrite=self.grant.replace)
        except StorageError as exc:
            raise self.explained(exc, dst) from None
        self.locks_end(self.inside(src))
        log.info("%s %smoved %s to %s", self.who, self.wire,
                 printable(self.inside(src)), printable(self.inside(dst)),
                 extra={"event": "changed", "conn": self.channel.id})
        return replaced

    # -- WebDAV's locks (locks.py): a locked name changes only for its lock's holder

    def check_unlocked(self, name: str, *, membership: bool = False,
                       tree: bool = False) -> None:
        """Refuse (StorageError "locked") a change of ``name`` that a lock held by
        another forbids: a lock on it or (depth infinity) above it; with
        ``membership`` (it is made, replaced or removed), a lock on its folder; with
        ``tree`` (a folder removed or replaced), a lock on anything below it. A lock
        lets through a request that submits its token from the principal that took it."""
        table = self.services.locks
        if table.empty or self.blind:
            # (a writer that may not read only adds names, beside what is there, never
            # replacing or removing: locks, which keep what exists, do not stop it, and
            # their answer would tell it which names exist; it cannot take one either)
            return
        inside = self.inside(name)
        held = table.covering(inside)
        if membership and inside:
            folder = self._folder_receiving(inside)
            held += [lock for lock in table.covering(folder) if lock.root == folder]
        if tree:
            held += table.below(inside)
        for lock in held:
            if not self.holds(lock):
                whose = ("" if lock.root == inside
                         else f" (the lock of {self.lock_root_seen(lock) or '/'!r})")
                raise StorageError("locked", f"{name or '/'!r} is locked{whose}: only the "
                                             "holder of its lock may change it")

    def locks_end(self, inside: str) -> None:
        """``inside`` (below the served root) was removed or moved away: its locks end.
        The change is made: a busy table leaves them to their timeouts, and says so."""
        try:
            self.services.locks.moved_or_removed(inside)
        except LocksBusy as exc:
            log.warning("%s %sthe locks of %s stay until they time out: %s", self.who,
                        self.wire, printable(inside or "/"), exc.message,
                        extra={"event": "refused", "conn": self.channel.id})

    def _folder_receiving(self, inside: str) -> str:
        """The folder that gains or loses a member when ``inside`` is made or removed:
        its parent, or the nearest folder above it that exists (an upload makes the
        missing ones: the first of them is the new member)."""
        folder = inside.rpartition("/")[0]
        while folder:
            try:
                self.services.root.stat(folder)
                return folder
            except StorageError:
                folder = folder.rpartition("/")[0]
        return folder

    def holds(self, lock: Lock) -> bool:
        """The request submits ``lock``'s token, and comes from the one who took it."""
        return lock.token in self.lock_tokens and lock.principal == self.principal_name

    @property
    def principal_name(self) -> str:
        """Who the request is, as a lock records it ('' on a server without accounts)."""
        return ":".join(self.grant.principal)

    def take_lock(self, name: str, *, infinite: bool, exclusive: bool, owner: str,
                  timeout: int) -> Lock:
        """A new lock on ``name`` (which may not exist yet: see create_empty).
        StorageError "locked" if another lock is in its way."""
        self.check_rights("lock", f"locking {name!r}")
        try:
            lock = self.services.locks.take(self.inside(name), infinite=infinite,
                                            exclusive=exclusive, owner=owner,
                                            principal=self.principal_name, timeout=timeout,
                                            holder=self.principal_name
                                            or f"address {self.channel.peer_host}")
        except LockConflict:
            raise StorageError("locked", f"{name or '/'!r} is locked by another") from None
        except TooManyLocks as busy:
            raise StorageError("server_busy", str(busy)) from None
        except ValueError as refused:  # (an owner too long to keep)
            raise StorageError("bad_request", str(refused)) from None
        log.info("%s %slocked %s (%s, %s s)", self.who, self.wire, printable(self.inside(name)),
                 "exclusive" if exclusive else "shared", timeout,
                 extra={"event": "changed", "conn": self.channel.id})
        return lock

    def own_lock(self, token: str, name: str) -> Lock:
        """The live lock ``token`` covering ``name``, taken by this request's principal
        (to refresh or unlock); StorageError otherwise."""
        lock = self.services.locks.find(token)
        if lock is None or not lock.covers(self.inside(name)):
            raise StorageError("bad_request", f"no lock {token!r} on {name or '/'!r} (it "
                                              "ended, or the server started again)")
        if lock.principal != self.principal_name:
            raise StorageError("not_permitted", "the lock was taken by another")
        return lock

    def refresh_lock(self, token: str, name: str, timeout: int) -> Lock:
        self.own_lock(token, name)
        lock = self.services.locks.refresh(token, timeout)
        if lock is None:
            raise StorageError("bad_request", f"the lock {token!r} has ended")
        return lock

    def release_lock(self, token: str, name: str) -> None:
        lock = self.own_lock(token, name)
        self.services.locks.release(token)
        log.info("%s %sunlocked %s", self.who, self.wire, printable(lock.root or "/"),
                 extra={"event": "changed", "conn": self.channel.id})

    def lock_root_seen(self, lock: Lock) -> str:
        """The name of ``lock``'s root as the request's grant sees it: a lock taken
        above the grant's folder covers all of it, and is said to be on its top."""
        scope = self.grant.scope
        if scope and not (lock.root == scope or lock.root.startswith(scope + "/")):
            return ""
        return self.outside(lock.root)

    def locks_on(self, name: str) -> list[Lock]:
        """The live locks that cover ``name`` (what a PROPFIND's lockdiscovery says)."""
        table = self.services.locks
        return [] if table.empty else table.covering(self.inside(name))

    def create_empty(self, name: str) -> None:
        """An empty file at ``name``, which does not exist (a LOCK of an unmapped name:
        RFC 4918, 7.3), stored as every upload is; its folder must exist."""
        self.check_rights("put", f"storing {name!r}")
        self.check_unlocked(name, membership=True)
        try:
            with self.scoped():
                upload = self.services.root.begin_upload(
                    self.inside(name), 0, None, overwrite=False, allow_overwrite=False,
                    make_parents=False, writer=writer_tag(self.grant.writer))
        except StorageError as exc:
            raise self.explained(exc, name) from None
        upload.commit(None)
        log.info("%s %smade the empty file %s", self.who, self.wire,
                 printable(self.inside(name)), extra={"event": "changed", "conn": self.channel.id})

    # -- WebDAV's properties (storage/properties.py)

    def properties_of(self, name: str, *, dead: bool) -> dict[str, Any]:
        """What ``describe`` says of ``name``, and with ``dead`` its dead properties."""
        self.check_rights("stat", f"properties of {name!r}")
        with self.scoped():
            info = self.services.root.described(self.inside(name), dead=dead)
        info["name"] = self.outside(info["name"])
        return info

    def members_properties(self, folder: str, names: list[str], *,
                           dead: bool) -> list[dict[str, Any] | None]:
        """``properties_of`` each of ``names``, members of ``folder`` as a listing of
        it named them (None: gone since)."""
        self.check_rights("stat", f"properties of {folder!r}")
        leaves = [name.rpartition("/")[2] for name in names]
        with self.scoped():
            found = self.services.root.described_members(self.inside(folder), leaves,
                                                         dead=dead)
        for info, name in zip(found, names):
            if info is not None:
                info["name"] = name
        return found

    def change_properties(self, name: str, changes: list[tuple[str, str | None]]) -> None:
        self.check_rights("props", f"changing the properties of {name!r}")
        self.check_unlocked(name)
        with self.scoped():
            self.services.root.change_properties(self.inside(name), changes)

    # -- COPY, and MOVE onto a folder (WebDAV): jobs, a bounded step at a time

    def start_copy(self, src: str, dst: str, *, tree: bool, overwrite: bool,
                   done: Callable[[bool, list[tuple[str, str]]], None],
                   failed: Callable[[StorageError], None]) -> None:
        """Copy ``src`` (a file, or a folder: with ``tree`` all it holds, else itself
        only) to ``dst``, whose folder must exist. An existing ``dst`` is replaced only
        with ``overwrite`` (else "exists") and where this request may replace (and, for
        a folder, remove). Then ``done(replaced, [(name, why) of entries not copied])``."""
        self.check_rights("cp", f"copying {src!r} to {dst!r}")
        if src == dst or dst.startswith(src + "/") or (src == "" and dst):
            raise StorageError("bad_request", f"cannot copy {src or '/'!r} into itself")
        if dst == "" or src.startswith(dst + "/"):  # (replacing it would remove the source)
            raise StorageError("bad_request", f"cannot copy {src!r} onto {dst or '/'!r}, "
                                              "which holds it")
        source = self.describe(src)
        if source["type"] not in ("file", "dir"):
            raise StorageError("not_a_file", f"{src!r} is not a file or folder")
        target = self._existing_or_none(dst)
        self.check_unlocked(dst, membership=True, tree=True)
        folders = source["type"] == "dir" or (target is not None and target["type"] == "dir")
        if target is not None:
            self._may_replace(dst, overwrite, folders)
        self.start_job(self._copy(src, dst, source["type"] == "dir", tree, target, done, failed),
                       label="copying")

    def _existing_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self.describe(name)
        except StorageError as exc:
            if exc.code != "not_found":
                raise
            return None

    def _may_replace(self, name: str, overwrite: bool, folders: bool) -> None:
        """An existing ``name`` is to be replaced: refused unless the request asked
        (``overwrite``) and may (a folder in the way is removed: that needs delete)."""
        if not overwrite:
            raise StorageError("exists", f"{name!r} already exists")
        if not self.grant.replace:
            raise self.explained(StorageError("overwrite_refused", ""), name)
        if folders:
            self.check_rights("rm", f"replacing {name!r}")

    def _copy(self, src: str, dst: str, folder: bool, tree: bool,
              target: dict[str, Any] | None, done: Callable[[bool, list[tuple[str, str]]], None],
              failed: Callable[[StorageError], None]) -> Job:
        root = self.services.root
        skipped: list[tuple[str, str]] = []
        writer = writer_tag(self.grant.writer)
        try:
            with self.scoped():
                if target is not None and (folder or target["type"] == "dir"):
                    yield from self._remove_steps(dst)
                    target_file = False
                else:
                    target_file = target is not None
                if not folder:
                    for _ in root.copy_file_in_steps(self.inside(src), self.inside(dst),
                                                     overwrite=target_file,
                                                     allow_overwrite=self.grant.replace,
                                                     writer=writer):
                        yield
                else:
                    root.make_dir(self.inside(dst), parents=False)
                    root.copy_folder_properties(self.inside(src), self.inside(dst))
                    if tree:
                        yield from self._copy_tree(src, dst, skipped, writer)
        except StorageError as exc:
            failed(exc)
            return
        log.info("%s %scopied %s to %s", self.who, self.wire, printable(self.inside(src)),
                 printable(self.inside(dst)), extra={"event": "changed", "conn": self.channel.id})
        done(target is not None, skipped)

    def _copy_tree(self, src: str, dst: str, skipped: list[tuple[str, str]],
                   writer: str) -> Job:
        """What the folder ``src`` holds, copied below ``dst`` (made already)."""
        root = self.services.root
        top = self.inside(src)
        entries = root.iter_entries(top, recursive=True)
        met = 0
        try:
            for entry in entries:
                met += 1
                if isinstance(entry, LeftOut):
                    skipped.append((self.outside(entry.name), entry.why))
                elif entry is not None:
                    rel = entry["name"][len(top) + 1 if top else 0:]
                    to = self.inside(f"{dst}/{rel}" if dst else rel)
                    if entry["type"] == "dir":
                        root.make_dir(to, parents=False)
                        root.copy_folder_properties(entry["name"], to)
                    elif entry["type"] == "file":
                        for _ in root.copy_file_in_steps(entry["name"], to, overwrite=False,
                                                         allow_overwrite=False, writer=writer):
                            yield
                    else:
                        skipped.append((self.outside(entry["name"]), "a symbolic link or "
                                        "special file: never followed, not copied"))
                    yield
                elif met % 256 == 0:
                    yield
        finally:
            entries.close()

    def _remove_steps(self, name: str) -> Job:
        """Remove ``name`` (a file or a whole folder) as steps of a job under way."""
        for _ in self.services.root.remove_in_steps(self.inside(name), recursive=True):
            yield
        self.locks_end(self.inside(name))

    def start_move(self, src: str, dst: str, *, overwrite: bool,
                   done: Callable[[bool], None], failed: Callable[[StorageError], None]) -> None:
        """Move ``src`` to ``dst``; a folder in the way (or a file in the way of a
        folder) is removed first, with ``overwrite`` and where this request may. Then
        ``done(replaced)``."""
        self.check_rights("mv", f"moving {src!r} to {dst!r}")
        source = self.describe(src)
        target = self._existing_or_none(dst) if src != dst else None
        if target is None or (source["type"] != "dir" and target["type"] != "dir"):
            done(self.move_entry(src, dst, overwrite=overwrite))
            return
        if dst.startswith(src + "/") or src.startswith(dst + "/"):
            raise StorageError("bad_request", f"cannot move {src!r} onto {dst!r}: one holds "
                                              "the other")
        self.check_unlocked(src, membership=True, tree=True)
        self.check_unlocked(dst, membership=True, tree=True)
        self._may_replace(dst, overwrite, folders=True)

        def move() -> Job:
            try:
                with self.scoped():
                    yield from self._remove_steps(dst)
                self.move_entry(src, dst, overwrite=False)
            except StorageError as exc:
                failed(exc)
                return
            done(True)

        self.start_job(move(), label="moving")

    # -- share links (shares.py): made, listed and revoked the same way for every wire

    def make_link(self, name: str, *, write: bool, lifetime: float) -> tuple[Link, str]:
        """A link to ``name`` (a file or folder; with ``write``, a drop box into a
        folder) for ``lifetime`` seconds: (the link, its capability for the URL). It
        can open no more than the request may: read needs read, a drop box write."""
        shares = self.services.access.shares
        if shares is None:
            raise StorageError("not_permitted", "this server needs no credentials: its "
                                                "address is the link")
        if self.grant.principal[:1] == (LINK,):
            raise StorageError("not_permitted", "a link cannot make links")
        if not 0 < lifetime <= MAX_EXPIRY:
            raise StorageError("bad_request", "a link lives at least a second and at most "
                                              "a year")
        if write:
            self.require(WRITE, f"a drop box link to {name!r}")
        info = (self.describe(name) if name or self.grant.scope  # (needs read; file or folder)
                else {"type": "dir"} if self.grant.allows(READ) else self.describe(name))
        if info["type"] not in ("file", "dir") or (write and info["type"] != "dir"):
            raise StorageError("not_a_directory" if write else "not_a_file",
                               f"{name!r} is not a {'folder' if write else 'file or folder'}")
        try:
            link, capability = shares.make(self.inside(name), write=write,
                                           file=info["type"] == "file", lifetime=lifetime,
                                           by=self.link_maker)
        except OSError as exc:
            raise StorageError("io_error", f"cannot keep the link: {exc.strerror}") from None
        except ValueError as refused:  # (too many links of this maker)
            raise StorageError("not_permitted", str(refused)) from None
        said = (self.who, self.wire, printable(link.path or "/"),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(link.expires)), link.id)
        extra = {"event": "changed", "conn": self.channel.id}
        if write:
            log.info("%s %sshared %s as a drop box until %s (link %s)", *said, extra=extra)
        else:
            log.info("%s %sshared %s until %s (link %s)", *said, extra=extra)
        return link, capability

    @property
    def link_maker(self) -> str:
        """Who made a link, as the book says (the grant's principal, not a secret)."""
        principal = self.grant.principal  # (a token's digest: its first 16 hex digits)
        return f"{principal[0]}:{principal[1][:16] if principal[0] == TOKEN else principal[1]}" \
            if len(principal) > 1 else ""

    def my_links(self) -> list[dict[str, Any]]:
        """The links this request's account made (every link, for one that may do
        everything everywhere), names as it sees them."""
        shares = self.services.access.shares
        if shares is None:
            return []
        every = self.grant.admin
        found = []
        scope = self.grant.scope
        for link in shares.links(None if every else self.link_maker):
            if scope and not (link.path == scope or link.path.startswith(scope + "/")):
                continue  # (made when this account's folder was another: not shown)
            fields = link.fields()
            fields["name"] = self.outside(link.path)
            fields["link"] = shares.capability(link)
            found.append(fields)
        return found[-1000:]  # (the newest thousand: a reply stays bounded)

    def revoke_link(self, link_id: str) -> None:
        shares = self.services.access.shares
        if shares is None or not any(mine["id"] == link_id for mine in self.my_links()):
            link = shares.find(link_id) if shares is not None else None
            if link is not None and shares is not None and shares.revoked(link_id) and (
                    self.grant.admin or link.by == self.link_maker):
                raise StorageError("not_found", f"the link {link_id!r} was revoked already")
            raise StorageError("not_found", f"no link {link_id!r} of yours")
        try:
            shares.revoke(link_id)
        except OSError as exc:
            raise StorageError("io_error", f"cannot revoke the link: {exc.strerror}") from None
        log.info("%s %srevoked the link %s", self.who, self.wire, link_id,
                 extra={"event": "changed", "conn": self.channel.id})

    # -- listings

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
                elif entry is not None:  # (None: work that shows nothing, counted below)
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

    # -- a get's digest and body (hashed by the helper thread, never on the loop)

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
        if self.channel.state is not ChannelState.OPEN:
            # The connection is closing (it timed out on the bytes it already owed): no
            # reply may follow the one that said so. The file is let go, unsent.
            if file_hash.waiting is not None:
                file_hash.waiting.close()
            file_hash.close()
            return
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

    def download_sent(self, transfer: Transfer) -> None:
        """The last byte of a get's body went to the socket."""
        if transfer.digest is None and self.file_hash is not None:
            self.file_hash.body_sent = True  # done when its digest has followed it
            return
        self.transfer_done(transfer, transfer.total, transfer.digest)
        if self.services.stopping and not self.busy:
            self.close_for_stop()

    # -- uploads

    def check_size(self, size: int) -> None:
        """The largest file the server takes (StorageError "too_large"), for every way
        a size becomes known: declared, in pieces, or counted as a chunked body arrives."""
        limit = self.limits.max_file_size
        if size > limit:
            raise StorageError("too_large", f"{size} bytes is over the limit of {limit}")

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
        self.check_rights("put", f"storing {name!r}")
        self.check_size(offset + length if total is None else total)
        self.check_unlocked(name, membership=True)
        try:
            with self.scoped():
                upload = self.services.root.begin_upload(
                    self.inside(name), length, expected, overwrite=overwrite,
                    allow_overwrite=self.grant.replace, mtime=mtime, offset=offset, key=key,
                    total=total, beside_if_taken=self.blind, algorithm=algorithm,
                    writer=writer_tag(self.grant.writer))
        except StorageError as exc:
            raise self.explained(exc, name) from None
        if offset and total is None:  # (the pieces of a tus upload: not each one)
            log.info("%s %sresumed %s at %s", self.who, self.wire, printable(name),
                     format_bytes(offset), extra={"event": "resumed", "conn": self.channel.id})
        self.upload = upload
        self.work.move(Event.UPLOAD_OPENED)
        transfer = self.active or self.begin_transfer("put", name)
        transfer.total, transfer.received = upload.size, upload.offset
        return upload

    # -- uploads kept for later: resumed, or sent in pieces (the same partial files)

    def held(self, name: str, key: str, size: int) -> int:
        """How much of this writer's upload ``key`` of ``name`` the server holds.
        StorageError "not_found" when nothing, "server_busy" while a request writes it."""
        self.check_rights("put", f"resuming {name!r}")
        with self.scoped():
            return self.services.root.held(self.inside(name), key, size,
                                           beside_if_taken=self.blind)

    def begin_in_pieces(self, name: str, size: int, key: str, *, overwrite: bool) -> None:
        """An upload that will come in pieces (tus): the target would be taken, and an
        empty partial file is kept for it, counted as the writer's (partials.py)."""
        self.check_rights("put", f"starting an upload of {name!r}")
        self.check_size(size)
        self.check_unlocked(name, membership=True)
        root = self.services.root
        try:
            with self.scoped():
                root.check_room(self.inside(name), size, overwrite=overwrite,
                                allow_overwrite=self.grant.replace, beside_if_taken=self.blind)
        except StorageError as exc:
            raise self.explained(exc, name) from None
        with self.scoped():
            root.create_partial(self.inside(name), key, beside_if_taken=self.blind)

    def give_up(self, name: str, key: str) -> None:
        """This writer gives up its upload ``key`` of ``name``: its bytes go."""
        self.check_rights("put", f"giving up the upload of {name!r}")
        with self.scoped():
            self.services.root.drop_partial(self.inside(name), key, beside_if_taken=self.blind)

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
            self.body_failed(upload, exc)
            return
        if self.active is not None:
            self.active.received = upload.offset + upload.received

    def body_failed(self, upload: Upload, exc: StorageError) -> None:
        """Writing the body to its file failed: the upload ends (a file in pieces keeps
        its earlier pieces) and the codec answers the error."""
        self.end_upload()
        upload.fail()
        self.upload_failed(upload, exc)

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
            self.active.name = upload.name  # (where it went: a drop box's may differ)
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

    # -- the end

    def connection_lost(self) -> None:
        self.interrupt_upload()
        if self.file_hash is not None:
            self.file_hash.close()  # (its get fails below: the active one, or one sending)
            self.file_hash = None
        super().connection_lost()


class ScopedErrors:
    """RequestRules.scoped: a StorageError raised inside is rewritten so that the folder
    a grant is limited to never shows. (A class rather than a generator: it runs around
    every request, and entering a generator-based context manager costs several times
    as much.)"""

    __slots__ = ("grant",)

    def __init__(self, grant: Grant) -> None:
        self.grant = grant

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: Any) -> None:
        if not isinstance(exc, StorageError):
            return
        scope = self.grant.scope
        if not scope:
            return
        message = exc.message
        if f"{scope!r}" in message or f"'{scope}'" in message:  # (the folder itself)
            message = ("the shared folder is gone" if self.grant.principal[:1] == (LINK,)
                       else "this account's folder is not on the server (yet)")
        for quote in "'\"":
            message = message.replace(quote + scope + "/", quote)
        raise StorageError(exc.code, message) from None
