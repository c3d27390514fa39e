"""Local files and their hashes, on the client's side.

The client remembers the SHA-256 of the files it sends or receives, as the server
does (``hashcache.py``): in memory, and in an extended attribute of the file, valid
while its size and mtime are unchanged. Putting the same big file again, or a file
just downloaded, then skips a whole read pass.
"""

from __future__ import annotations

import hashlib
import os
import stat

from ..hashcache import HashCache

HASH_CHUNK = 1024 * 1024

#: The remembered hashes of this process's local files.
LOCAL_HASHES = HashCache()


def file_sha256(fd: int, st: os.stat_result) -> str:
    """The SHA-256 of an open file: remembered, or computed and remembered."""
    digest = LOCAL_HASHES.lookup(fd, st)
    if digest is None:
        hasher = hashlib.sha256()
        offset = 0
        while offset < st.st_size:
            chunk = os.pread(fd, min(HASH_CHUNK, st.st_size - offset), offset)
            if not chunk:
                break
            hasher.update(chunk)
            offset += len(chunk)
        digest = hasher.hexdigest()
        if offset == st.st_size:
            LOCAL_HASHES.remember(fd, st, digest)
    return digest


def remember_sha256(path: str, digest: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        LOCAL_HASHES.remember(fd, os.fstat(fd), digest)
    finally:
        os.close(fd)


def is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
