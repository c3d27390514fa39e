"""Storage errors: one exception with a stable code, and what each OS error means.

Every refusal of the storage is a :class:`StorageError` whose ``code`` is one of the
protocol's stable codes (protocol.ERROR_CODES); the codecs turn it into their wire's
words (a native error frame, an HTTP status). The functions below say what an
``OSError`` from the kernel means for a client: "server_busy" when the server is short
of descriptors, "no_space", "forbidden", "not_a_directory"...

This module does no I/O but one ``lstat``, to tell a symbolic link from a file.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import MuxError
from ..names import BadName
from ..names import split_name as _split_name


class StorageError(MuxError):
    """A request the root cannot serve (or, checked against its grant, may not ask)."""


def split_name(name: str, *, allow_root: bool = False) -> list[str]:
    """names.split_name, refusing with StorageError("bad_name") like every storage call."""
    try:
        return _split_name(name, allow_root=allow_root)
    except BadName as exc:
        raise StorageError("bad_name", exc.message) from None


def require_regular(st: os.stat_result | None, name: str,
                     refusing: str = "following") -> os.stat_result:
    """``st``, if it is a regular file's; else the StorageError that says what it is."""
    if st is not None and stat.S_ISREG(st.st_mode):
        return st  # (the common case, with one test)
    if st is None:
        raise StorageError("not_found", f"no such file {name!r}")
    if stat.S_ISDIR(st.st_mode):
        raise StorageError("is_directory", f"{name!r} is a directory")
    if stat.S_ISLNK(st.st_mode):
        raise StorageError("forbidden", f"{name!r} is a symbolic link; not {refusing} it")
    raise StorageError("not_a_file", f"{name!r} is not a regular file")


def _busy(exc: OSError, what: str) -> StorageError | None:
    """Out of descriptors (or kernel memory) is the server's shortage, not the client's
    mistake: a stable code that says "try again" (HTTP 503)."""
    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return StorageError("server_busy", f"{what}: the server is short of file "
                                           f"descriptors ({exc.strerror}); try again soon")
    return None


def dir_error(exc: OSError, parent: int, part: str, where: str) -> StorageError:
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


# What an errno means for one kind of call: (stable code, message); the message may use
# {name} and {why} (the kernel's words). An errno not in the table is "io_error".
_LEAF_ERRORS = {
    errno.ENOENT: ("not_found", "no such file {name!r}"),
    errno.ELOOP: ("forbidden", "{name!r} is a symbolic link; not following it"),
    errno.ENXIO: ("not_a_file", "{name!r} is not a regular file"),
    errno.EACCES: ("forbidden", "{name!r}: permission denied"),
}
_WRITE_ERRORS = {
    errno.ENOSPC: ("no_space", "cannot {doing} {name!r}: {why}"),
    errno.EDQUOT: ("no_space", "cannot {doing} {name!r}: {why}"),
    errno.EFBIG: ("no_space", "cannot {doing} {name!r}: {why}"),
    errno.EACCES: ("forbidden", "cannot {doing} {name!r}: {why}"),
    errno.EPERM: ("forbidden", "cannot {doing} {name!r}: {why}"),
    errno.EROFS: ("forbidden", "cannot {doing} {name!r}: {why}"),
    errno.ENOTDIR: ("not_a_directory", "cannot {doing} {name!r}: a parent is a file"),
    errno.ENAMETOOLONG: ("bad_name", "cannot {doing} {name!r}: name too long"),
}


def _looked_up(exc: OSError, name: str, table: dict[int, tuple[str, str]],
               busy_what: str, otherwise: str, doing: str = "") -> StorageError:
    busy = _busy(exc, busy_what)
    if busy is not None:
        return busy
    code, text = table.get(exc.errno or 0, ("io_error", otherwise))
    return StorageError(code, text.format(name=name, why=exc.strerror, doing=doing))


def leaf_error(exc: OSError, name: str) -> StorageError:
    """What a failed open, stat or unlink of the file ``name`` means."""
    return _looked_up(exc, name, _LEAF_ERRORS, repr(name), "{name!r}: {why}")


def write_error(exc: OSError, name: str, doing: str = "store") -> StorageError:
    """What a failed creation, write or rename of ``name`` means; ``doing``: what was
    being done to it, in words ("store", "make the directory", "move onto")."""
    return _looked_up(exc, name, _WRITE_ERRORS, f"cannot {doing} {name!r}",
                      "cannot {doing} {name!r}: {why}", doing)
