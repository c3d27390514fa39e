"""The served root: which names are allowed, and how files are read, listed and stored.

Every storage rule of muxserver lives here, so it can be read (and audited) in one place:

* **Names** follow the rules of ``names.py`` (docs/PROTOCOL.md section 3); a name
  that breaks one is refused with ``bad_name`` before anything is touched.
* **Resolution** never hands a path string to the kernel. The root is opened once as
  a directory descriptor and every name is walked one component at a time with
  ``openat(dir_fd, component, O_NOFOLLOW)``, so neither ``..`` nor a symbolic link
  (leaf or middle, or one swapped in while an upload runs) can lead outside the root.
* **Uploads** go to a unique temporary file in the target directory (``O_EXCL``,
  explicit mode), are hashed as they are written, then ``fsync``-ed, checked against
  the declared SHA-256, moved onto the final name atomically (``atomic.py``) and the
  directory is ``fsync``-ed. Only
  then is the upload reported done. A failed or interrupted upload removes its
  temporary file, so a final name is always absent, the old file, or the new file.
* **Special files** (FIFO, device, socket) are refused after an ``lstat`` and an
  ``fstat`` of a descriptor opened with ``O_NONBLOCK``, so they never block the loop.

Storage calls are ordinary blocking file-system calls, made from the event loop like
pyftpdlib does; each one is short (no call here reads or writes a whole file).
This module knows nothing about sockets or frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import secrets
import stat
import time
from typing import Any, Callable, Generator, Iterator

from .atomic import publish, rename_new
from .digests import SHA256, Digest, new_hasher
from .hashcache import HashCache
from .hashing import HashJob
from .names import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    RESERVED_PREFIX,
    BadName,
    component_problem,
    printable,
)
from .names import split_name as _split_name
from .partials import Partial, PartialFiles

log = logging.getLogger("muxserver")

TEMP_PREFIX = RESERVED_PREFIX + "tmp-"  # an upload in progress
PARTIAL_PREFIX = RESERVED_PREFIX + "part-"  # what an interrupted resumable upload left
FILE_MODE = 0o644  # before the umask, like files created by cp or curl -O
DIR_MODE = 0o755
ASYNC_HASH_FROM = 4 * 1024 * 1024  # uploads this big are hashed by the helper thread
#: Without --partial-budget, partial files may use this fraction (1/N) of the space that
#: was free when the server started.
PARTIAL_SHARE_OF_FREE_SPACE = 4
#: Uploads this big check the free space before they start (one statvfs call).
PARTIAL_PREFLIGHT_FROM = 1024 * 1024
# Temporary names: random per process, then counted (O_EXCL guards against any clash).
_RUN_ID = secrets.token_hex(4)
_TEMP_IDS = itertools.count()


def _new_run_id() -> None:
    """A forked worker (workers.py) draws its own: two processes counting from the same
    start would pick the same temporary names, and one upload would fail on O_EXCL."""
    global _RUN_ID, _TEMP_IDS
    _RUN_ID, _TEMP_IDS = secrets.token_hex(4), itertools.count()


os.register_at_fork(after_in_child=_new_run_id)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def split_name(name: str, *, allow_root: bool = False) -> list[str]:
    """names.split_name, refusing with StorageError("bad_name") like every storage call."""
    try:
        return _split_name(name, allow_root=allow_root)
    except BadName as exc:
        raise StorageError("bad_name", exc.message) from None


class StorageError(Exception):
    """A request the root cannot serve; ``code`` is one of protocol.ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class LeftOut:
    """An entry a listing met on disk and does not show: its name breaks a rule of
    names.py (another program put it there), so no request could name it."""

    name: str  # below the root, printable (escapes for what is not)
    why: str


#: What a listing yields: an entry's fields (``_entry``), or one it leaves out.
Entry = dict[str, Any] | LeftOut


# --------------------------------------------------------------------- the root


@dataclasses.dataclass(slots=True)
class OpenFile:
    """A regular file opened for a download."""

    fd: int
    size: int
    mtime: float
    algorithm: str  # the digest the download announces (digests.py)
    digest: Digest | None  # None: not known yet, the caller has it hashed (session.py)
    st: os.stat_result

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_exactly(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, in one read; StorageError if the file
        cannot be read or changed size meanwhile."""
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            raise StorageError("io_error", f"cannot read the file: {exc.strerror}") from None
        if len(data) != length:
            raise StorageError("io_error", "the file changed while being read")
        return data


class Root:
    """The served directory, held open as a descriptor for the server's lifetime."""

    def __init__(self, path: str | os.PathLike[str], partial_ttl: float = 24 * 3600,
                 partial_budget: int | None = None, budget_shares: int = 1,
                 partial_count: int = 1 << 62, partials_per_writer: int = 1 << 62) -> None:
        """``budget_shares``: the processes serving this root (--workers); each keeps its
        share of the partial files' budget and counts, so that together they keep to
        all of it."""
        self.path = os.path.realpath(path)
        try:
            self.dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError("not_found", f"cannot serve {self.path}: {exc.strerror}") from None
        self.hashes = HashCache()
        # Partial files this server knows of (partials.py): found by the start-up sweep
        # or kept by an interrupted upload; the server calls expire_partials() when the
        # first one is due.
        if partial_budget is None:
            partial_budget = self.free_space() // PARTIAL_SHARE_OF_FREE_SPACE
        self.partials = PartialFiles(partial_ttl, partial_budget // budget_shares,
                                     max(1, partial_count // budget_shares),
                                     max(1, partials_per_writer // budget_shares))
        self.on_partial_kept: Callable[[], None] | None = None

    def free_space(self) -> int:
        """Bytes an unprivileged writer may still use on the root's file system."""
        st = os.statvfs(self.dir_fd)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    # -- walking

    def open_dir(self, parts: list[str], *, create: bool = False,
                 created: list[int] | None = None) -> int:
        """A new descriptor for the directory ``parts`` below the root.

        Opens one component at a time with O_NOFOLLOW, holding one descriptor at a time
        however deep the path. With ``create``, missing directories are made, and the
        indices in ``parts`` of those this call made are appended to ``created``.
        """
        return self._walk(parts, create, created, beside=False)[0]

    def open_dir_beside(self, parts: list[str], *, create: bool,
                        created: list[int] | None = None) -> tuple[int, list[str]]:
        """``open_dir`` for a writer that may not read (a drop box), which must not learn
        which names exist: a component taken by something that is not a directory we
        may enter (a file, a link, a directory we cannot open) is not an error, the walk
        goes on beside it, in the first of ``NAME (2)``, ``NAME (3)``... that is such a
        directory or is free. The same names always lead to the same place while the
        tree does not change. Returns (descriptor, the components really walked);
        without ``create``, StorageError("not_found") where a component is free."""
        return self._walk(parts, create, created, beside=True)

    def _walk(self, parts: list[str], create: bool, created: list[int] | None,
              beside: bool) -> tuple[int, list[str]]:
        if not parts:  # a descriptor of its own: a dup would share the read position
            try:
                return os.open(".", _O_DIR, dir_fd=self.dir_fd), []
            except OSError as exc:
                raise _dir_error(exc, self.dir_fd, ".", "the served root") from None
        fd = self.dir_fd  # not ours to close; every descriptor after it is
        walked: list[str] = []
        try:
            for i, part in enumerate(parts):
                child = -1
                for candidate in _numbered(part, directory=True) if beside else (part,):
                    where = "/".join([*walked, candidate])
                    try:
                        child = os.open(candidate, _O_DIR, dir_fd=fd)
                    except FileNotFoundError:
                        if not create:
                            raise StorageError("not_found", f"no directory {where!r}") from None
                        child = self._make_dir(fd, candidate, where, created, i)
                    except OSError as exc:
                        if beside and exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EACCES):
                            continue  # taken: go on beside it
                        raise _dir_error(exc, fd, candidate, where) from None
                    walked.append(candidate)
                    break
                if child < 0:
                    raise StorageError("exists", f"{'/'.join([*walked, part])!r} and the "
                                                 "names beside it are taken")
                if fd != self.dir_fd:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self.dir_fd:
                os.close(fd)
            raise
        return fd, walked

    def _make_dir(self, parent: int, part: str, where: str, created: list[int] | None,
                  index: int) -> int:
        try:
            os.mkdir(part, DIR_MODE, dir_fd=parent)
            if created is not None:
                created.append(index)
        except FileExistsError:
            pass  # made by someone else in the meantime: fine, open it below
        except OSError as exc:
            raise write_error(exc, where) from None
        try:
            return os.open(part, _O_DIR, dir_fd=parent)
        except OSError as exc:
            raise _dir_error(exc, parent, part, where) from None

    def sync_created(self, dirs: list[str], created: list[int]) -> None:
        """Make the entries of directories an upload created durable: fsync the parent
        of each (the directory holding its new entry), descending once from the root."""
        if not created:
            return
        made = set(created)
        fd = self.dir_fd
        try:
            for i in range(max(made) + 1):
                if i in made:
                    os.fsync(fd)
                child = os.open(dirs[i], _O_DIR, dir_fd=fd)
                if fd != self.dir_fd:
                    os.close(fd)
                fd = child
        finally:
            if fd != self.dir_fd:
                os.close(fd)

    def remove_created(self, dirs: list[str], created: list[int]) -> None:
        """Remove the directories an aborted upload made, deepest first, if they are
        still empty (another upload may be using one by now: then it stays). Each
        parent is reached from the root again, so one descriptor is held at a time."""
        for index in reversed(created):
            try:
                parent = self.open_dir(dirs[:index])
            except StorageError:
                continue  # gone or replaced meanwhile: nothing of ours to remove
            try:
                os.rmdir(dirs[index], dir_fd=parent)
            except OSError:
                pass  # not empty any more, or gone: keep it
            finally:
                os.close(parent)

    def _lstat(self, parent: int, leaf: str, name: str) -> os.stat_result | None:
        try:
            return os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError("io_error", f"cannot stat {name!r}: {exc.strerror}") from None

    # -- reading

    def open_file(self, name: str, algorithm: str = SHA256) -> OpenFile:
        """Open a regular file for reading; refuse directories, links and special files.
        Its digest in ``algorithm`` comes with it when it is remembered."""
        parts = split_name(name)
        parent = self.open_dir(parts[:-1])
        try:
            st = _require_regular(self._lstat(parent, parts[-1], name), name)
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                raise _leaf_error(exc, name) from None
        finally:
            os.close(parent)
        try:
            st2 = os.fstat(fd)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                _require_regular(st2, name)  # swapped between lstat and open: check again
            return OpenFile(fd, st2.st_size, st2.st_mtime, algorithm,
                            self.hashes.lookup(fd, st2, algorithm), st2)
        except BaseException:
            os.close(fd)
            raise

    def hash_now(self, opened: OpenFile) -> None:
        """Hash a small open file the cache does not know, at once (one read: cheaper
        than handing it to the helper thread); set ``opened.digest`` and remember it.
        StorageError if it cannot be read or changed size meanwhile."""
        hasher = new_hasher(opened.algorithm)
        hasher.update(opened.read_exactly(0, opened.size))
        opened.digest = Digest(opened.algorithm, hasher.hexdigest())
        self.hashes.remember(opened.fd, opened.st, opened.digest)

    @contextlib.contextmanager
    def _existing(self, name: str) -> Iterator[tuple[list[str], int, os.stat_result]]:
        """(components, its directory opened, its lstat) of an entry that exists;
        StorageError("not_found") otherwise. The directory is closed after the block."""
        parts = split_name(name)
        parent = self.open_dir(parts[:-1])
        try:
            st = self._lstat(parent, parts[-1], name)
            if st is None:
                raise StorageError("not_found", f"no such file {name!r}")
            yield parts, parent, st
        finally:
            os.close(parent)

    def stat(self, name: str) -> dict[str, Any]:
        """Type, size, mtime (and its digests, those remembered) of a file or directory."""
        with self._existing(name) as (parts, parent, st):
            info = _entry(name, st)
            if stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_CLOEXEC, dir_fd=parent)
                except OSError:
                    return info
                try:
                    for digest in self.hashes.known(fd, os.fstat(fd)):
                        info.update(digest.field)
                finally:
                    os.close(fd)
            return info

    def iter_entries(self, path: str, recursive: bool = False) -> Generator[Entry, None, None]:
        """Entries below ``path`` ("" is the root), lazily; directories before their contents.

        A generator, so a huge directory is listed a page at a time. It holds one
        directory descriptor at a time, however many subdirectories wait their turn
        (they wait by name). A listing is complete, or it raises StorageError: a
        subdirectory that vanished meanwhile is simply not there any more, but one the
        server could not open (out of descriptors, a disk error) ends the listing with
        that error, never with a silent gap.

        An entry whose name the name rules refuse (another program put it there: a
        newline, ``aux``, a tree deeper than they allow) comes as a :class:`LeftOut`,
        never as a reason to stop: the caller skips it and says so. Every entry met is
        one item, so a caller that takes a bounded number of items per step is bounded
        whatever the directory holds.
        """
        parts = split_name(path, allow_root=True)
        top = self.open_dir(parts)  # errors (bad name, not found) are raised here, eagerly
        return self._walk_entries(top, path, recursive)

    def _walk_entries(self, top: int, path: str,
                      recursive: bool) -> Generator[Entry, None, None]:
        waiting: list[str] = []  # subdirectories still to list, by name
        fd, prefix = top, path
        try:
            while True:
                yield from self._scan(fd, prefix, recursive, waiting)
                os.close(fd)
                fd = -1
                while fd < 0:
                    if not waiting:
                        return
                    prefix = waiting.pop()
                    fd = self._reopen_dir(prefix)
        finally:
            if fd >= 0:
                os.close(fd)

    def _reopen_dir(self, name: str) -> int:
        """A subdirectory met earlier in a listing, opened now; -1 if it is gone (or no
        longer a directory we would list)."""
        try:
            return self.open_dir(split_name(name))
        except StorageError as exc:
            if exc.code in ("not_found", "not_a_directory", "forbidden"):
                return -1  # removed, or replaced by a file or a link, since we saw it
            raise

    def _scan(self, fd: int, prefix: str, recursive: bool,
              waiting: list[str]) -> Iterator[Entry]:
        try:
            entries = os.scandir(fd)  # (it takes a descriptor of its own: dup)
        except OSError as exc:
            raise _dir_error(exc, fd, ".", prefix or "the served root") from None
        depth = prefix.count("/") + 1 if prefix else 0  # of the directory listed
        with entries:
            for entry in entries:
                if entry.name.startswith(RESERVED_PREFIX):
                    continue  # ours: temporary and partial files
                name = f"{prefix}/{entry.name}" if prefix else entry.name
                why = _unservable(entry.name, name, depth)
                if why:
                    yield LeftOut(printable(name), why)
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while we listed
                yield _entry(name, st)
                if recursive and stat.S_ISDIR(st.st_mode):
                    waiting.append(name)

    # -- directories, removing, renaming

    def make_dir(self, name: str, *, parents: bool, beside_if_taken: bool = False) -> bool:
        """Make the directory ``name``; with ``parents``, its missing parents too, and
        an existing directory is fine. Returns True if a directory was made. With
        ``beside_if_taken`` (a writer that may not read), parents are always made and
        the directories are walked as ``open_dir_beside`` does."""
        parts = split_name(name)
        if beside_if_taken:  # (a drop box: the walk goes on beside what is there)
            created: list[int] = []
            fd, parts = self._walk(parts, True, created, beside=True)
            os.close(fd)
            self._sync_made(name, parts, created)
            return bool(created)
        if parents:  # the parents as for an upload; then the directory itself, or its twin
            created = []
            parent = self.open_dir(parts[:-1], create=True, created=created)
            try:
                self._sync_made(name, parts, created)
                os.mkdir(parts[-1], DIR_MODE, dir_fd=parent)
                os.fsync(parent)
            except FileExistsError:
                st = self._lstat(parent, parts[-1], name)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    raise StorageError("exists", f"{name!r} exists and is not a directory") from None
                return bool(created)
            except OSError as exc:
                raise write_error(exc, name) from None
            finally:
                os.close(parent)
            return True
        parent = self.open_dir(parts[:-1])
        try:
            os.mkdir(parts[-1], DIR_MODE, dir_fd=parent)
            os.fsync(parent)
        except FileExistsError:
            raise StorageError("exists", f"{name!r} already exists") from None
        except OSError as exc:
            raise write_error(exc, name) from None
        finally:
            os.close(parent)
        return True

    def _sync_made(self, name: str, dirs: list[str], created: list[int]) -> None:
        try:
            self.sync_created(dirs, created)
        except OSError as exc:
            raise write_error(exc, name) from None

    def remove_in_steps(self, name: str, *, recursive: bool,
                        step: int = 256) -> Iterator[int]:
        """Remove ``name`` (a file, a link, or with ``recursive`` a whole directory),
        yielding the count removed so far every ``step`` entries, so a huge tree is
        removed between other clients' requests. Links are removed, never followed; one
        directory descriptor is held at a time, whatever the depth."""
        with self._existing(name) as (parts, parent, st):
            if not stat.S_ISDIR(st.st_mode):
                _remove(os.unlink, parts[-1], parent, name)
                os.fsync(parent)
            elif not recursive:
                raise StorageError("is_directory", f"{name!r} is a directory: remove it and "
                                                   "all it holds with recursive (rm -r)")
        if not stat.S_ISDIR(st.st_mode):
            yield 1
            return
        yield from self._remove_tree(parts, step)

    def _remove_tree(self, top: list[str], step: int) -> Iterator[int]:
        removed = 0
        waiting: list[tuple[list[str], bool]] = [(top, False)]  # (directory, emptied)
        while waiting:
            parts, emptied = waiting.pop()
            where = "/".join(parts)
            if emptied:
                parent = self.open_dir(parts[:-1])
                try:
                    _remove(os.rmdir, parts[-1], parent, where)
                finally:
                    os.close(parent)
                removed += 1
                continue
            waiting.append((parts, True))  # (removed once all it holds is gone)
            fd = self.open_dir(parts)
            try:
                for entry in _scandir(fd, where):
                    if entry.is_dir(follow_symlinks=False):
                        waiting.append(([*parts, entry.name], False))
                        continue
                    _remove(os.unlink, entry.name, fd, f"{where}/{entry.name}")
                    removed += 1
                    if removed % step == 0:
                        yield removed
            finally:
                os.close(fd)
        parent = self.open_dir(top[:-1])
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
        yield removed

    def move(self, src: str, dst: str, *, overwrite: bool, allow_overwrite: bool) -> bool:
        """Rename ``src`` to ``dst`` inside the root, in one atomic step (no copy).
        Refused: onto a symbolic link, over a directory, into itself, or over a file
        unless ``overwrite`` (and ``allow_overwrite``). Returns True if a file was
        replaced."""
        sparts, dparts = split_name(src), split_name(dst)
        if dparts[:len(sparts)] == sparts:
            raise StorageError("bad_request", f"cannot move {src!r} into itself")
        sparent = self.open_dir(sparts[:-1])
        try:
            dparent = self.open_dir(dparts[:-1])
        except BaseException:
            os.close(sparent)
            raise
        try:
            if self._lstat(sparent, sparts[-1], src) is None:
                raise StorageError("not_found", f"no such file {src!r}")
            replaces = self._check_target(dparent, dparts[-1], dst, overwrite, allow_overwrite)
            try:
                if replaces:
                    os.rename(sparts[-1], dparts[-1], src_dir_fd=sparent, dst_dir_fd=dparent)
                else:
                    rename_new(sparts[-1], dparts[-1], src_dir_fd=sparent, dst_dir_fd=dparent)
                os.fsync(dparent)
                if dparent != sparent:
                    os.fsync(sparent)
            except FileExistsError:
                raise StorageError("exists", f"{dst!r} already exists") from None
            except (IsADirectoryError, NotADirectoryError):
                raise StorageError("is_directory", f"cannot replace the file {dst!r} with "
                                                   f"the directory {src!r}") from None
            except OSError as exc:
                raise write_error(exc, dst) from None
            return replaces
        finally:
            os.close(sparent)
            os.close(dparent)

    # -- writing

    def begin_upload(self, name: str, length: int, expected: Digest | None, *,
                     overwrite: bool, allow_overwrite: bool, mtime: float | None = None,
                     offset: int = 0, key: str = "", total: int | None = None,
                     beside_if_taken: bool = False, algorithm: str = SHA256) -> "Upload":
        """Check the target and open the temporary file the upload is written to.

        ``key``: the partial file's key (``partial_key``) of a resumable upload, "" for
        one that is not: an interrupted resumable upload keeps what arrived under it.
        With ``offset``, that partial file is claimed (see ``_claim_partial``) and the
        upload continues at its end; it must hold exactly ``offset`` bytes.
        ``total``: the whole file's size when the body is one piece of a file sent in
        several requests (tus), appended to the partial file from ``offset``.

        With ``beside_if_taken`` (a writer that may not read), a taken name is not
        refused: the file goes to the first free name ``stem (2).ext``, ``stem
        (3).ext``... in the same directory, and directories are walked as
        ``open_dir_beside`` does.

        ``expected``: the digest the sender declared (None: none yet, the file is hashed
        in ``algorithm``)."""
        parts = split_name(name)
        leaf, dirs = parts[-1], parts[:-1]
        in_pieces = total is not None
        total = offset + length if total is None else total
        created: list[int] = []
        parent = fd = -1
        self._room_for(name, length)
        try:
            if beside_if_taken:
                parent, dirs = self.open_dir_beside(dirs, create=True, created=created)
            else:
                parent = self.open_dir(dirs, create=True, created=created)
            try:
                replaces = self._check_target(parent, leaf, name, overwrite, allow_overwrite)
            except StorageError as exc:
                if not beside_if_taken or exc.code in ("bad_name", "io_error", "server_busy"):
                    raise
                leaf, replaces = self._free_leaf(parent, leaf, name), False
            if offset or in_pieces:
                temp = claim_name(key)
                fd = self._claim_partial(parent, key, offset, name, "/".join(dirs))
            else:
                # The key in a resumable upload's temporary name lets a restarted server
                # turn it into a partial file instead of deleting it (sweep_temporary_files).
                temp = f"{TEMP_PREFIX}{_RUN_ID}{next(_TEMP_IDS):x}" + (f".{key}" if key else "")
                try:
                    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, FILE_MODE, dir_fd=parent)
                except OSError as exc:
                    raise write_error(exc, name) from None
            upload = Upload(self, "/".join([*dirs, leaf]), parent, leaf, temp, fd, length,
                            expected, overwrite and allow_overwrite, mtime, dirs, created,
                            offset=offset, key=key, total=total if in_pieces else None,
                            algorithm=expected.algorithm if expected else algorithm)
        except BaseException:
            if fd >= 0:
                os.close(fd)
                if offset or in_pieces:
                    _rename_quietly(claim_name(key), PARTIAL_PREFIX + key, parent)
                else:
                    _unlink_quietly(temp, parent)
            if parent >= 0:
                os.close(parent)
            self.remove_created(dirs, created)
            raise
        upload.replaces = replaces
        upload.asked_name = name
        return upload

    def _free_leaf(self, parent: int, leaf: str, name: str) -> str:
        """The first free ``stem (N).ext`` beside a taken ``leaf``."""
        for candidate in itertools.islice(_numbered(leaf, directory=False), 1, None):
            if self._lstat(parent, candidate, name) is None:
                return candidate
        raise StorageError("exists", f"{name!r} and the names beside it are taken")

    def _room_for(self, name: str, length: int) -> None:
        """Before an upload of ``length`` bytes: refuse one that cannot fit even if every
        partial file went (so a doomed upload evicts nothing), and evict partials, oldest
        first, for one that fits only without them."""
        if length < PARTIAL_PREFLIGHT_FROM:
            return  # (small: the write itself finds out, and makes room then)
        free = self.free_space()
        if length > free + self.partials.bytes:
            raise StorageError("no_space", f"cannot store {name!r}: {length} bytes do not "
                                           f"fit in the {free} bytes free on the server")
        if length > free:
            self.make_room(length - free)

    def _claim_partial(self, parent: int, key: str, offset: int, name: str,
                       where: str) -> int:
        """Open the partial file ``key`` to go on writing it, renamed to its claim name
        (``claim_name``) meanwhile: one request at a time writes a partial file, and a
        second one finds the claim and is told to wait (``server_busy``) instead of
        finding nothing. The rename never replaces a claim (RENAME_NOREPLACE): a
        partial file made again meanwhile cannot take the place of the one a request
        is writing. The file must hold exactly ``offset`` bytes."""
        partial, claim = PARTIAL_PREFIX + key, claim_name(key)
        try:
            rename_new(partial, claim, src_dir_fd=parent, dst_dir_fd=parent)
        except FileNotFoundError:
            if self._lstat(parent, claim, name) is not None:
                raise StorageError("server_busy", _BEING_WRITTEN) from None
            raise StorageError("offset_mismatch", f"the server holds no partial upload of "
                                                  f"{name!r} (resume from 0)") from None
        except FileExistsError:
            raise StorageError("server_busy", _BEING_WRITTEN) from None
        except OSError as exc:
            raise write_error(exc, name) from None
        try:
            fd = os.open(claim, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            _rename_quietly(claim, partial, parent)
            raise write_error(exc, name) from None
        held = os.fstat(fd).st_size
        if held != offset:
            os.close(fd)
            _rename_quietly(claim, partial, parent)  # keep it for later
            raise StorageError("offset_mismatch", f"the server holds {held} bytes of "
                                                  f"{name!r}, not {offset}")
        self.partials.discard(where, partial)  # an upload again, now
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def held(self, name: str, key: str, size: int, *, beside_if_taken: bool = False) -> int:
        """The bytes the partial file ``key`` of ``name`` holds. StorageError
        "not_found" if there is none (never made, expired, evicted, or already stored),
        "server_busy" while a request writes it (see ``_claim_partial``)."""
        parent = self._partial_dir(name, beside_if_taken)
        try:
            st = self._lstat(parent, PARTIAL_PREFIX + key, name)
            if st is None and self._lstat(parent, claim_name(key), name) is not None:
                raise StorageError("server_busy", _BEING_WRITTEN)
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_size > size:
                raise StorageError("not_found", _NO_SUCH_UPLOAD)
            return st.st_size
        finally:
            os.close(parent)

    def _partial_dir(self, name: str, beside_if_taken: bool) -> int:
        """The directory where the partial files of ``name`` are; StorageError
        "not_found" when it does not exist."""
        dirs = split_name(name)[:-1]
        try:
            if beside_if_taken:
                return self.open_dir_beside(dirs, create=False)[0]
            return self.open_dir(dirs)
        except StorageError as exc:
            if exc.code in ("not_found", "not_a_directory", "forbidden"):
                raise StorageError("not_found", _NO_SUCH_UPLOAD) from None
            raise

    def check_room(self, name: str, size: int, *, overwrite: bool, allow_overwrite: bool,
                   beside_if_taken: bool) -> None:
        """Would an upload of ``size`` bytes to ``name`` be taken? (StorageError if not:
        a bad name, no room, a name that exists and may not be replaced.) Asked before
        an upload in pieces begins; its last piece is checked again for real. A writer
        that may not read (``beside_if_taken``) is refused nothing a name on disk
        decides: its upload goes beside whatever is there."""
        parts = split_name(name)
        self._room_for(name, size)
        if beside_if_taken:
            return
        try:
            parent = self.open_dir(parts[:-1])
        except StorageError as exc:
            if exc.code == "not_found":
                return  # (its directories will be made)
            raise
        try:
            self._check_target(parent, parts[-1], name, overwrite, allow_overwrite)
        finally:
            os.close(parent)

    def create_partial(self, name: str, key: str, *, beside_if_taken: bool = False) -> None:
        """An empty partial file for ``name``: an upload sent in pieces (tus) that has
        begun and holds nothing yet. Its directories are made as for an upload.
        StorageError "no_space" when its writer, or the server, keeps as many partial
        files as it may (partials.py)."""
        why_not = self.partials.full_for(writer_of(key))
        if why_not:
            raise StorageError("no_space", why_not)
        dirs = split_name(name)[:-1]
        if beside_if_taken:
            parent, dirs = self.open_dir_beside(dirs, create=True)
        else:
            parent = self.open_dir(dirs, create=True)
        try:
            fd = os.open(PARTIAL_PREFIX + key, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=parent)
            os.close(fd)
        except FileExistsError:
            pass  # made already (a repeated request): the same upload
        except OSError as exc:
            raise write_error(exc, name) from None
        finally:
            os.close(parent)
        self.partial_kept("/".join(dirs), PARTIAL_PREFIX + key, 0)

    def drop_partial(self, name: str, key: str, *, beside_if_taken: bool = False) -> None:
        """Remove the partial file ``key`` of ``name`` (an upload given up).
        StorageError "not_found" if there is none, "server_busy" while a request
        writes it."""
        parent = self._partial_dir(name, beside_if_taken)
        try:
            os.unlink(PARTIAL_PREFIX + key, dir_fd=parent)
        except FileNotFoundError:
            if self._lstat(parent, claim_name(key), name) is not None:
                raise StorageError("server_busy", _BEING_WRITTEN) from None
            raise StorageError("not_found", _NO_SUCH_UPLOAD) from None
        except OSError as exc:
            raise write_error(exc, name) from None
        finally:
            os.close(parent)
        for partial in self.partials:  # (its books: wherever its directory is)
            if partial.name == PARTIAL_PREFIX + key:
                self.partials.discard(partial.where, partial.name)

    def _check_target(self, parent: int, leaf: str, name: str, overwrite: bool,
                      allow_overwrite: bool) -> bool:
        """Refuse what may not be replaced; True if a file will be replaced."""
        st = self._lstat(parent, leaf, name)
        if st is None:
            return False
        _require_regular(st, name, "replacing")
        if not overwrite:
            raise StorageError("exists", f"{name!r} already exists")
        if not allow_overwrite:
            raise StorageError("overwrite_refused", f"{name!r} exists and this server does "
                                                    "not overwrite files (--allow-overwrite)")
        return True

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

    # -- partial files while running (their books: partials.py)

    def partial_kept(self, where: str, partial: str, size: int) -> int:
        """An interrupted upload left ``partial`` (``size`` bytes) in the directory
        ``where``. Returns the bytes kept: 0 if the budget had no room for it."""
        self.partials.add(Partial(where, partial, size, time.time(), writer_of(partial)))
        self.enforce_partial_budget()
        if self.on_partial_kept is not None:
            self.on_partial_kept()
        return size if self.partials.named(where, partial) else 0

    def enforce_partial_budget(self) -> None:
        """Evict the oldest partials while they hold more than their budget of bytes,
        or are more than their count (a writer over its own count loses its own)."""
        books = self.partials
        while books.over_budget() or len(books) > books.count:
            oldest = books.oldest()
            assert oldest is not None
            self._remove_partial(oldest, "over the partial files' budget")
        for writer in [w for w in books.writers() if books.held_by(w) > books.per_writer]:
            while books.held_by(writer) > books.per_writer:
                oldest = books.oldest(writer)
                assert oldest is not None
                self._remove_partial(oldest, "over the partial files one writer may keep")

    def make_room(self, needed: int) -> int:
        """The disk is full: evict partials, oldest first, until ``needed`` bytes are
        freed or none is left. Returns the bytes freed (0: nothing could be done)."""
        freed = 0
        while freed < needed and len(self.partials):
            oldest = self.partials.oldest()
            assert oldest is not None
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

    def forget_partials(self, name: str, parent: int) -> None:
        """A file was just stored under ``name`` (a checked name; ``parent`` is its
        directory): interrupted uploads to that name, of whatever content, are
        superseded. Remove the partial files kept for it."""
        if not len(self.partials):
            return
        where, _, leaf = name.rpartition("/")
        for partial in self.partials.named(where, PARTIAL_PREFIX + _leaf_key(leaf)):
            self.partials.discard(where, partial.name)
            _unlink_quietly(partial.name, parent)

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


_BEING_WRITTEN = "another request is writing this upload now; try again when it ends"
_NO_SUCH_UPLOAD = "no such upload (finished, given up, or expired)"


def _leaf_key(leaf: str) -> str:
    """The part of a partial file's key that names the file (fixed length, any name)."""
    return hashlib.sha256(leaf.encode()).hexdigest()[:24]


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


class Upload:
    """One file being received: a temporary file, its running hash, and its commit."""

    __slots__ = ("root", "name", "parent", "leaf", "temp", "fd", "length", "expected",
                 "overwrite", "mtime", "dirs", "created", "received", "hasher", "done",
                 "offset", "key", "hash_job", "replaces", "asked_name", "total",
                 "piece_hasher", "in_pieces", "algorithm")

    def __init__(self, root: Root, name: str, parent: int, leaf: str, temp: str, fd: int,
                 length: int, expected: Digest | None, overwrite: bool, mtime: float | None,
                 dirs: list[str], created: list[int], *, offset: int = 0,
                 key: str = "", total: int | None = None, algorithm: str = SHA256) -> None:
        self.root, self.name, self.parent, self.leaf = root, name, parent, leaf
        self.temp, self.fd, self.length, self.expected = temp, fd, length, expected
        self.overwrite, self.mtime = overwrite, mtime
        self.dirs, self.created = dirs, created  # the directories, and those we made
        self.offset = offset  # bytes already held from an interrupted attempt
        self.key = key  # partial_key when the upload is resumable, else ""
        self.received = 0  # body bytes of this attempt
        self.algorithm = algorithm  # what the file is hashed in (the expected digest's)
        self.hasher: Any = new_hasher(algorithm)
        self.done = False
        self.replaces = False  # an existing file will be replaced
        self.asked_name = name  # the name the client asked for (a drop box may differ)
        self.total = offset + length if total is None else total  # the whole file
        self.in_pieces = total is not None  # sent in several requests (tus)
        self.piece_hasher: Any = None  # a checksum of this request's bytes alone (tus)
        # Big files (and resumed ones, whose earlier bytes must be read back anyway) are
        # hashed beside the loop by the helper thread; small ones inline, in write(). A
        # piece that does not end the file is not hashed at all: the piece that does
        # reads the whole file back once.
        self.hash_job: HashJob | None = None
        if not self.completes:
            self.hasher = None
        elif offset or self.size >= ASYNC_HASH_FROM:
            try:
                self.hash_job = HashJob(fd, algorithm, already=offset)
            except OSError as exc:  # (it needs a descriptor of its own)
                raise write_error(exc, name) from None

    @property
    def size(self) -> int:
        """The whole file's size."""
        return self.total

    @property
    def completes(self) -> bool:
        """This request's body ends the file (always, but for a tus piece)."""
        return self.offset + self.length == self.total

    def park(self) -> int:
        """A piece of a file sent in several requests arrived whole, and the file is not
        complete yet: keep what is there as the partial file (even if empty) until the
        next piece. Returns the bytes held."""
        held = self.offset + self.received
        self.abort(interrupted=True, keep_empty=True)
        return held

    def rewind(self) -> None:
        """Forget this request's bytes (its checksum did not match): the file is back to
        the ``offset`` bytes it held before."""
        try:
            os.ftruncate(self.fd, self.offset)
            os.lseek(self.fd, self.offset, os.SEEK_SET)
        except OSError as exc:
            raise write_error(exc, self.name) from None
        self.received = 0

    def write(self, data: memoryview) -> None:
        """Append body bytes to the temporary file, hashing them on the way."""
        job = self.hash_job
        if job is None and self.hasher is not None:
            self.hasher.update(data)
        if self.piece_hasher is not None:
            self.piece_hasher.update(data)
        while data:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                if exc.errno in _NO_SPACE and self.root.make_room(len(data)):
                    continue  # partial files made way for this upload: try again
                raise write_error(exc, self.name) from None
            data = data[written:]
            self.received += written
        if job is not None:
            job.written(self.offset + self.received)

    def splice_target(self) -> tuple[int, int] | None:
        """(fd, offset) where body bytes may be spliced straight from the socket, when the
        helper hashes this upload (the bytes never pass through Python); else None."""
        if self.hash_job is None or self.fd < 0:
            return None
        return self.fd, self.offset + self.received

    def spliced(self, count: int) -> None:
        """``count`` bytes were spliced in at splice_target()."""
        assert self.hash_job is not None  # (only then is there a splice target)
        self.received += count
        self.hash_job.written(self.offset + self.received)

    def finish_hash(self, on_done: Callable[[str | None], None]) -> bool:
        """All bytes are written. With a helper hashing, start its last step and return
        True (``on_done(digest)`` follows, from the helper thread); else return False."""
        if self.hash_job is None:
            return False
        self.hash_job.finish(self.size, on_done)
        return True

    def commit(self, computed: str | None = None) -> Digest:
        """Verify, make durable and publish the file; return its digest.

        ``computed``: the hex digest the helper computed (see finish_hash); else the
        inline hash. It is checked against ``expected`` (None: nothing to check, HTTP).
        Order matters: fsync the data before the rename, so a crash can never publish
        a name whose blocks are not on disk; fsync the directory after it, so the
        name itself survives a crash before we say "done".
        """
        if computed is None:
            if self.hash_job is not None:
                self.abort()
                raise StorageError("io_error", f"{self.name!r}: the file could not be read "
                                               "back to verify it")
            computed = self.hasher.hexdigest()
        digest = Digest(self.algorithm, computed)
        try:
            if self.expected is not None and digest != self.expected:
                self.key = ""  # wrong bytes are not worth resuming
                raise StorageError("checksum_mismatch", f"{self.name!r}: received data has "
                                   f"{digest}, the sender declared {self.expected.hex}")
            try:
                os.fsync(self.fd)
                if self.mtime is not None:
                    os.utime(self.fd, (self.mtime, self.mtime))
            except OSError as exc:
                raise write_error(exc, self.name) from None
            self.root.hashes.remember(self.fd, os.fstat(self.fd), digest)
            self._publish()
            self._sync_directories()
        except BaseException:
            self.abort()
            raise
        self.root.forget_partials(self.name, self.parent)
        self._release()
        return digest

    def _publish(self) -> None:
        try:
            publish(self.temp, self.leaf, overwrite=self.overwrite, dir_fd=self.parent)
        except FileExistsError:
            raise StorageError("exists", f"{self.name!r} was created by someone else "
                                         "during the upload") from None
        except IsADirectoryError:
            raise StorageError("is_directory", f"{self.name!r} is a directory") from None
        except OSError as exc:
            raise write_error(exc, self.name) from None
        self.temp = ""

    def _sync_directories(self) -> None:
        try:
            os.fsync(self.parent)
            self.root.sync_created(self.dirs, self.created)  # new directories' entries
        except OSError as exc:
            raise write_error(exc, self.name) from None

    def abort(self, *, interrupted: bool = False, keep_empty: bool = False) -> int:
        """Stop the upload; return the bytes kept for a resume (0: none).

        Only a real interruption (``interrupted``: the connection broke, timed out, or
        the server stopped) of a resumable upload keeps what arrived, as a hidden
        partial file (see partials.py). A failure or a refusal deletes the temporary
        file and the directories the upload made: nothing hidden is left behind."""
        if self.done:
            return 0
        held = self.offset + self.received
        keep = interrupted and bool(self.key) and (held > 0 or keep_empty or self.in_pieces)
        if self.hash_job is not None:
            self.hash_job.cancel()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        kept = 0
        if self.temp:
            try:
                if keep:
                    os.replace(self.temp, PARTIAL_PREFIX + self.key, src_dir_fd=self.parent,
                               dst_dir_fd=self.parent)
                    kept = self.root.partial_kept("/".join(self.dirs), PARTIAL_PREFIX + self.key,
                                                  held)
                else:
                    os.unlink(self.temp, dir_fd=self.parent)
            except OSError:
                pass  # already gone; nothing else to do
            self.temp = ""
        self._release()
        if not keep:
            self.root.remove_created(self.dirs, self.created)
        return kept

    def _release(self) -> None:
        self.done = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        os.close(self.parent)


def _remove(how: Callable[..., None], name: str, parent: int, where: str) -> None:
    """``how`` (os.unlink or os.rmdir) the entry ``name`` of ``parent``; StorageError."""
    try:
        how(name, dir_fd=parent)
    except FileNotFoundError:
        pass  # removed meanwhile by someone else: the outcome is the same
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise StorageError("io_error", f"{where!r} is not empty: something was put in "
                                           "it during the removal") from None
        raise write_error(exc, where) from None


def _scandir(fd: int, where: str) -> Iterator[os.DirEntry[str]]:
    try:
        entries = os.scandir(fd)
    except OSError as exc:
        raise _dir_error(exc, fd, ".", where) from None
    with entries:
        yield from entries


def _unlink_quietly(name: str, parent: int) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError:
        pass  # already gone


def _rename_quietly(src: str, dst: str, parent: int) -> None:
    try:
        os.replace(src, dst, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError:
        pass  # already gone


# ------------------------------------------------------------------ small helpers


def _numbered(name: str, *, directory: bool) -> Iterator[str]:
    """``name``, then the names that may stand beside it when it is taken: ``stem
    (2).ext``, ``stem (3).ext``... for a file, ``name (2)``... for a directory (at most
    10,000, and none over a component's 255 bytes)."""
    yield name
    stem, dot, ext = name.rpartition(".")
    if directory or not stem:  # no extension, or a dotfile: the number goes at the end
        stem, dot, ext = name, "", ""
    for n in range(2, 10_000):
        candidate = f"{stem} ({n}){dot}{ext}"
        if len(candidate.encode()) > 255:
            return
        yield candidate


def _unservable(leaf: str, name: str, depth: int) -> str:
    """Why the entry ``leaf`` (``name`` below the root, in a directory ``depth`` levels
    down) breaks a name rule, or "": the rules of names.split_name, one component at a
    time (the directories above it passed them already)."""
    if depth >= MAX_DEPTH:
        return f"more than {MAX_DEPTH} components (directories nested too deep)"
    why = component_problem(leaf, top=depth == 0)
    if not why and len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        why = f"longer than {MAX_NAME_BYTES} bytes"
    return why


def _entry(name: str, st: os.stat_result) -> dict[str, Any]:
    mode = st.st_mode
    kind = ("file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode)
            else "symlink" if stat.S_ISLNK(mode) else "other")
    return {"name": name, "type": kind, "size": st.st_size if kind == "file" else 0,
            "mtime": st.st_mtime}


def _require_regular(st: os.stat_result | None, name: str,
                     refusing: str = "following") -> os.stat_result:
    """``st``, if it is a regular file's; else the StorageError that says what it is."""
    if st is None:
        raise StorageError("not_found", f"no such file {name!r}")
    if stat.S_ISDIR(st.st_mode):
        raise StorageError("is_directory", f"{name!r} is a directory")
    if stat.S_ISLNK(st.st_mode):
        raise StorageError("forbidden", f"{name!r} is a symbolic link; not {refusing} it")
    if not stat.S_ISREG(st.st_mode):
        raise StorageError("not_a_file", f"{name!r} is not a regular file")
    return st


def _busy(exc: OSError, what: str) -> StorageError | None:
    """Out of descriptors (or kernel memory) is the server's shortage, not the client's
    mistake: a stable code that says "try again" (HTTP 503)."""
    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return StorageError("server_busy", f"{what}: the server is short of file "
                                           f"descriptors ({exc.strerror}); try again soon")
    return None


def _dir_error(exc: OSError, parent: int, part: str, where: str) -> StorageError:
    busy = _busy(exc, repr(where))
    if busy is not None:
        return busy
    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
        try:
            if stat.S_ISLNK(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode):
                return StorageError("forbidden", f"{where!r} is a symbolic link; "
                                                 "not following it")
        except OSError:
            pass  # vanished meanwhile: report it as not a directory
        return StorageError("not_a_directory", f"{where!r} is not a directory")
    if exc.errno == errno.EACCES:
        return StorageError("forbidden", f"{where!r}: permission denied")
    return StorageError("io_error", f"{where!r}: {exc.strerror}")


def _leaf_error(exc: OSError, name: str) -> StorageError:
    busy = _busy(exc, repr(name))
    if busy is not None:
        return busy
    if exc.errno == errno.ENOENT:
        return StorageError("not_found", f"no such file {name!r}")
    if exc.errno == errno.ELOOP:
        return StorageError("forbidden", f"{name!r} is a symbolic link; not following it")
    if exc.errno == errno.ENXIO:
        return StorageError("not_a_file", f"{name!r} is not a regular file")
    if exc.errno == errno.EACCES:
        return StorageError("forbidden", f"{name!r}: permission denied")
    return StorageError("io_error", f"{name!r}: {exc.strerror}")


def write_error(exc: OSError, name: str) -> StorageError:
    busy = _busy(exc, f"cannot store {name!r}")
    if busy is not None:
        return busy
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageError("no_space", f"cannot store {name!r}: {exc.strerror}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError("forbidden", f"cannot store {name!r}: {exc.strerror}")
    if exc.errno == errno.ENOTDIR:
        return StorageError("not_a_directory", f"cannot store {name!r}: a parent is a file")
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError("bad_name", f"cannot store {name!r}: name too long")
    return StorageError("io_error", f"cannot store {name!r}: {exc.strerror}")
