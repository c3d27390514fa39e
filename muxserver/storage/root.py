"""The served root: names walked one component at a time, files read and listed.

* **Names** follow the rules of ``names.py`` (docs/PROTOCOL.md section 3); a name
  that breaks one is refused with ``bad_name`` before anything is touched.
* **Resolution** never hands a path string to the kernel. The root is opened once as
  a directory descriptor and every name is walked one component at a time with
  ``openat(dir_fd, component, O_NOFOLLOW)``, so neither ``..`` nor a symbolic link
  (leaf or middle, or one swapped in while an upload runs) can lead outside the root.
* **Special files** (FIFO, device, socket) are refused after an ``lstat`` and an
  ``fstat`` of a descriptor opened with ``O_NONBLOCK``, so they never block the loop.
* **Listings** are generators that hold one directory descriptor at a time, and leave
  out (and say so) names the rules refuse, put there by other programs.

:class:`RootCore` is what the other parts of the storage build on (directories.py,
partials.py, uploads.py); ``storage.Root`` is all of them together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import secrets
import stat
from typing import Any, Generator, Iterator

from mypy_extensions import mypyc_attr

from ..digests import SHA256, Digest, new_hasher
from ..hashcache import HashCache
from ..names import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    RESERVED_PREFIX,
    component_problem,
    printable,
)
from .errors import (
    StorageError,
    dir_error,
    leaf_error,
    require_regular,
    split_name,
    write_error,
)

DIR_MODE = 0o755
# The flags, computed once: each ``os.O_...`` is a module attribute looked up at every
# use, and these are used on every request.
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A file opened to be read: never through a link, never waiting for a FIFO's writer.
O_READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True, slots=True)
class LeftOut:
    """An entry a listing met on disk and does not show: its name breaks a rule of
    names.py (another program put it there), so no request could name it."""

    name: str  # below the root, printable (escapes for what is not)
    why: str


#: What a listing yields: an entry's fields (``_entry``), one it leaves out, or None: a
#: unit of work that shows nothing (see RootCore.iter_entries).
Entry = dict[str, Any] | LeftOut | None


class OpenFile:
    """A regular file opened for a download.

    (A plain class rather than a dataclass: one is made per download, and in the
    compiled build (setup.py) a dataclass's ``__init__`` stays the one the dataclasses
    module writes, run by the interpreter.)"""

    __slots__ = ("fd", "size", "mtime", "algorithm", "digest", "st")

    def __init__(self, fd: int, size: int, mtime: float, algorithm: str,
                 digest: Digest | None, st: os.stat_result) -> None:
        self.fd, self.size, self.mtime = fd, size, mtime
        self.algorithm = algorithm  # the digest the download announces (digests.py)
        self.digest = digest  # None: not known yet, the caller has it hashed (session.py)
        self.st = st

    def __repr__(self) -> str:
        return f"OpenFile(fd={self.fd}, size={self.size}, digest={self.digest!r})"

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


# (The compiled build, setup.py: mypyc compiles the methods of a class that inherits
# from several others, as Root's parts do, but keeps it a regular Python class.)
@mypyc_attr(native_class=False)
class RootCore:
    """The served directory, held open as a descriptor for the server's lifetime."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.realpath(path)
        try:
            self.dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError("not_found", f"cannot serve {self.path}: {exc.strerror}") from None
        self.hashes = HashCache()
        # ``_free`` asks faccessat2, which some systems lack and some older container
        # sandboxes refuse (EPERM) instead of answering: then every name would look
        # free. The root itself must be found; if it is not, ``_free`` asks lstat.
        self._access_answers = (
            os.access in os.supports_dir_fd and os.access in os.supports_follow_symlinks
            and os.access in os.supports_effective_ids
            and os.access(".", os.F_OK, dir_fd=self.dir_fd, follow_symlinks=False,
                          effective_ids=True))

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
                raise dir_error(exc, self.dir_fd, ".", "the served root") from None
        fd = self.dir_fd  # not ours to close; every descriptor after it is
        walked: list[str] = []
        try:
            for i, part in enumerate(parts):
                child = -1
                for candidate in numbered(part, directory=True) if beside else (part,):
                    try:
                        child = os.open(candidate, _O_DIR, dir_fd=fd)
                    except FileNotFoundError:
                        where = "/".join([*walked, candidate])
                        if not create:
                            raise StorageError("not_found", f"no directory {where!r}") from None
                        child = self._make_dir(fd, candidate, where, created, i)
                    except OSError as exc:
                        if beside and self._taken(exc, fd, candidate):
                            continue  # go on beside it
                        raise dir_error(exc, fd, candidate,
                                        "/".join([*walked, candidate])) from None
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

    @staticmethod
    def _taken(exc: OSError, parent: int, candidate: str) -> bool:
        """Is ``candidate`` something a drop box walks beside (a file, a link, a directory
        it may not open)? Not when the error is the parent's: a directory that may be
        read but not searched refuses every name alike, and walking beside would never
        end."""
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return True
        if exc.errno != errno.EACCES:
            return False
        try:
            os.stat(candidate, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _make_dir(self, parent: int, part: str, where: str, created: list[int] | None,
                  index: int) -> int:
        try:
            os.mkdir(part, DIR_MODE, dir_fd=parent)
            if created is not None:
                created.append(index)
        except FileExistsError:
            pass  # made by someone else in the meantime: fine, open it below
        except OSError as exc:
            raise write_error(exc, where, "make the directory") from None
        try:
            return os.open(part, _O_DIR, dir_fd=parent)
        except OSError as exc:
            raise dir_error(exc, parent, part, where) from None

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

    def _free(self, parent: int, leaf: str) -> bool:
        """True when nothing is named ``leaf`` in ``parent`` (or it cannot be told: the
        steps after this one meet the same error, and a publish never replaces a name
        it did not mean to). The common case of a new name, cheaply: no stat result is
        built and no exception raised for the answer, as ``_lstat`` must."""
        if not self._access_answers:
            return self._lstat(parent, leaf, leaf) is None
        return not os.access(leaf, os.F_OK, dir_fd=parent, follow_symlinks=False,
                             effective_ids=True)

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
            st = require_regular(self._lstat(parent, parts[-1], name), name)
            try:
                fd = os.open(parts[-1], O_READ_FILE, dir_fd=parent)
            except OSError as exc:
                raise leaf_error(exc, name) from None
        finally:
            os.close(parent)
        try:
            st2 = os.fstat(fd)
            if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                require_regular(st2, name)  # swapped between lstat and open: check again
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
                    fd = os.open(parts[-1], O_READ_FILE, dir_fd=parent)
                except OSError:
                    return info
                try:
                    for digest in self.hashes.known(fd, os.fstat(fd)):
                        info.update(digest.field)
                finally:
                    os.close(fd)
            return info

    # -- listing

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
        never as a reason to stop: the caller skips it and says so. Every unit of work
        is one item: an entry, one left out, or None for work that shows nothing (a
        subdirectory opened, a file of ours passed over), so a caller that takes a
        bounded number of items per step is bounded whatever the tree holds (3,000
        empty folders once took one step).

        The generator owns the first directory's descriptor from the start: closing it,
        even before its first item, closes that descriptor.
        """
        parts = split_name(path, allow_root=True)
        top = self.open_dir(parts)  # errors (bad name, not found) are raised here, eagerly
        walk = self._walk_entries(top, path, recursive)
        next(walk)  # (into its try: from here, close() runs its finally)
        return walk

    def _walk_entries(self, top: int, path: str,
                      recursive: bool) -> Generator[Entry, None, None]:
        waiting: list[str] = []  # subdirectories still to list, by name
        fd, prefix = top, path
        try:
            yield None  # (iter_entries takes this one: the walk has begun)
            while True:
                yield from self._scan(fd, prefix, recursive, waiting)
                os.close(fd)
                fd = -1
                while fd < 0:
                    if not waiting:
                        return
                    prefix = waiting.pop()
                    fd = self._reopen_dir(prefix)
                    yield None  # (a directory opened, or found gone: a step's work)
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
        depth = prefix.count("/") + 1 if prefix else 0  # of the directory listed
        for entry in scan_dir(fd, prefix or "the served root"):
            if entry.name.startswith(RESERVED_PREFIX):
                yield None  # ours (temporary and partial files): not shown
                continue
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            why = _unservable(entry.name, name, depth)
            if why:
                yield LeftOut(printable(name), why)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                yield None  # removed while we listed
                continue
            yield _entry(name, st)
            if recursive and stat.S_ISDIR(st.st_mode):
                waiting.append(name)


def scan_dir(fd: int, where: str) -> Iterator[os.DirEntry[str]]:
    """The entries of the directory ``fd`` (``where`` below the root); any OSError, on
    opening it or in the middle of it (a disk error), is a StorageError."""
    try:
        entries = os.scandir(fd)  # (it takes a descriptor of its own: dup)
    except OSError as exc:
        raise dir_error(exc, fd, ".", where) from None
    with entries:
        while True:
            try:
                entry = next(entries)
            except StopIteration:
                return
            except OSError as exc:
                raise dir_error(exc, fd, ".", where) from None
            yield entry


def numbered(name: str, *, directory: bool) -> Iterator[str]:
    """``name``, then the names that may stand beside it when it is taken: ``stem
    (2).ext``, ``stem (3).ext``... for a file, ``name (2)``... for a directory; then
    ``stem (a random word).ext``. A stem too long for the number is cut to fit a
    component's 255 bytes. There is always a next one: where the names run out, the
    answer to a drop box would depend on which of them exist."""
    yield name
    stem, dot, ext = name.rpartition(".")
    if directory or not stem or len(ext.encode()) > 64:  # (no extension, a dotfile, or
        stem, dot, ext = name, "", ""  # one that is no extension: the number goes last)
    for n in range(2, 10_000):
        yield _fitted(stem, f" ({n}){dot}{ext}")
    while True:
        yield _fitted(stem, f" ({secrets.token_hex(8)}){dot}{ext}")


def _fitted(stem: str, tail: str, limit: int = 255) -> str:
    """``stem + tail``, the stem cut (whole characters) so that it fits ``limit`` bytes."""
    room = limit - len(tail.encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem + tail


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
