"""Dead properties (WebDAV's PROPPATCH): what clients say about a file, kept with it.

A client may attach any property (a name in an XML namespace, and an XML value) to a
file or folder; the server keeps it and gives it back, nothing more. They are kept in
one extended attribute of the entry itself, ``user.muxserver.props`` (as the remembered
digests are, hashcache.py): a JSON object from the property's name in Clark notation
(``{namespace}name``) to its whole element as XML, with the namespaces it uses
declared on it. So a property moves with its file (a rename keeps it), is copied with
it (COPY), and goes with it (DELETE); a PUT that replaces a file starts it anew.

On a file system without user extended attributes (or a full one: ext4 gives all of a
file's attributes one block, 4 KiB) a change is refused with ``no_space`` and nothing
is changed; reading finds none.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

from mypy_extensions import mypyc_attr

from .errors import StorageError, split_name
from .root import O_READ_FILE, RootCore, _entry

PROPS_XATTR = "user.muxserver.props"
#: The JSON of one entry's properties, at most (what one ext4 block holds, with room).
MAX_PROPS_BYTES = 3072


@mypyc_attr(native_class=False)
class Properties(RootCore):
    """Reading and changing entries' dead properties, and copying them."""

    def _open_entry(self, name: str) -> tuple[int, os.stat_result]:
        """A descriptor of the file or directory ``name`` (not followed, never
        blocking) and its stat; StorageError as every walk."""
        parts = split_name(name, allow_root=True)
        if not parts:
            fd = os.dup(self.dir_fd)
            return fd, os.fstat(fd)
        with self._existing(name) as (parts, parent, st):
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise StorageError("not_a_file", f"{name!r} is not a file or folder")
            try:
                fd = os.open(parts[-1], O_READ_FILE, dir_fd=parent)
            except OSError as exc:
                raise StorageError("io_error", f"cannot open {name!r}: {exc.strerror}") from None
        return fd, os.fstat(fd)

    def described(self, name: str, *, dead: bool) -> dict[str, Any]:
        """What ``stat`` says of ``name`` (type, size, mtime, the digests remembered),
        plus, with ``dead``, its dead properties under "props": one descriptor."""
        fd, st = self._open_entry(name)
        try:
            return self._facts(fd, st, name, dead)
        finally:
            os.close(fd)

    def _facts(self, fd: int, st: os.stat_result, name: str, dead: bool) -> dict[str, Any]:
        """What ``described`` says of the open file or folder ``fd``."""
        info = _entry(name, st)
        if stat.S_ISREG(st.st_mode):
            for digest in self.hashes.known(fd, st):
                info.update(digest.field)
        if dead:
            info["props"] = read_properties(fd)
        return info

    def described_members(self, folder: str, leaves: list[str], *,
                          dead: bool) -> list[dict[str, Any] | None]:
        """What ``described`` says of each of ``leaves``, the members of ``folder``
        (None for one gone, or no file or folder): the folder is walked to once, not
        once per member (a PROPFIND of a folder asks this for every member)."""
        parent = self.open_dir(split_name(folder, allow_root=True))
        found: list[dict[str, Any] | None] = []
        try:
            for leaf in leaves:
                found.append(self._member(parent, leaf, f"{folder}/{leaf}" if folder else leaf,
                                          dead))
        finally:
            os.close(parent)
        return found

    def _member(self, parent: int, leaf: str, name: str, dead: bool) -> dict[str, Any] | None:
        try:
            fd = os.open(leaf, O_READ_FILE, dir_fd=parent)
        except OSError:
            return None  # (gone, a link, or not to be opened: not shown)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                return None
            return self._facts(fd, st, name, dead)
        finally:
            os.close(fd)

    def change_properties(self, name: str, changes: list[tuple[str, str | None]]) -> None:
        """Set (a value) or remove (None) each property of ``changes``, in order, all or
        none: StorageError "no_space" if they cannot be kept, nothing changed then."""
        fd, _ = self._open_entry(name)
        try:
            props = read_properties(fd)
            for key, value in changes:
                if value is None:
                    props.pop(key, None)
                else:
                    props[key] = value
            write_properties(fd, props, name)
        finally:
            os.close(fd)


def read_properties(fd: int) -> dict[str, str]:
    """The dead properties kept on ``fd``'s file ({} when none, or unreadable)."""
    try:
        data = os.getxattr(fd, PROPS_XATTR)
    except OSError:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def write_properties(fd: int, props: dict[str, str], name: str) -> None:
    """Keep ``props`` on ``fd``'s file (none: the attribute goes)."""
    try:
        if not props:
            try:
                os.removexattr(fd, PROPS_XATTR)
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    raise
            return
        data = json.dumps(props, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) > MAX_PROPS_BYTES:
            raise StorageError("no_space", f"the properties of {name!r} would take "
                                           f"{len(data)} bytes, over the {MAX_PROPS_BYTES} "
                                           "kept per file")
        os.setxattr(fd, PROPS_XATTR, data)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise StorageError("no_space", "this server's file system keeps no extended "
                                           "attributes, so no properties") from None
        if exc.errno in (errno.ENOSPC, errno.E2BIG, errno.EDQUOT):
            raise StorageError("no_space", f"no room for the properties of {name!r}") from None
        raise StorageError("io_error", f"cannot keep the properties of {name!r}: "
                                       f"{exc.strerror}") from None


def copy_properties(src_fd: int, dst_fd: int, name: str) -> None:
    """The dead properties of ``src_fd``'s file, given to ``dst_fd``'s (COPY)."""
    props = read_properties(src_fd)
    if props:
        write_properties(dst_fd, props, name)
