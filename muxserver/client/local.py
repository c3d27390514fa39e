"""Local files and their digests, on the client's side.

The client remembers the digests of the files it sends or receives, as the server
does (``hashcache.py``): in memory, and in an extended attribute of the file, valid
while its size and mtime are unchanged. Putting the same big file again, or a file
just downloaded, then declares its digest at once, without a read pass.
"""

from __future__ import annotations

import os
import stat

from ..digests import ALGORITHMS, Digest, new_hasher
from ..hashcache import HashCache

HASH_CHUNK = 1024 * 1024

#: The remembered digests of this process's local files.
LOCAL_HASHES = HashCache()


def remembered_digest(fd: int, st: os.stat_result) -> Digest | None:
    """A digest of the open file this machine already knows (the fastest algorithm's
    first), or None: then an upload hashes it as it sends it (a trailer)."""
    for algorithm in ALGORITHMS:
        digest = LOCAL_HASHES.lookup(fd, st, algorithm)
        if digest is not None:
            return digest
    return None


def file_digest(fd: int, st: os.stat_result, algorithm: str) -> Digest:
    """The digest of an open file in ``algorithm``: remembered, or computed (one read
    pass) and remembered."""
    digest = LOCAL_HASHES.lookup(fd, st, algorithm)
    if digest is None:
        hasher = new_hasher(algorithm)
        offset = 0
        while offset < st.st_size:
            chunk = os.pread(fd, min(HASH_CHUNK, st.st_size - offset), offset)
            if not chunk:
                break
            hasher.update(chunk)
            offset += len(chunk)
        digest = Digest(algorithm, hasher.hexdigest())
        if offset == st.st_size:
            LOCAL_HASHES.remember(fd, st, digest)
    return digest


def remember_digest(path: str, digest: Digest) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        remember_digest_of(fd, digest)
    finally:
        os.close(fd)


def remember_digest_of(fd: int, digest: Digest) -> None:
    LOCAL_HASHES.remember(fd, os.fstat(fd), digest)


def is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
