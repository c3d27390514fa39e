"""Shared fixtures: servers on 127.0.0.1 port 0, in a thread or in a subprocess.

Every fixture stops what it started in a ``finally``. Nothing waits with sleep():
the threaded server is ready when ``start()`` returns (the socket is listening), and
the subprocess server is ready when it prints its "listening on" line.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import dataclasses
import errno
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import blake3
import pytest

from muxserver import protocol

#: The request path is compiled by mypyc (setup.py, scripts/compiled_check.py): its
#: classes cannot be patched or measured by cProfile, so the few tests that do either
#: are skipped there; every other test runs against the compiled modules too.
COMPILED = protocol.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
needs_python_classes = pytest.mark.skipif(
    COMPILED, reason="patches or profiles a class that the compiled build compiles")
from muxserver.digests import BLAKE3, Digest
from muxserver.client import Client
from muxserver.limits import Limits
from muxserver.server import Server, ServerConfig, Snapshot
from muxserver.turnlog import Lines

LISTENING = re.compile(r"listening on (\S+):(\d+)")


@dataclasses.dataclass
class RunningServer:
    server: Server
    host: str
    port: int
    root: Path

    def client(self, **kw) -> Client:
        return Client(self.host, self.port, **kw)

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        return sock

    def snapshot(self, timeout: float = 30.0) -> Snapshot:
        """The server's snapshot, taken in the loop's own thread (as the console's is):
        from the test's thread it would race a connection closing meanwhile."""
        taken: list[Snapshot] = []
        done = threading.Event()

        def take() -> None:
            taken.append(self.server.snapshot())
            done.set()

        self.server.loop.call_soon_threadsafe(take)
        assert done.wait(timeout), "the server's loop did not take the snapshot"
        return taken[0]


def start_thread_server(root: Path, **config) -> tuple[RunningServer, threading.Thread]:
    limits = config.pop("limits", None) or Limits()
    config.setdefault("host", "127.0.0.1")
    server = Server(ServerConfig(port=0, root=str(root), limits=limits, **config))
    host, port = server.start()
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    return RunningServer(server, host, port, root), thread


def stop_thread_server(running: RunningServer, thread: threading.Thread) -> None:
    running.server.loop.stop_threadsafe()
    thread.join(timeout=10)
    assert not thread.is_alive(), "server thread did not stop"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def make_server(root: Path) -> Iterator:
    """Start threaded servers with custom settings; all are stopped at the end."""
    started = []

    def make(root_dir: Path | None = None, **config) -> RunningServer:
        running, thread = start_thread_server(root_dir or root, **config)
        started.append((running, thread))
        return running

    try:
        yield make
    finally:
        for running, thread in started:
            stop_thread_server(running, thread)


@pytest.fixture
def server(make_server) -> RunningServer:
    return make_server()


# ------------------------------------------------------------------ subprocesses


@dataclasses.dataclass
class ServerProcess:
    proc: subprocess.Popen
    host: str
    port: int
    root: Path
    banner: str
    _stdout: list[str] = dataclasses.field(default_factory=list)
    _stderr: list[str] = dataclasses.field(default_factory=list)
    _readers: list[threading.Thread] = dataclasses.field(default_factory=list)
    _arrived: threading.Condition = dataclasses.field(default_factory=threading.Condition)

    def drain(self) -> None:
        """Keep reading the server's output, so a full pipe never blocks its logging."""
        for stream, sink in ((self.proc.stdout, self._stdout), (self.proc.stderr, self._stderr)):
            thread = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            thread.start()
            self._readers.append(thread)

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            with self._arrived:
                sink.append(line)
                self._arrived.notify_all()

    def wait_for_stderr(self, pattern: str, count: int = 1, timeout: float = 60) -> list[str]:
        """Wait until ``count`` lines of the server's stderr match ``pattern`` (a regular
        expression) while it runs; return them."""
        regex = re.compile(pattern)

        def matching() -> list[str]:
            return [line for line in self._stderr if regex.search(line)]

        with self._arrived:
            assert self._arrived.wait_for(lambda: len(matching()) >= count, timeout), (
                f"no {count} line(s) matching {pattern!r} in: {''.join(self._stderr)}")
            return matching()

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) after the process ended."""
        assert self.proc.poll() is not None, "read the output after the server stopped"
        for thread in self._readers:
            thread.join(timeout=10)
        return self.banner + "".join(self._stdout), "".join(self._stderr)


def spawn_server(root: Path, *args: str, env: dict | None = None,
                 prefix: list[str] | None = None) -> ServerProcess:
    cmd = (prefix or []) + [sys.executable, "-m", "muxserver", "serve", "--port", "0",
                            "--root", str(root), "--no-console", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    banner = []
    for line in proc.stdout:  # blocks until the server prints (or dies: EOF)
        banner.append(line)
        match = LISTENING.search(line)
        if match:
            running = ServerProcess(proc, match.group(1).strip("[]"), int(match.group(2)),
                                    root, "".join(banner))
            running.drain()
            return running
    proc.wait(timeout=10)
    raise RuntimeError(f"server did not start: {proc.stderr.read()}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def server_process(root: Path) -> Iterator[ServerProcess]:
    running = spawn_server(root)
    try:
        yield running
    finally:
        stop_process(running.proc)


def run_whole(argv: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """subprocess.run for a program that starts servers of its own (the stage checker,
    the demos): it runs in a process group of its own, and that whole group is killed
    afterwards, so a timeout or a crash can never leave one of its servers running."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def load_stage_checker():
    """scripts/stages/check.py as a module (its tables and its names, for the tests that
    keep the tutorials in step with it)."""
    import importlib.util

    path = Path(__file__).parent.parent / "scripts" / "stages" / "check.py"
    spec = importlib.util.spec_from_file_location("stages_check", path)
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    sys.modules["stages_check"] = check  # (its dataclasses look themselves up there)
    try:
        spec.loader.exec_module(check)
    finally:
        del sys.modules["stages_check"]
    return check


def run_cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "muxserver", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------- raw frames


def recv_frame(sock: socket.socket) -> tuple[dict, bytes]:
    """Read one whole reply frame from a blocking socket."""
    decoder = protocol.FrameDecoder()
    fields, body = None, bytearray()
    while True:
        event = decoder.next_event()
        if event is protocol.NEED_DATA:
            data = sock.recv(65536)
            decoder.receive_data(data)
            continue
        if isinstance(event, protocol.FrameHeader):
            fields = event.fields
        elif isinstance(event, protocol.BodyData):
            body += event.data
        elif isinstance(event, protocol.FrameEnd):
            leftover = decoder.keep_leftover()
            assert leftover == 0, "recv_frame read past its frame; use a FrameReader"
            return fields, bytes(body)
        elif isinstance(event, protocol.PeerClosed):
            raise ConnectionError("server closed the connection")


class Valve:
    """A TCP relay between clients and a server that lets at most ``up`` bytes through
    towards the server and ``down`` bytes towards the client, and then passes nothing
    more in that direction (what comes after is read and dropped, so the relay still
    sees the peer go away). A transfer through it stops at a known byte however fast
    the machine is: a test cuts it there instead of racing it. Use as a context
    manager; every socket and thread it made is closed at the end."""

    def __init__(self, port: int, *, up: int | None = None, down: int | None = None) -> None:
        self.target, self.up, self.down = port, up, down
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = [self.listener]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def __enter__(self) -> "Valve":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server is gone: so is this connection, as it would be
                client.close()
                continue
            self.socks += [client, server]
            for src, dst, cap in ((client, server, self.up), (server, client, self.down)):
                pump = threading.Thread(target=self._pump, args=(src, dst, cap), daemon=True)
                self.threads.append(pump)
                pump.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, cap: int | None) -> None:
        left = cap if cap is not None else -1
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if left < 0:
                    dst.sendall(data)
                elif left:
                    dst.sendall(data[:left])
                    left -= min(left, len(data))
            how = socket.SHUT_WR  # the peer finished sending: say so, go on reading
        except OSError:
            how = socket.SHUT_RDWR  # the peer vanished: end both directions
        try:
            dst.shutdown(how)  # (shutdown, not close: it also wakes the other pump)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.socks:  # (shutdown first: it wakes a thread blocked on it)
            for end in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
                try:
                    end()
                except OSError:
                    pass
        for thread in self.threads:
            thread.join(timeout=10)


class FrameReader:
    """Reads consecutive frames from a blocking socket, keeping leftovers between them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = protocol.FrameDecoder()

    def frame(self) -> tuple[dict, bytes]:
        fields, body = None, bytearray()
        while True:
            event = self.decoder.next_event()
            if event is protocol.NEED_DATA:
                self.decoder.receive_data(self.sock.recv(65536))
            elif isinstance(event, protocol.FrameHeader):
                fields = event.fields
            elif isinstance(event, protocol.BodyData):
                body += event.data
            elif isinstance(event, protocol.FrameEnd):
                return fields, bytes(body)
            else:
                raise ConnectionError("server closed the connection")

    def closed(self) -> bool:
        """True once the server has closed (reads to EOF)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            if not data:
                return True


def sha256(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def b3(data: bytes) -> Digest:
    """The BLAKE3 digest of ``data``, as the native client declares and checks it."""
    return Digest(BLAKE3, blake3.blake3(data).hexdigest())


def put_frame(req_id: int, name: str, data: bytes, **kw) -> bytes:
    return protocol.encode_put(req_id, name, len(data), sha256(data), **kw) + data


def visible_files(root: Path) -> list[str]:
    """Every file below root, relative, sorted (temporary files included: they must not be)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def temp_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".muxserver-*")]


def wait_for_upload_to_start(root: Path, timeout: float = 10.0) -> None:
    """Wait until the server has created an upload's temporary file: the real sign that
    it has read the put header (a subprocess server offers no other hook)."""
    import time

    deadline = time.monotonic() + timeout
    while not any(p.name.startswith(".muxserver-tmp-") for p in root.rglob("*")):
        if time.monotonic() > deadline:
            raise AssertionError("the server never started the upload")
        time.sleep(0.005)


class UnreadableHashJob:
    """Stands in for ``hashing.HashJob`` (monkeypatch ``rules.HashJob``): a file the
    helper cannot read, reported at once, as the helper reports a failed read. Holds no
    descriptor, so a test can count the server's."""

    def __init__(self, fd: int, algorithm: str, *, already: int = 0) -> None:
        self.algorithm, self.hashed, self.fd, self.cancelled = algorithm, 0, -1, False
        self.error = OSError(errno.EIO, os.strerror(errno.EIO))

    def finish(self, total: int, on_done) -> None:
        on_done(None)

    def cancel(self) -> None:
        self.cancelled = True


def wait_until(condition, timeout: float = 10.0, what: str = "the condition") -> None:
    """Wait until ``condition()`` holds: for a change another thread makes (the hashing
    helper closing a descriptor) that no log record or reply announces."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.005)


class LogWatcher(logging.Handler):
    """Collects the server's log records so a test can wait for one (a real signal)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.cond:
            self.records.extend(each_line(record))
            self.cond.notify_all()

    def events(self, kind: str) -> list[logging.LogRecord]:
        with self.cond:
            return [r for r in self.records if getattr(r, "event", None) == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.events_unlocked(kind)) >= count, timeout)
            assert ok, f"no {count} '{kind}' log record(s) within {timeout} s: " + "; ".join(
                r.getMessage() for r in self.records[-10:])
            return self.events_unlocked(kind)

    def events_unlocked(self, kind: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == kind]


def each_line(record: logging.LogRecord) -> list[logging.LogRecord]:
    """A record of a loop turn's lines (turnlog.py) as one record per line, each with
    its own fields (``event``, ``conn``); any other record as it is."""
    if not isinstance(record.msg, Lines):
        return [record]
    return [logging.makeLogRecord({**vars(record), "msg": template, "args": args,
                                   "message": None, **(fields or {})})
            for template, args, fields in record.msg.lines]


@pytest.fixture
def log_watcher() -> Iterator[LogWatcher]:
    watcher = LogWatcher()
    logger = logging.getLogger("muxserver")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watcher)
    try:
        yield watcher
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(old_level)


# ------------------------------------------------------------- scarce resources

needs_prlimit = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")


def open_connections(host: str, port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection((host, port), timeout=10) for _ in range(count)]


@contextlib.contextmanager
def mounted_tmpfs(size: str):
    """A small tmpfs, so that ENOSPC is real (needs the right to mount: root)."""
    where = Path(tempfile.mkdtemp(prefix="muxserver-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True).returncode == 0
    if not mounted:
        where.rmdir()
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
        where.rmdir()


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A throw-away CA (trustme) and a certificate for 127.0.0.1 and localhost:
    cert.pem, key.pem and ca.pem in one directory."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(where / "key.pem")
    cert.cert_chain_pems[0].write_to_path(where / "cert.pem")
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(where / "cert.pem", append=True)
    ca.cert_pem.write_to_path(where / "ca.pem")
    return where


def tls_settings(certificates: Path) -> dict[str, str]:
    """ServerConfig fields that make a test server speak TLS."""
    return {"tls_cert": str(certificates / "cert.pem"), "tls_key": str(certificates / "key.pem")}


def tls_client_context(certificates: Path) -> ssl.SSLContext:
    """A client context that trusts the throw-away CA of ``certificates``."""
    return ssl.create_default_context(cafile=str(certificates / "ca.pem"))


os.environ.setdefault("PYTHONUNBUFFERED", "1")
