"""splice(2) helpers: body bytes from a socket to a file without passing through Python.

Downloads already leave with ``os.sendfile`` (file -> socket). This is the other
direction, for large bodies being received: socket -> pipe -> file, both moves done by
the kernel. The receiver asks for exactly the bytes left in the body, so the next
frame's bytes stay in the socket for the next ``recv``. The data never reaches user
space, so its SHA-256 is computed by reading the file back (``hashing.py``).

Used by the server's channels and by the client's downloads. Neither TLS (the kernel
would move ciphertext) nor platforms without ``os.splice`` use it.
"""

from __future__ import annotations

import errno
import fcntl
import os

F_SETPIPE_SZ = 1031  # from <fcntl.h>; not exported by Python's fcntl module
PIPE_SIZE = 1 << 20
MOVE = getattr(os, "SPLICE_F_MOVE", 0)
NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 0)
#: splice() failures that mean "not possible for these descriptors": use recv instead.
UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class SplicePipe:
    """A pipe used as the kernel's bounce buffer; always left empty after each use."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        try:  # 1 MiB per move instead of the default 64 KiB
            self.capacity = fcntl.fcntl(self.write_end, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            self.capacity = 65536  # over /proc/sys/fs/pipe-max-size: keep the default

    @staticmethod
    def available() -> bool:
        return hasattr(os, "splice")

    def take_from_socket(self, sock_fd: int, count: int) -> int:
        """Up to ``count`` bytes from the socket into the pipe. 0: end of stream.
        Raises BlockingIOError when nothing is there, OSError otherwise."""
        return os.splice(sock_fd, self.write_end, min(count, self.capacity),
                         flags=MOVE | NONBLOCK)

    def give_to_file(self, fd: int, offset: int, count: int) -> None:
        """Move the ``count`` bytes in the pipe to the file at ``offset``. On an error
        (disk full...) the pipe is emptied anyway, then the error is raised."""
        left = count
        try:
            while left:
                moved = os.splice(self.read_end, fd, left, offset_dst=offset + count - left,
                                  flags=MOVE)
                if moved == 0:
                    raise OSError(errno.EIO, "splice moved nothing")
                left -= moved
        except OSError:
            while left:
                left -= len(os.read(self.read_end, left))
            raise

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)
