"""Directory operations of the served root: make, remove (in bounded steps), move.

Each one is atomic where the kernel lets it be (a mkdir, a rename) and durable before
it is reported done (the parent directory is ``fsync``-ed). A tree is removed a few
hundred entries per step, between other clients' requests; links are removed, never
followed.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, Iterator

from mypy_extensions import mypyc_attr

from ..atomic import rename_new
from .errors import StorageError, require_regular, split_name, write_error
from .root import DIR_MODE, RootCore, scan_dir


@mypyc_attr(native_class=False)
class Directories(RootCore):
    """Making, removing and moving entries below the root."""

    def make_dir(self, name: str, *, parents: bool, beside_if_taken: bool = False) -> bool:
        """Make the directory ``name``; with ``parents``, its missing parents too, and
        an existing directory is fine. Returns True if a directory was made. With
        ``beside_if_taken`` (a writer that may not read), parents are always made and
        the directories are walked as ``open_dir_beside`` does."""
        parts = split_name(name)
        created: list[int] = []
        if beside_if_taken:  # (a drop box: the walk goes on beside what is there)
            fd, parts = self.open_dir_beside(parts, create=True, created=created)
            os.close(fd)
            self._sync_made(name, parts, created)
            return bool(created)
        parent = self.open_dir(parts[:-1], create=parents, created=created)
        try:
            self._sync_made(name, parts, created)
            os.mkdir(parts[-1], DIR_MODE, dir_fd=parent)
            os.fsync(parent)
        except FileExistsError:
            if not parents:
                raise StorageError("exists", f"{name!r} already exists") from None
            st = self._lstat(parent, parts[-1], name)  # (-p: a directory there is fine)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise StorageError("exists", f"{name!r} exists and is not a directory") from None
            return bool(created)
        except OSError as exc:
            raise write_error(exc, name, "make the directory") from None
        finally:
            os.close(parent)
        return True

    def _sync_made(self, name: str, dirs: list[str], created: list[int]) -> None:
        try:
            self.sync_created(dirs, created)
        except OSError as exc:
            raise write_error(exc, name, "make the directory") from None

    def remove_in_steps(self, name: str, *, recursive: bool,
                        step: int = 256) -> Iterator[int]:
        """Remove ``name`` (a file, a link, or with ``recursive`` a whole directory),
        yielding the count removed so far every ``step`` entries, so a huge tree is
        removed between other clients' requests. Links are removed, never followed; one
        directory descriptor is held at a time, whatever the depth."""
        with self._existing(name) as (parts, parent, st):
            if not stat.S_ISDIR(st.st_mode):
                _remove(os.unlink, parts[-1], parent, name)
                _fsync(parent, name)
            elif not recursive:
                raise StorageError("is_directory", f"{name!r} is a directory: remove it and "
                                                   "all it holds with recursive (rm -r)")
        if not stat.S_ISDIR(st.st_mode):
            yield 1
            return
        yield from self._remove_tree(parts, step)

    def _remove_tree(self, top: list[str], step: int) -> Iterator[int]:
        """The removal of a tree, a step every ``step`` operations (an unlink, a
        rmdir, a directory opened or an entry met: a tree of empty folders costs as
        many steps as one of files)."""
        removed = work = 0
        waiting: list[tuple[list[str], bool]] = [(top, False)]  # (directory, emptied)
        while waiting:
            parts, emptied = waiting.pop()
            where = "/".join(parts)
            work += 1
            if work % step == 0:
                yield removed
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
                for entry in scan_dir(fd, where):
                    work += 1
                    if entry.is_dir(follow_symlinks=False):
                        waiting.append(([*parts, entry.name], False))
                    else:
                        _remove(os.unlink, entry.name, fd, f"{where}/{entry.name}")
                        removed += 1
                    if work % step == 0:
                        yield removed
            finally:
                os.close(fd)
        parent = self.open_dir(top[:-1])
        try:
            _fsync(parent, "/".join(top))
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
                raise write_error(exc, dst, f"move {src!r} onto") from None
            return replaces
        finally:
            os.close(sparent)
            os.close(dparent)

    def _check_target(self, parent: int, leaf: str, name: str, overwrite: bool,
                      allow_overwrite: bool) -> bool:
        """Refuse what may not be replaced; True if a file will be replaced."""
        if self._free(parent, leaf):
            return False
        st = self._lstat(parent, leaf, name)
        if st is None:
            return False  # (removed meanwhile)
        require_regular(st, name, "replacing")
        if not overwrite:
            raise StorageError("exists", f"{name!r} already exists")
        if not allow_overwrite:
            raise StorageError("overwrite_refused", f"{name!r} exists and this server does "
                                                    "not overwrite files (--allow-overwrite)")
        return True


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


def _fsync(fd: int, name: str) -> None:
    """Make a removal durable; an error of the disk is a StorageError like any other."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise write_error(exc, name) from None
