"""A non-blocking load generator for bench.py: one selectors loop drives every
connection, so the generator is not the bottleneck it would be with a thread or a
process per client. It speaks the protocol with muxserver's own encoders and decoder
and checks every digest, in BLAKE3 as the muxserver client does (``--digest sha256``
for the protocol's first digest): puts by the server's reply, gets by hashing what
arrives.
"""

from __future__ import annotations

import collections
import os
import resource
import selectors
import socket
import statistics
import struct
import time
from pathlib import Path

from benchlib import rss, spawn_floor_server, spawn_muxserver, tree_cpu_split

from muxserver import protocol
from muxserver.digests import BLAKE3, Digest, new_hasher
from muxserver.protocol import BodyData, FrameDecoder, FrameEnd, FrameHeader, NEED_DATA


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# The kernel's receive time of the data a recvmsg returns (SO_TIMESTAMPNS, Linux),
# in CLOCK_REALTIME nanoseconds, the clock of time.time_ns().
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
STAMP_SPACE = socket.CMSG_SPACE(16)
TIMESPEC = struct.Struct("qq")


class Request:
    __slots__ = ("frame", "name", "expect", "sent", "hasher", "round")

    def __init__(self, frame: bytes, name: str, expect: Digest, round_name: str = "") -> None:
        self.frame, self.name, self.expect = frame, name, expect
        self.sent = 0  # time.time_ns() when the request's first byte went to the socket
        self.hasher = None
        self.round = round_name  # "put 3": every connection's third put (latency by round)


class Connection:
    """One client: sends its requests (``window`` at a time) and checks the replies."""

    def __init__(self, sock: socket.socket, requests: list[Request], window: int) -> None:
        self.sock = sock
        self.todo = collections.deque(requests)
        self.inflight: collections.deque[Request] = collections.deque()
        self.unsent: collections.deque[Request] = collections.deque()
        self.out = bytearray()
        self.decoder = FrameDecoder()
        self.window = window
        self.current: Request | None = None
        self.mask = 0

    def fill(self) -> None:
        while self.todo and len(self.inflight) < self.window:
            req = self.todo.popleft()
            self.out += req.frame
            self.inflight.append(req)
            self.unsent.append(req)

    def stamp(self, now: int) -> None:
        """A request's latency starts when its first byte goes to the socket and ends
        when the kernel received the reply's last byte (its receive timestamp): one
        generator thread plays a thousand clients, and the time it takes to get round
        to a client, before sending or after the reply arrived, is its own, not the
        server's. (``seen`` keeps the latency as the generator got round to it.)"""
        while self.unsent:
            self.unsent.popleft().sent = now

    def done(self) -> bool:
        return not self.todo and not self.inflight


class LoadRun:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.selector = selectors.DefaultSelector()
        self.latencies: list[float] = []  # send -> the kernel received the reply
        self.seen: list[float] = []  # send -> the generator got round to the reply
        self.by_round: dict[str, list[float]] = collections.defaultdict(list)
        self.errors = 0
        self.checked = 0
        self.scratch = memoryview(bytearray(1 << 20))

    def run(self, plans: list[list[Request]], window: int, *,
            until_closed: bool = False) -> float:
        """Each plan over a connection of its own, all opened first; returns the
        seconds from the first request to the last reply. ``until_closed``: then end
        each connection and wait until the server has closed its side, so that the
        server's work for the connections' ends is done when this returns (a count of
        what the server does, not a timing, needs that)."""
        conns = []
        for plan in plans:
            sock = socket.create_connection((self.host, self.port))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            conns.append(Connection(sock, plan, window))
        started = time.perf_counter()
        for conn in conns:
            conn.fill()
            self._interest(conn)
        live = len(conns)
        while live:
            for key, mask in self.selector.select(timeout=60):
                conn = key.data
                if mask & selectors.EVENT_WRITE:
                    self._write(conn)
                if mask & selectors.EVENT_READ:
                    self._read(conn)
                if conn.done():
                    self.selector.unregister(conn.sock)
                    conn.mask = -1
                    live -= 1
                elif conn.mask != -1:
                    self._interest(conn)
        elapsed = time.perf_counter() - started
        if until_closed:
            for conn in conns:
                conn.sock.shutdown(socket.SHUT_WR)
            for conn in conns:
                conn.sock.settimeout(120)
                while conn.sock.recv(65536):  # (until the server's end of the stream)
                    pass
        for conn in conns:
            conn.sock.close()
        return elapsed

    def _interest(self, conn: Connection) -> None:
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if mask != conn.mask:
            if conn.mask == 0:
                self.selector.register(conn.sock, mask, conn)
            else:
                self.selector.modify(conn.sock, mask, conn)
            conn.mask = mask

    def _write(self, conn: Connection) -> None:
        conn.stamp(time.time_ns())
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        del conn.out[:sent]

    def _read(self, conn: Connection) -> None:
        try:
            n, ancillary, _flags, _addr = conn.sock.recvmsg_into([self.scratch], STAMP_SPACE)
        except BlockingIOError:
            return
        now = time.time_ns()
        arrived = now
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack(data)
                arrived = seconds * 1_000_000_000 + nanoseconds
        if not n:
            self.errors += len(conn.inflight) + len(conn.todo)
            conn.inflight.clear()
            conn.todo.clear()
            return
        conn.decoder.receive_data(self.scratch[:n])
        while (event := conn.decoder.next_event()) is not NEED_DATA:
            if isinstance(event, FrameHeader):
                req = conn.inflight[0]
                expect = req.expect
                if not event.fields.get("ok"):
                    self.errors += 1
                elif event.length == 0 and event.fields.get(expect.algorithm) != expect.hex:
                    self.errors += 1  # a reply with another digest (or none)
                elif event.length:
                    req.hasher = new_hasher(expect.algorithm)
            elif isinstance(event, BodyData):
                conn.inflight[0].hasher.update(event.data)
            elif isinstance(event, FrameEnd):
                req = conn.inflight.popleft()
                self.latencies.append((arrived - req.sent) / 1e9)
                self.seen.append((now - req.sent) / 1e9)
                if req.round:
                    self.by_round[req.round].append(self.latencies[-1])
                if req.hasher is not None:
                    if req.hasher.hexdigest() != req.expect.hex:
                        self.errors += 1
                self.checked += 1
                conn.fill()
        conn.decoder.keep_leftover()


def _payloads(count: int, size: int, algorithm: str = BLAKE3) -> list[tuple[bytes, Digest]]:
    out = []
    for i in range(count):
        data = (os.urandom(64) * (size // 64 + 1))[:size]
        hasher = new_hasher(algorithm)
        hasher.update(data)
        out.append((data, Digest(algorithm, hasher.hexdigest())))
    return out


def _stats(run: LoadRun, elapsed: float, files: int, description: str) -> dict:
    return {"description": description, "seconds": elapsed, "files_per_s": files / elapsed,
            "p50_ms": 1000 * statistics.median(run.latencies),
            "p99_ms": 1000 * percentile(run.latencies, 0.99),
            "p99_seen_ms": 1000 * percentile(run.seen, 0.99),
            "errors": run.errors, "checked": run.checked}


def many_clients_plans(clients: int, size: int, algorithm: str = BLAKE3
                       ) -> tuple[list[list[Request]], list[list[Request]]]:
    """The many-clients load's requests: each connection's 16 puts of ``size`` bytes
    (``c<connection>/f<k>``), and then its 16 gets of the same files."""
    payloads = _payloads(16, size, algorithm)
    puts = [[Request(protocol.encode_put(j, f"c{i}/f{j}", len(data), digest) + data,
                     f"c{i}/f{j}", digest, f"put {j + 1}")
             for j, (data, digest) in enumerate(payloads)] for i in range(clients)]
    gets = [[Request(protocol.encode_get(100 + j, f"c{i}/f{j}", digest=algorithm),
                     f"c{i}/f{j}", digest, f"get {j + 1}")
             for j, (_data, digest) in enumerate(payloads)] for i in range(clients)]
    return puts, gets


def many_clients(args, work: Path, workers: int = 1, code: Path | None = None,
                 extra: list[str] | None = None, floor: str = "",
                 digest: str | None = None) -> dict:
    """Each connection puts 16 files of ``args.file_kib`` KiB (64), one after another,
    then gets them back.
    ``workers``: the server's --workers; ``code``: another checkout to run instead;
    ``extra``: more server flags; ``floor``: a floor server's script instead
    (``bare_server.py``, ``flat_server.py``); ``digest``:
    the requests' digest (default: ``args.digest``)."""
    algorithm = digest or args.digest
    raise_fd_limit()
    root = work / "root"
    root.mkdir()
    if floor:
        server = spawn_floor_server(root, floor, code)
    else:
        server = spawn_muxserver(root, *(["--workers", str(workers)] if workers > 1 else []),
                                 *(extra or []), code=code)
    puts, gets = many_clients_plans(args.clients, args.file_kib * 1024, algorithm)
    cpu_server, cpu_self = tree_cpu_split(server.proc.pid), time.process_time()
    try:
        run = LoadRun(server.host, server.port)
        put_time = run.run(puts, window=1)
        cpu_puts = tree_cpu_split(server.proc.pid)
        get_time = run.run(gets, window=1)
        cpu_gets = tree_cpu_split(server.proc.pid)
        user, system = (after - before for after, before in zip(cpu_gets, cpu_server))
        put_cpu, get_cpu = sum(cpu_puts) - sum(cpu_server), sum(cpu_gets) - sum(cpu_puts)
        cpu_self = time.process_time() - cpu_self
    finally:
        server.stop()
    files = 2 * 16 * args.clients
    result = _stats(run, put_time + get_time, files,
                    f"{args.clients} connections each putting 16 files of {args.file_kib} KiB, "
                    "one at a time, then getting them back")
    phases = {phase: [sample for name, samples in run.by_round.items()
                      if name.startswith(phase) for sample in samples]
              for phase in ("put", "get")}
    result.update(put_seconds=put_time, get_seconds=get_time, server_cpu=user + system,
                  server_user=user,
                  # (each phase apart: a put hashes its body, a get does not, and the
                  # slowest hundredth of all requests is mostly puts)
                  put_cpu=put_cpu, get_cpu=get_cpu,
                  put_p99_ms=1000 * percentile(phases["put"], 0.99),
                  get_p99_ms=1000 * percentile(phases["get"], 0.99),
                  # A connection's cycle (its 16 requests, one at a time, over the
                  # phase) less its mean latency: the generator's own share of it.
                  put_aside_ms=1000 * (put_time / 16 - statistics.mean(phases["put"])),
                  get_aside_ms=1000 * (get_time / 16 - statistics.mean(phases["get"])),
                  generator_cpu=cpu_self,
                  rounds={name: {"p50_ms": 1000 * statistics.median(samples),
                                 "p99_ms": 1000 * percentile(samples, 0.99)}
                          for name, samples in run.by_round.items()})
    return result


def small_files(args, work: Path) -> dict:
    """20,000 files of 4 KiB over 50 connections, pipelined (64 in flight each)."""
    raise_fd_limit()
    root = work / "root"
    root.mkdir()
    server = spawn_muxserver(root)
    payloads = _payloads(64, 4096, args.digest)
    try:
        run = LoadRun(server.host, server.port)
        plans = []
        for i in range(50):
            plan = []
            for j in range(400):
                data, digest = payloads[(i + j) % len(payloads)]
                name = f"s{i}/f{j}"
                plan.append(Request(protocol.encode_put(j, name, len(data), digest) + data,
                                    name, digest))
            plans.append(plan)
        elapsed = run.run(plans, window=64)
    finally:
        server.stop()
    return _stats(run, elapsed, 20000, "20,000 puts of 4 KiB over 50 connections, "
                                       "64 pipelined per connection")



def idle_crowd(args, work: Path) -> dict:
    """Hold ``--idle`` idle connections; measure RSS per connection and stat latency."""
    raise_fd_limit()
    root = work / "root"
    root.mkdir()
    (root / "probe.txt").write_bytes(b"probe")
    server = spawn_muxserver(root)
    crowd: list[socket.socket] = []
    try:
        warm = socket.create_connection((server.host, server.port))  # allocate loop structures
        warm.sendall(protocol.encode_stat(1, "probe.txt"))
        _read_frame(warm)
        warm.close()
        time.sleep(0.5)
        before = rss(server.proc.pid)
        for _ in range(args.idle):
            crowd.append(socket.create_connection((server.host, server.port)))
        # every connection proves it is held: one stat each, pipelined over the crowd
        for sock in crowd:
            sock.sendall(protocol.encode_stat(1, "probe.txt"))
        held = all(_read_frame(sock).get("ok") for sock in crowd)
        after = rss(server.proc.pid)
        latencies = []
        for _ in range(200):
            started = time.perf_counter()
            with socket.create_connection((server.host, server.port)) as fresh:
                fresh.sendall(protocol.encode_stat(1, "probe.txt"))
                _read_frame(fresh)
            latencies.append(time.perf_counter() - started)
    finally:
        for sock in crowd:
            sock.close()
        server.stop()
    return {"connections": args.idle, "held": held, "rss_before": before, "rss_after": after,
            "rss_per_connection": (after - before) / args.idle,
            "stat_p50_ms": 1000 * statistics.median(latencies),
            "stat_p99_ms": 1000 * percentile(latencies, 0.99)}


def _read_frame(sock: socket.socket) -> dict:
    decoder = FrameDecoder()
    fields: dict = {}
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            decoder.receive_data(sock.recv(65536))
        elif isinstance(event, FrameHeader):
            fields = event.fields
        elif isinstance(event, FrameEnd):
            return fields
