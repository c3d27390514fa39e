"""Remembered digests of files, for the server and the client alike.

Hashing a big file costs a whole read of it. A digest stays valid while the file's
inode, size and modification time are unchanged, so both sides remember what they
computed: in memory and, where the file system allows it, in an extended attribute of
the file itself (one per algorithm: ``user.muxserver.blake3``, ``user.muxserver.sha256``),
which survives a restart. A download can then announce a file's digest at once, and an
upload of a file already sent (or just downloaded) skips its hash pass.
"""

from __future__ import annotations

import collections
import os

from .digests import ALGORITHMS, Digest, is_hex64

XATTR_PREFIX = "user.muxserver."
PERSIST_HASH_FROM = 1024 * 1024  # digests of files this big are also kept in an xattr


class HashCache:
    """Digests of files, by inode, valid while size and mtime are unchanged."""

    def __init__(self, max_entries: int = 100_000) -> None:
        # (dev, ino) -> (size, mtime_ns, {algorithm: hex})
        self._entries: collections.OrderedDict[
            tuple[int, int], tuple[int, int, dict[str, str]]] = collections.OrderedDict()
        self._max = max_entries

    def lookup(self, fd: int, st: os.stat_result, algorithm: str) -> Digest | None:
        """The file's remembered digest in ``algorithm``, or None."""
        known = self._known(st)
        if algorithm in known:
            return Digest(algorithm, known[algorithm])
        stored = _read_xattr(fd, st, algorithm)
        if stored is not None:
            self._remember(st, stored)
        return stored

    def known(self, fd: int, st: os.stat_result) -> list[Digest]:
        """Every digest remembered for the file (for ``stat``: never computed here)."""
        found = [self.lookup(fd, st, algorithm) for algorithm in ALGORITHMS]
        return [digest for digest in found if digest is not None]

    def remember(self, fd: int, st: os.stat_result, digest: Digest) -> None:
        self._remember(st, digest)
        if st.st_size < PERSIST_HASH_FROM:
            return  # cheap to hash again after a restart: spare the syscall
        try:
            value = f"{st.st_size} {st.st_mtime_ns} {digest.hex}".encode()
            os.setxattr(fd, XATTR_PREFIX + digest.algorithm, value)
        except OSError:
            pass  # no xattr support here (or read-only): the memory entry still serves

    def _known(self, st: os.stat_result) -> dict[str, str]:
        key = (st.st_dev, st.st_ino)
        hit = self._entries.get(key)
        if hit is None or hit[:2] != (st.st_size, st.st_mtime_ns):
            return {}
        self._entries.move_to_end(key)
        return hit[2]

    def _remember(self, st: os.stat_result, digest: Digest) -> None:
        key = (st.st_dev, st.st_ino)
        known = dict(self._known(st))  # (a changed file's old digests are dropped)
        known[digest.algorithm] = digest.hex
        self._entries[key] = (st.st_size, st.st_mtime_ns, known)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def _read_xattr(fd: int, st: os.stat_result, algorithm: str) -> Digest | None:
    try:
        size, mtime_ns, value = os.getxattr(fd, XATTR_PREFIX + algorithm).decode().split()
        stamp = (int(size), int(mtime_ns))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if stamp != (st.st_size, st.st_mtime_ns) or not is_hex64(value):
        return None
    return Digest(algorithm, value)
