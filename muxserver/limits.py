"""Every limit, timeout and buffer size of the server, in one place.

Each default carries a one-line reason: where the number comes from (a trusted
server's default, an OS fact) and what it protects. ``docs/OPERATIONS.md`` lists
the same table for operators; ``cli.py`` turns every field into a flag.

This module must never import anything that does I/O.
"""

from __future__ import annotations

import dataclasses
import resource
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: The largest header length the 16-bit field of the frame prefix can carry.
HEADER_SIZE_CEILING = 65535


def limit(default: Any, why: str, unit: str = "") -> Any:
    """A Limits field: its default, the reason for it, and its unit ("bytes", "s")."""
    return dataclasses.field(default=default, metadata={"why": why, "unit": unit})


@dataclasses.dataclass(slots=True)
class Limits:
    """Server limits. Sizes are bytes, times are seconds. Each field's ``why`` says where
    its default comes from; ``cli.py`` shows it in --help and docs/OPERATIONS.md
    explains what a client sees when the limit is hit."""

    max_header_size: int = limit(
        16 * KiB, "h11 caps an incomplete header at 16 KiB; ours are small JSON objects",
        "bytes")
    max_file_size: int = limit(
        TiB, "refuses absurd declared sizes (2**63) before any file is opened", "bytes")
    max_connections: int | None = limit(
        None, "default: RLIMIT_NOFILE minus the reserve, like Redis's maxclients")
    fd_reserve: int = limit(
        32, "Redis keeps 32 descriptors for itself (listener, files being written)")
    header_timeout: float = limit(
        60.0, "nginx client_header_timeout: a whole header in this time (slowloris)", "s")
    stall_timeout: float = limit(
        60.0, "nginx client_body_timeout/send_timeout: longest pause inside a transfer", "s")
    handshake_timeout: float = limit(
        60.0, "asyncio's ssl_handshake_timeout: a TLS handshake must finish in this time", "s")
    idle_timeout: float = limit(
        300.0, "vsftpd idle_session_timeout: nothing in progress for this long", "s")
    close_linger: float = limit(
        2.0, "after an error reply, read what is in flight this long so no RST eats it", "s")
    output_high_water: int = limit(
        256 * KiB, "asyncio uses 64 KiB; more keeps sendfile calls large", "bytes")
    output_low_water: int = limit(
        64 * KiB, "asyncio resumes writers at a quarter of the high-water mark", "bytes")
    max_xml_body: int = limit(
        1000 * 1000, "Apache's LimitXMLRequestBody: a WebDAV request's XML, read into "
        "memory", "bytes")
    files_per_connection: int = limit(
        2, "open files a connection's queued replies may hold; its next requests wait")
    max_output_buffer: int = limit(
        32 * MiB, "Redis's hard cap for pubsub clients: memory a non-reader may cost", "bytes")
    recv_size: int = limit(
        256 * KiB, "bytes asked of each recv_into (one reused buffer; lower it to teach)",
        "bytes")
    reads_per_event: int = limit(
        4, "recv calls per readable event while each fills the buffer (fairness cap)")
    send_size: int | None = limit(
        None, "cap on each send/sendfile call: short writes on purpose (a torture knob; "
        "default: none)", "bytes")
    sndbuf: int | None = limit(
        None, "SO_SNDBUF of each client socket: small values make the kernel itself take "
        "short writes (a teaching knob; default: the kernel's autotuning)", "bytes")
    sendfile_chunk: int = limit(
        4 * MiB, "largest sendfile per writable event: no connection hogs the loop", "bytes")
    inline_file_size: int = limit(
        16 * KiB, "files this small go out with their header in one send; bigger ones by "
        "sendfile (measured: 64 KiB gets ~40 % faster by sendfile)", "bytes")
    list_page_size: int = limit(
        1000, "entries per listing frame: a huge directory streams in pages")
    accepts_per_tick: int = limit(
        64, "new connections per loop turn, or as many as the clients the turn serves "
        "if more: new and connected clients each get a turn's step")
    shutdown_grace: float = limit(
        10.0, "transfers under way get this long after Ctrl-C (twice: stop now)", "s")
    partial_ttl: float = limit(
        24 * 3600.0, "tus servers expire unfinished uploads after a day or more", "s")
    partial_budget: int | None = limit(
        None, "bytes all interrupted uploads kept for resume may hold together; default: "
        "a quarter of the space free at start (oldest evicted first)", "bytes")
    partial_count: int = limit(
        1000, "unfinished uploads kept at once: an empty one costs no bytes but an inode "
        "and a directory entry (the oldest is evicted; a new tus upload is refused)")
    partials_per_writer: int = limit(
        100, "unfinished uploads one token (or everyone, without tokens) may keep: one "
        "writer cannot take the whole count")
    auth_failures: int = limit(
        3, "vsftpd max_login_fails: wrong tokens before the connection is closed")
    address_auth_failures: int = limit(
        10, "fail2ban's maxretry idea: wrong tokens from one address before its back-off")
    auth_backoff: float = limit(
        60.0, "an address that guessed wrong too often is refused this long (fail2ban)",
        "s")
    accept_backoff: float = limit(
        1.0, "asyncio waits 1 s after EMFILE before accepting again (nginx 500 ms)", "s")
    worker_restart_calm: float = limit(
        10.0, "--workers: a worker that served this long is started again at once when it "
        "dies; one that dies sooner waits 1, 2, 4... s (at most 30), so a crash loop "
        "does not spin (systemd's restart rate limit, in short)", "s")

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
        if self.sndbuf is not None and self.sndbuf < 1:
            raise ValueError("--sndbuf must be at least 1 byte (Linux raises it to its minimum)")
        for name in ("header_timeout", "stall_timeout", "idle_timeout", "handshake_timeout",
                     "accept_backoff", "shutdown_grace", "partial_ttl", "auth_backoff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        if self.max_file_size < 0:
            raise ValueError("max file size must not be negative")
        if self.auth_failures < 1 or self.address_auth_failures < 1:
            raise ValueError("auth failure counts must be at least 1")
        if self.partial_count < 1 or self.partials_per_writer < 1:
            raise ValueError("partial file counts must be at least 1")
        if self.files_per_connection < 1:
            raise ValueError("files per connection must be at least 1")


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
