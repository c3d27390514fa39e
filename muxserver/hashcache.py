"""Remembered SHA-256 digests of files, for the server and the client alike.

Hashing a big file costs a whole read of it. A digest stays valid while the file's
inode, size and modification time are unchanged, so both sides remember what they
computed: in memory and, where the file system allows it, in an extended attribute of
the file itself, which survives a restart. A download can then announce a file's hash
at once, and an upload of a file already sent (or just downloaded) skips its hash pass.
"""

from __future__ import annotations

import collections
import os
import re

HASH_XATTR = "user.muxserver.sha256"
PERSIST_HASH_FROM = 1024 * 1024  # hashes of files this big are also kept in an xattr


class HashCache:
    """SHA-256 of files, by inode, valid while size and mtime are unchanged.

    Kept in memory and, where the file system allows, in an extended attribute of the
    file, so a download can announce the hash without reading the file first.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: collections.OrderedDict[tuple[int, int], tuple[int, int, str]] = (
            collections.OrderedDict())
        self._max = max_entries

    def lookup(self, fd: int, st: os.stat_result) -> str | None:
        key = (st.st_dev, st.st_ino)
        hit = self._entries.get(key)
        if hit is not None and hit[:2] == (st.st_size, st.st_mtime_ns):
            self._entries.move_to_end(key)
            return hit[2]
        stored = _read_hash_xattr(fd, st)
        if stored is not None:
            self._remember(st, stored)
        return stored

    def remember(self, fd: int, st: os.stat_result, digest: str) -> None:
        self._remember(st, digest)
        if st.st_size < PERSIST_HASH_FROM:
            return  # cheap to hash again after a restart: spare the syscall
        try:
            value = f"{st.st_size} {st.st_mtime_ns} {digest}".encode()
            os.setxattr(fd, HASH_XATTR, value)
        except OSError:
            pass  # no xattr support here (or read-only): the memory entry still serves

    def _remember(self, st: os.stat_result, digest: str) -> None:
        self._entries[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, digest)
        self._entries.move_to_end((st.st_dev, st.st_ino))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def _read_hash_xattr(fd: int, st: os.stat_result) -> str | None:
    try:
        size, mtime_ns, digest = os.getxattr(fd, HASH_XATTR).decode().split()
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (int(size), int(mtime_ns)) != (st.st_size, st.st_mtime_ns):
        return None
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None
