"""Every limit, timeout and buffer size of the server, in one place.

Each default carries a one-line reason: where the number comes from (a trusted
server's default, an OS fact) and what it protects. ``docs/OPERATIONS.md`` lists
the same table for operators; ``cli.py`` turns every field into a flag.

This module must never import anything that does I/O.
"""

from __future__ import annotations

import dataclasses
import resource

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: The largest header length the 16-bit field of the frame prefix can carry.
HEADER_SIZE_CEILING = 65535


@dataclasses.dataclass(slots=True)
class Limits:
    """Server limits. Sizes are bytes, times are seconds."""

    #: h11 caps an incomplete HTTP header at 16 KiB; our headers are small JSON objects.
    max_header_size: int = 16 * KiB
    #: Refuses absurd declared sizes (2**63) before any file is opened; raise it if you must.
    max_file_size: int = TiB
    #: None means "derived from RLIMIT_NOFILE minus fd_reserve", like Redis's maxclients.
    max_connections: int | None = None
    #: Redis keeps 32 descriptors for itself (log files, the listener, uploads being written).
    fd_reserve: int = 32
    #: nginx client_header_timeout: the whole header must arrive in this time (slowloris).
    header_timeout: float = 60.0
    #: nginx client_body_timeout / send_timeout: longest pause between two bytes of a transfer.
    stall_timeout: float = 60.0
    #: asyncio's ssl_handshake_timeout: a TLS handshake must finish in this time.
    handshake_timeout: float = 60.0
    #: vsftpd idle_session_timeout: a connection with nothing in progress is closed after this.
    idle_timeout: float = 300.0
    #: After an error reply we half-close and read what is still in flight for this long, so
    #: the peer is not sent an RST that would destroy the reply it has not read yet.
    close_linger: float = 2.0
    #: asyncio's high-water mark is 64 KiB; a little more keeps sendfile calls large.
    output_high_water: int = 256 * KiB
    #: asyncio resumes writers at a quarter of the high-water mark.
    output_low_water: int = 64 * KiB
    #: Hard cap on reply bytes held in memory per connection (Redis: 32 MiB for pubsub clients).
    max_output_buffer: int = 32 * MiB
    #: Bytes asked of each recv_into (the loop's one reused scratch buffer).
    recv_size: int = 256 * KiB
    #: Cap on each send/sendfile call; None means "as much as the socket takes".
    send_size: int | None = None
    #: Largest sendfile count per writable event: one connection cannot hog the loop.
    sendfile_chunk: int = 4 * MiB
    #: Files up to this size are read into the reply (one send for header and body).
    inline_file_size: int = 64 * KiB
    #: Bytes hashed per loop turn for a file whose SHA-256 is not known yet.
    hash_step: int = 1 * MiB
    #: Entries per page of a directory listing reply.
    list_page_size: int = 1000
    #: New connections accepted per loop turn (fairness towards clients already connected).
    accepts_per_tick: int = 64
    #: On SIGINT/SIGTERM, transfers under way get this long to finish (a second signal
    #: stops at once); systemd would wait 90 s, but a person at Ctrl-C will not.
    shutdown_grace: float = 10.0
    #: tus servers expire unfinished uploads after a day or more: a partial file of an
    #: interrupted resumable upload untouched this long is removed at the next start.
    partial_ttl: float = 24 * 3600.0
    #: vsftpd max_login_fails: wrong tokens (or requests before one) before we hang up.
    auth_failures: int = 3
    #: asyncio waits 1 s after EMFILE before accepting again; nginx waits 500 ms.
    accept_backoff: float = 1.0

    def effective_max_connections(self) -> int:
        """The configured cap, or the descriptor limit minus the reserve."""
        if self.max_connections is not None:
            return self.max_connections
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return max(1, soft - self.fd_reserve)

    def check(self) -> None:
        """Raise ValueError for a combination that cannot work."""
        if not 64 <= self.max_header_size <= HEADER_SIZE_CEILING:
            raise ValueError(f"max header size must be 64..{HEADER_SIZE_CEILING} bytes")
        if self.output_low_water > self.output_high_water:
            raise ValueError("output low-water mark is above the high-water mark")
        if self.recv_size < 1 or (self.send_size is not None and self.send_size < 1):
            raise ValueError("recv/send sizes must be at least 1 byte")
        for name in ("header_timeout", "stall_timeout", "idle_timeout", "handshake_timeout",
                     "accept_backoff", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        if self.max_file_size < 0:
            raise ValueError("max file size must not be negative")


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the new soft limit.

    Each client costs one descriptor, and the default soft limit (often 1024) would cap
    a server that the kernel would happily let hold far more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep the soft limit we have; max connections is derived from it
    return soft
