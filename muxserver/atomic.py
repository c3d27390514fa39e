"""Giving a finished file its final name, in one atomic step: the server's uploads and
the client's downloads alike.

A file is written under a temporary name, verified, flushed, and only then renamed,
so a reader of the final name sees the old file or the new one, never a piece. The
rename step has one subtlety: when the final name must not exist yet, ``rename`` would
silently replace a file that appeared meanwhile (another upload, a user). Linux's
``renameat2`` with RENAME_NOREPLACE refuses instead, in the same single step; where
the kernel or the file system lacks it, ``link`` is used, which fails if the name
exists, and the temporary name is removed after it.
"""

from __future__ import annotations

import ctypes
import errno
import os

#: link() failures that mean "this file system has no hard links" (FAT, some FUSE).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS}
#: renameat2(2) and its flag that refuses to replace (Linux 3.15, glibc 2.28); Python's
#: os module does not offer it.
_RENAME_NOREPLACE = 1
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
_AT_FDCWD = -100  # (paths relative to the working directory, as os.rename takes them)


def publish(src: str, dst: str, *, overwrite: bool, dir_fd: int | None = None) -> None:
    """Move the finished file ``src`` onto ``dst`` (names in the directory ``dir_fd``,
    or paths). Without ``overwrite``, raise FileExistsError if ``dst`` exists."""
    at = {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    if overwrite:
        os.replace(src, dst, **at)
        return
    where = _AT_FDCWD if dir_fd is None else dir_fd
    if _rename_noreplace(src, dst, where, where):
        return
    try:
        os.link(src, dst, follow_symlinks=False, **at)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here: check, then rename (a short window, the best we can do).
        if _exists(dst, dir_fd):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
        os.replace(src, dst, **at)
        return
    os.unlink(src, dir_fd=dir_fd)


def _exists(name: str, dir_fd: int | None) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def rename_new(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
    """Rename ``src`` (a file or a directory) to ``dst``, which must not exist:
    FileExistsError if it does. One atomic step where the kernel can (renameat2 with
    RENAME_NOREPLACE); elsewhere a check then a rename (a short window)."""
    if _rename_noreplace(src, dst, src_dir_fd, dst_dir_fd):
        return
    if _exists(dst, dst_dir_fd):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def _rename_noreplace(src: str, dst: str, src_dir_fd: int, dst_dir_fd: int) -> bool:
    """renameat2(RENAME_NOREPLACE): True when done; False when this kernel or file
    system cannot (the caller falls back); OSError otherwise (FileExistsError when
    ``dst`` exists)."""
    if _renameat2 is None:
        return False
    if _renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst),
                  _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), dst)
