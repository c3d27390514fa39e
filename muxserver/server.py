"""The server: the listening socket, the connection table, and start and stop.

``Server.serve_forever`` runs the event loop of ``loop.py``. The :class:`Listener`
accepts a bounded number of clients per turn (fairness), refuses clients over the
connection cap with an explicit ``too_many_clients`` error frame, and backs off
for ``accept_backoff`` seconds when the process is out of descriptors (EMFILE),
because a level-triggered selector would otherwise report the listening socket
ready on every turn and the loop would spin.

The server exposes :meth:`Server.snapshot` (connections, transfers and counters)
for observers such as the live console; it never imports them.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import os
import signal
import socket
import ssl
import time
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from .access import ALL_RIGHTS, Access, Ceiling, HostNames
from .accounts import LiveAccounts
from .addresses import public_host
from .channel import Channel
from .limits import Limits, raise_nofile_limit
from .loop import EVENT_READ, EventLoop, Timer
from .observe import NOBODY, Observer
from .seals import SECRET_NAME, Seal
from .session import Services, Stats
from .shares import BOOK_NAME as SHARES_NAME
from .shares import ShareBook
from .shared import ConnectionCount, LocalConnections, SharedState
from .sniff import Refusal, Sniffer
from .storage import Root
from .units import format_duration

log = logging.getLogger("muxserver")

#: accept() failures that mean "out of resources": back off instead of spinning.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclasses.dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9009
    root: str = "."
    allow_overwrite: bool = False  # clients may replace files (they must ask to)
    allow_delete: bool = False  # clients may remove and move files
    read_only: bool = False  # no writes of any kind
    upload_only: bool = False  # a drop box: uploads of new files only, nothing read
    token: str | None = None  # clients must present it (an "auth" request) before anything else
    #: tokens with rights, besides or instead of ``token``
    tokens: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    #: the user file (accounts.py: users and tokens), read again whenever it changes
    token_file: str | None = None
    #: the secret that signs sessions and share links (seals.py); None: in the root
    secret_file: str | None = None
    session_days: float = 30.0  # how long a browser stays signed in
    tls_cert: str | None = None  # PEM certificate chain: with tls_key, the port speaks TLS
    tls_key: str | None = None
    allow_hosts: list[str] = dataclasses.field(default_factory=list)  # extra HTTP Host names
    #: Basic credentials over plain HTTP from other machines (readable on the way)
    allow_basic_over_http: bool = False
    limits: Limits = dataclasses.field(default_factory=Limits)


# (The two reports below cross from a worker to the supervisor by pickle: compiled
# (setup.py), they stay regular Python classes, which pickle as they are.)
@mypyc_attr(native_class=False)
@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """One connection as observers see it (a copy: observers cannot change the server)."""

    id: int
    peer: str
    state: str
    op: str
    name: str
    done: int
    total: int
    started: float
    bytes_in: int
    bytes_out: int
    recv_buffered: int
    send_buffered: int
    last_io: float
    who: str = ""  # signed in as (a user, a named token, a link)


@mypyc_attr(native_class=False)
@dataclasses.dataclass(frozen=True)
class Snapshot:
    address: str
    root: str
    uptime: float
    wakeups: int
    timeout_wakeups: int
    connections: list[ConnectionInfo]
    transfers_done: int
    transfers_failed: int
    bytes_in: int
    bytes_out: int
    stopping_in: float | None = None  # seconds left to transfers after Ctrl-C, if stopping


class Server:
    """A muxserver: one loop, one listener, one session per connection.

    With ``--workers N`` each of N processes runs one (workers.py): worker ``worker``
    of ``workers``, its listening socket one of N on the same port (SO_REUSEPORT), its
    connection count and wrong-token book in ``shared`` memory, its connection ids
    ``worker + 1``, ``worker + 1 + N``, ... (unique across the workers).
    """

    def __init__(self, config: ServerConfig, *, shared: SharedState | None = None,
                 worker: int = 0, workers: int = 1) -> None:
        self.config = config
        self.limits = config.limits
        self.limits.check()
        raise_nofile_limit()
        self.max_connections = self.limits.effective_max_connections()
        self.worker, self.workers = worker, workers
        self.loop = EventLoop(scratch_size=max(self.limits.recv_size, 64 * 1024))
        self.root = Root(config.root, partial_ttl=self.limits.partial_ttl,
                         partial_budget=self.limits.partial_budget, budget_shares=workers,
                         partial_count=self.limits.partial_count,
                         partials_per_writer=self.limits.partials_per_writer,
                         claim_lease=2 * self.limits.stall_timeout)
        self.root.on_partial_kept = self._schedule_partial_expiry
        self._expiry_timer: Timer | None = None
        self._expiry_due = 0.0
        tokens = dict(config.tokens)
        if config.token is not None:
            tokens[config.token] = ALL_RIGHTS
        ceiling = Ceiling(read_only=config.read_only, upload_only=config.upload_only,
                          allow_overwrite=config.allow_overwrite,
                          allow_delete=config.allow_delete)
        accounts = LiveAccounts(config.token_file) if config.token_file else None
        seal = shares = None
        if tokens or accounts is not None:  # (an open server signs nothing, keeps no secret)
            seal = Seal.from_file(secret_path(config, self.root.path))
            seal.load(make=False)  # (ValueError now, for a secret file that holds none)
            shares = ShareBook(os.path.join(self.root.path, SHARES_NAME), seal)
        access = Access(tokens, self.limits, HostNames(config.host, config.allow_hosts),
                        ceiling, strikes=shared.strikes if shared is not None else None,
                        accounts=accounts, seal=seal, shares=shares,
                        session_days=config.session_days)
        if seal is not None:
            access.public_host = public_host(config.host)
        access.basic_over_http = config.allow_basic_over_http
        #: all a session may reach of the server (see session.Services)
        locks = shared.locks if shared is not None else None
        self.services = Services(self.loop, self.root, self.limits, access, locks)
        self.owns_locks = locks is None  # (else the supervisor removes them at its end)
        self.channels: dict[int, Channel] = {}
        # Channels running a session (refused ones do not count), in all the workers.
        self.clients: ConnectionCount = (shared.connections(worker) if shared is not None
                                         else LocalConnections())
        self._stop_at = 0.0  # when a graceful stop ends (see stop_gracefully)
        self._address: tuple[str, int] | None = None  # (host, port), once listening
        self._next_id = worker + 1
        self.listener: Listener | None = None
        self.tls_context = make_tls_context(config.tls_cert, config.tls_key)
        self.observe: Observer = NOBODY  # who watches: the trace, --step (observe.py)

    @property
    def stats(self) -> Stats:
        return self.services.stats

    @property
    def stopping(self) -> bool:
        """A graceful stop is under way."""
        return self.services.stopping

    # -- starting

    def watch(self, observer: Observer) -> None:
        """Report every event of the loop, the listener, the channels and the sessions
        to ``observer`` (observe.py: the trace, --step); NOBODY stops it."""
        self.observe = self.loop.observe = observer
        for channel in self.channels.values():
            channel.observe = observer

    def start(self, *, sweep: bool = True, reuse_port: bool = False) -> tuple[str, int]:
        """Sweep stale temporary files, bind and listen; return the bound address.

        ``sweep`` False: another process of this server swept them (and may be writing
        temporary files of its own already); ``reuse_port``: the port is shared by the
        worker processes (SO_REUSEPORT: the kernel spreads new connections over them).
        """
        # Without this, a write over RLIMIT_FSIZE kills the process with SIGXFSZ
        # instead of failing with EFBIG, which we turn into a "no_space" error reply.
        if hasattr(signal, "SIGXFSZ"):
            try:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            except ValueError:
                pass  # not the main thread (a test running the server in a thread)
        if sweep:
            removed, kept = self.root.sweep_temporary_files()
            if removed or kept:
                log.info("cleaned up after an interrupted server: removed %d temporary "
                         "file(s), kept %d resumable upload(s)", removed, kept)
            self._schedule_partial_expiry()
        family, dual_stack = listening_family(self.config.host)
        sock = socket.create_server((self.config.host, self.config.port), family=family,
                                    backlog=1024, reuse_port=reuse_port,
                                    dualstack_ipv6=dual_stack)
        sock.setblocking(False)
        self.listener = Listener(self, sock)
        self.loop.set_interest(sock, self.listener, EVENT_READ)
        host, port = self._address = sock.getsockname()[:2]
        self.observe.listening(format_address(host, port))
        if self.observe is NOBODY:  # (while narrating, each line goes where it happens)
            self.services.turn_log.attach(self.loop.add_before_sleep)
        return host, port

    def _schedule_partial_expiry(self) -> None:
        """One timer, at the first partial file's expiry (none while there is none: an
        idle server does not wake up)."""
        due = self.root.next_partial_expiry()
        if due is None or (self._expiry_timer is not None and self._expiry_due <= due):
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_due = due
        self._expiry_timer = self.loop.call_later(max(0.0, due - time.time()),
                                                  self._expire_partials)

    def _expire_partials(self) -> None:
        self._expiry_timer = None
        removed = self.root.expire_partials()
        if removed:
            log.info("removed %d interrupted upload(s) untouched for %s", removed,
                     format_duration(self.limits.partial_ttl), extra={"event": "expired"})
        self._schedule_partial_expiry()

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (or listened: the listener closes when a graceful
        stop begins, and the console still shows it)."""
        assert self._address is not None, "start() the server first"
        return self._address

    def handle_signals(self) -> None:
        """SIGINT (Ctrl-C) and SIGTERM stop the server from inside its loop (main thread).

        Call it before announcing that the server is ready: a signal that arrives
        between the announcement and the loop must not be a KeyboardInterrupt.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(signum, self.stop_gracefully)
        # SIGHUP: in a terminal, the terminal went away (stop, as ever); without one (a
        # service, nohup, a script), the conventional "read your settings again"
        self.loop.add_signal_handler(signal.SIGHUP, self.stop_gracefully if on_a_terminal()
                                     else self.reload_accounts)

    def reload_accounts(self) -> None:
        """SIGHUP: read the user file again now, changed or not (and say so)."""
        accounts = self.services.access.accounts
        if accounts is not None:
            accounts.reload_now()

    def serve_forever(self, *, handle_signals: bool = True) -> None:
        """Run until stop(), SIGINT or SIGTERM; then close everything cleanly."""
        if self.listener is None:
            self.start()
        if handle_signals and not self.loop.handles_signals:
            self.handle_signals()
        try:
            self.loop.run()
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Stop at the end of this loop turn; shutdown() then aborts what still runs."""
        self.loop.stop()

    def stop_gracefully(self) -> None:
        """First signal: stop accepting, let transfers finish within the grace period.

        Connections with nothing in progress are closed (with a ``shutting_down``
        frame); the others close as soon as their current transfer is done. What
        still runs when the grace period ends is aborted. A second signal stops now.
        """
        if self.stopping:
            log.warning("second stop signal: stopping now", extra={"event": "stopping"})
            self.stop()
            return
        self.services.stopping = True
        if self.listener is not None:
            self.listener.close()
        busy = 0
        for channel in list(self.channels.values()):
            busy += not channel.protocol.server_stopping()
        grace = self.limits.shutdown_grace
        self._stop_at = time.monotonic() + grace
        log.warning("stopping: no new connections; waiting up to %.0f s for %d transfer(s) "
                    "(Ctrl-C again to stop now)", grace, busy, extra={"event": "stopping"})
        self.loop.call_later(grace, self.stop)
        self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        if self.stopping and not self.channels:
            self.stop()

    def shutdown(self) -> None:
        """Close the listener and every connection; interrupted uploads leave nothing."""
        self.root.on_partial_kept = None  # no more timers: the loop is closing
        if self.listener is not None:
            self.listener.close()
        for channel in list(self.channels.values()):
            channel.abort("server stopping")
            channel.finish_close()
        self.services.turn_log.detach()
        self.loop.close()
        self.root.close()
        if self.owns_locks:
            self.services.locks.remove()
        else:
            self.services.locks.close()

    # -- connections

    def add_client(self, sock: socket.socket, addr: Any) -> None:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a test's socketpair): nothing to tune
        if self.limits.sndbuf is not None:  # (Linux doubles it and enforces a minimum)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.sndbuf)
        peer = _format_peer(addr)
        if self.tls_context is not None:
            sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        conn_id = self._next_id
        self._next_id += self.workers
        host = unmapped(addr[0]) if isinstance(addr, tuple) and addr else peer
        channel = Channel(self.loop, sock, peer, conn_id, self.limits, self.channel_closed,
                          peer_host=host)
        channel.observe = self.observe
        self.channels[conn_id] = channel
        self.stats.connections_total += 1
        if not self.clients.take(self.max_connections):
            self.refuse(channel)
            return
        channel.counted = True
        self.services.turn_log.info("%s connected", peer,
                                    extra={"event": "connected", "conn": conn_id})
        self.observe.accept(conn_id, peer, self.clients.value)
        channel.start(Sniffer(self.services, channel))

    def refuse(self, channel: Channel) -> None:
        """Tell a client over the cap why, then close (lingering, so it can read why)."""
        self.stats.refused_connections += 1
        self.observe.refuse(channel.id, channel.peer, self.clients.value)
        if (len(self.channels) > self.max_connections + self.limits.fd_reserve // 2
                or channel.tls):
            # A flood: no descriptors to spare for courtesy. (Over TLS, the error frame
            # would first cost a whole handshake: the client just sees the close.)
            channel.abort("too many clients")
            log.warning("%s refused: too many clients (%d)", channel.peer,
                        self.max_connections, extra={"event": "refused", "conn": channel.id})
            return
        channel.start(Refusal(channel, self.max_connections))
        log.warning("%s refused: too many clients (%d)", channel.peer, self.max_connections,
                    extra={"event": "refused", "conn": channel.id})

    def channel_closed(self, channel: Channel) -> None:
        self.channels.pop(channel.id, None)
        self.stats.bytes_in_closed += channel.bytes_in
        self.stats.bytes_out_closed += channel.bytes_out
        if channel.counted:
            self.clients.give_back()
            self.services.turn_log.info("%s closed (%s)", channel.peer,
                                        channel.close_reason or "closed",
                                        extra={"event": "closed", "conn": channel.id})
        self._stop_if_idle()

    # -- observing

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        infos = []
        bytes_in, bytes_out = self.stats.bytes_in_closed, self.stats.bytes_out_closed
        for channel in self.channels.values():
            bytes_in += channel.bytes_in
            bytes_out += channel.bytes_out
            infos.append(_connection_info(channel))
        return Snapshot(address=format_address(*self.address), root=self.root.path,
                        uptime=now - self.stats.started, wakeups=self.loop.wakeups,
                        timeout_wakeups=self.loop.timeout_wakeups,
                        connections=infos, transfers_done=self.stats.transfers_done,
                        transfers_failed=self.stats.transfers_failed,
                        bytes_in=bytes_in, bytes_out=bytes_out,
                        stopping_in=self._stop_at - now if self.stopping else None)


def _connection_info(channel: Channel) -> ConnectionInfo:
    protocol = channel.protocol
    transfer = protocol.transfer
    return ConnectionInfo(
        id=channel.id, peer=channel.peer, state=protocol.state_label, who=protocol.account,
        op=transfer.op if transfer else "", name=transfer.name if transfer else "",
        done=transfer.done if transfer else 0, total=transfer.total if transfer else 0,
        started=transfer.started if transfer else channel.opened,
        bytes_in=channel.bytes_in, bytes_out=channel.bytes_out,
        recv_buffered=protocol.recv_buffered,
        send_buffered=channel.out.total, last_io=channel.last_io)


class ListeningServer(Protocol):
    """What a Listener asks of its server (a Server; a test's stand-in)."""

    limits: Limits
    loop: EventLoop
    observe: Observer

    def add_client(self, sock: socket.socket, addr: Any) -> None: ...


class Listener:
    """The listening socket as a loop handler: accepts, caps, and backs off."""

    label = "listener"

    def __init__(self, server: ListeningServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.events = 0
        self.closed = False
        self._backing_off = False

    def on_interest_changed(self, old: int, new: int) -> None:
        pass  # (the trace narrates the back-off itself)

    def on_events(self, mask: int) -> None:
        server = self.server
        # A connection waiting to be accepted is a client waiting like the others: a
        # turn that serves many clients accepts as many (at least accepts_per_tick).
        # With a fixed few, new clients would queue behind a busy crowd for seconds.
        for _ in range(max(server.limits.accepts_per_tick, server.loop.turn_events)):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # no more pending connections (or one gave up before we took it)
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self.back_off(exc)
                else:
                    log.error("accept failed: %s", exc, extra={"event": "error"})
                return
            if self._backing_off:
                log.info("accepting connections again", extra={"event": "emfile"})
                self._backing_off = False
            server.add_client(sock, addr)

    def back_off(self, exc: OSError) -> None:
        """Out of descriptors: stop watching the listener for a while, then resume."""
        loop = self.server.loop
        loop.set_interest(self.sock, self, 0)
        self.server.observe.emfile(exc.strerror or str(exc), self.server.limits.accept_backoff)
        if not self._backing_off:
            log.error("accept failed: %s; pausing new connections for %.1f s",
                      exc.strerror, self.server.limits.accept_backoff,
                      extra={"event": "emfile"})
        self._backing_off = True
        loop.call_later(self.server.limits.accept_backoff, self.resume, owner=self)

    def resume(self) -> None:
        if not self.closed:
            # _backing_off stays set until an accept succeeds, so a long shortage logs once
            self.server.loop.set_interest(self.sock, self, EVENT_READ)
            self.server.observe.emfile_resume()

    def fail(self, exc: Exception) -> None:
        """An unexpected error while accepting: log it and keep listening."""
        log.error("unexpected error while accepting connections", exc_info=exc,
                  extra={"event": "error"})

    def close(self) -> None:
        if not self.closed:
            self.server.loop.set_interest(self.sock, self, 0)
            self.closed = True
            self.sock.close()


def make_tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server-side TLS context (TLS 1.2 or newer), or None for plain TCP."""
    if cert is None and key is None:
        return None
    if not cert or not key:
        raise ValueError("TLS needs both a certificate (--tls-cert) and a key (--tls-key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def _format_peer(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return format_address(unmapped(addr[0]), addr[1])
    return str(addr) or "local"


#: Container objects made (and not yet freed) before a young collection runs: Python's
#: default is 700. A loop turn serving a thousand requests holds several thousand
#: objects until its replies are sent, so at 700 young collections ran many times a
#: turn, and what they found still in use went on to the older generations, up to full
#: collections of every connection's objects in the middle of the load (12 ms each with
#: a thousand clients, the loop stopped). At 10,000, a turn's objects are mostly freed
#: before a collection sees them (docs/PERFORMANCE.md, "What was left to the cyclic
#: collector"). Measured on Python 3.11: an incremental collector (3.14) schedules its
#: work differently, and the figure is to be measured again there.
YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_startup_objects() -> None:
    """For a server process, just before its loop runs: what exists then (modules, the
    root, the listener, the loop) lives as long as the process, so take it out of the
    cyclic collector's scans (``gc.freeze``, after one last collection so no garbage is
    kept forever). A full collection then looks at the connections' objects only: 8 ms
    instead of 17 ms with a thousand clients here, one loop step either way. And the
    young generation is collected less often (YOUNG_COLLECTION_THRESHOLD). (Not for a
    server embedded in another program, whose objects and collector are not ours.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets: ``[::1]:9009``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unmapped(host: str) -> str:
    """An IPv4 client of a dual-stack socket appears as ``::ffff:192.0.2.7``: the same
    client as ``192.0.2.7`` (for the logs, and for the back-off per address)."""
    if host.startswith("::ffff:") and "." in host:
        return host[len("::ffff:"):]
    return host


def listening_family(host: str) -> tuple[socket.AddressFamily, bool]:
    """The address family to listen on for ``host``, and whether the socket should take
    IPv4 too: ``::`` (every IPv6 and IPv4 address) is dual-stack, as ``0.0.0.0`` is
    every IPv4 address."""
    if host in ("::", "[::]"):
        return socket.AF_INET6, socket.has_dualstack_ipv6()
    try:
        infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return socket.AF_INET, False  # (create_server then says why the name is bad)
    return infos[0][0], False


def secret_path(config: ServerConfig, root: str) -> str:
    """Where the server secret is (seals.py): --secret-file, else in the served root."""
    return config.secret_file or os.path.join(root, SECRET_NAME)


def on_a_terminal() -> bool:
    """Whether this process was started from a terminal (its SIGHUP is then a hangup)."""
    import sys

    return any(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout))
