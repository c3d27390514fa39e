"""--workers N: N processes on one port (SO_REUSEPORT), limits counted once for all.

The kernel decides which worker accepts a connection (a hash of the client's address
and port), so these tests never expect a particular worker: they make enough
connections that each worker gets some (the chance that 40 all land on one of two is
2 in 2**40), or check what must hold whichever worker a connection lands on.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading

import pytest

from muxserver import protocol
from muxserver.client import Client
from muxserver.shared import LocalStrikes, SharedState

from .conftest import FrameReader, spawn_server, stop_process

pytestmark = pytest.mark.timeout(120)
WORKERS = re.compile(r"workers: (\d+) processes \(pids ([\d, ]+)\)")


class Workers:
    """A server with workers, and the pids of its workers (to be sure they end)."""

    def __init__(self, root, *args: str) -> None:
        self.server = spawn_server(root, "--workers", "2", *args)
        match = WORKERS.search(self.server.banner)
        assert match and match.group(1) == "2", self.server.banner
        self.pids = [int(pid) for pid in match.group(2).split(", ")]

    def stop(self) -> tuple[str, str]:
        stop_process(self.server.proc)
        for pid in self.pids:  # (they stop with the supervisor; never leave one behind)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.server.output()


@pytest.fixture
def workers(root):
    started = []

    def start(*args: str) -> Workers:
        started.append(Workers(root, *args))
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            running.stop()


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=30)
    return sock


def http_status(server, request: bytes) -> int:
    """The status code of one HTTP request on a new connection."""
    with connect(server) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            data = sock.recv(4096)
            assert data, "closed without a status line"
            head += data
    return int(head.split(b" ", 2)[1])


def put_forty(server, tmp_path) -> None:
    """Puts f0..f39, each on a new connection, so the kernel spreads them over the
    workers (all 40 on one of two: a chance of 2 in 2**40)."""
    (tmp_path / "f").write_bytes(b"spread me")
    for i in range(40):
        with Client(server.host, server.port) as client:
            client.put_file(tmp_path / "f", f"f{i}")


def test_two_workers_share_the_port_and_the_work(workers, tmp_path):
    running = workers()
    server = running.server
    put_forty(server, tmp_path)
    assert sorted(p.name for p in server.root.iterdir()) == sorted(f"f{i}" for i in range(40))
    assert server.proc.poll() is None
    _out, err = running.stop()
    assert server.proc.returncode == 0
    shares = [int(n) for n in re.findall(r"worker \d: (\d+)", err)]
    assert len(shares) == 2 and sum(shares) == 40 and min(shares) > 0, err
    assert all(not os.path.exists(f"/proc/{pid}") or _is_zombie(pid) for pid in running.pids)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_connection_cap_counts_the_clients_of_every_worker(workers):
    server = workers("--max-connections", "3").server
    held = []
    try:
        for i in range(3):
            sock = connect(server)
            sock.sendall(protocol.encode_stat(1, "nothing"))
            assert FrameReader(sock).frame()[0]["error"] == "not_found"  # accepted, counted
            held.append(sock)
        for _ in range(8):  # whichever worker takes them, the server is full
            with connect(server) as extra:
                extra.sendall(protocol.encode_stat(1, "nothing"))  # (answered in kind)
                fields, _ = FrameReader(extra).frame()
                assert fields["error"] == "too_many_clients", fields
        for _ in range(8):  # and over HTTP alike
            assert http_status(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 503
    finally:
        for sock in held:
            sock.close()


def test_wrong_tokens_count_once_across_the_workers(workers):
    server = workers("--token", "right", "--address-auth-failures", "3",
                     "--auth-backoff", "300").server
    for _ in range(3):  # three guesses, each on a new connection (any worker)
        with connect(server) as sock:
            sock.sendall(protocol.encode_auth(1, "guess"))
            assert FrameReader(sock).frame()[0]["error"] == "unauthorized"
    for _ in range(8):  # now even the right token is refused, by every worker
        with connect(server) as sock:
            sock.sendall(protocol.encode_auth(1, "right"))
            fields, _ = FrameReader(sock).frame()
            assert fields["error"] == "too_many_attempts", fields
    for _ in range(8):  # and over HTTP alike
        assert http_status(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Authorization: Bearer right\r\n\r\n") == 429


def test_a_worker_that_dies_leaves_the_others_serving(workers, tmp_path):
    running = workers()
    server = running.server
    dead = os.pidfd_open(running.pids[0])  # (readable once that process has exited)
    try:
        os.kill(running.pids[0], signal.SIGKILL)
        assert select.select([dead], [], [], 60)[0]  # gone, and its listening socket too
    finally:
        os.close(dead)
    (tmp_path / "f").write_bytes(b"still here")
    with Client(server.host, server.port) as client:  # (its socket left the port's group)
        for i in range(10):
            client.put_file(tmp_path / "f", f"after{i}")
    _out, err = running.stop()
    assert "worker 1 (pid" in err and "exited unexpectedly" in err
    assert server.proc.returncode == 0
    assert len(list(server.root.iterdir())) == 10


def _killed(pid: int) -> None:
    """SIGKILL a worker of ours and wait until it is gone (its pidfd turns readable)."""
    dead = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        assert select.select([dead], [], [], 60)[0]
    finally:
        os.close(dead)


def test_a_killed_worker_is_started_again_and_serves(workers, tmp_path):
    running = workers()
    server = running.server
    _killed(running.pids[0])
    line = server.wait_for_stderr(r"worker 1 is serving again \(pid (\d+)\)")[0]
    successor = int(re.search(r"pid (\d+)", line).group(1))
    running.pids.append(successor)  # (stopped with the others at the end)
    assert successor not in running.pids[:2] and os.path.exists(f"/proc/{successor}")
    put_forty(server, tmp_path)  # (both workers take some: the successor serves)
    _out, err = running.stop()
    assert re.search(r"worker 1 \(pid \d+\) exited unexpectedly \(killed by SIGKILL\); the "
                     r"others go on, and it starts again after 0 s", err), err
    shares = [int(n) for n in re.findall(r"worker \d: (\d+)", err)]
    assert len(shares) == 2 and sum(shares) == 40 and min(shares) > 0, err
    assert server.proc.returncode == 0


def test_the_clients_of_a_dead_worker_stop_counting_against_the_cap(workers):
    """Its connections died with it: they must not fill the cap for the others."""
    running = workers("--max-connections", "2")
    server = running.server
    held = [connect(server) for _ in range(2)]
    try:
        for sock in held:  # both counted
            sock.sendall(protocol.encode_stat(1, "nothing"))
            assert FrameReader(sock).frame()[0]["error"] == "not_found"
        with connect(server) as extra:
            extra.sendall(protocol.encode_stat(1, "nothing"))
            assert FrameReader(extra).frame()[0]["error"] == "too_many_clients"
        for pid in running.pids[:2]:  # wherever the two landed, their worker dies
            _killed(pid)
        server.wait_for_stderr(r"worker \d is serving again", count=2)
    finally:
        for sock in held:
            sock.close()
    fresh = [connect(server) for _ in range(2)]
    try:
        for sock in fresh:
            sock.sendall(protocol.encode_stat(1, "nothing"))
            assert FrameReader(sock).frame()[0]["error"] == "not_found"
    finally:
        for sock in fresh:
            sock.close()


def test_what_a_dead_worker_did_stays_in_the_summary(workers, tmp_path):
    running = workers()
    server = running.server
    put_forty(server, tmp_path)
    for _ in range(20):  # a later request on each worker: its tally of the puts is out
        with connect(server) as sock:  # (20 all on one worker: a chance of 2 in 2**20)
            sock.sendall(protocol.encode_stat(1, "f0"))
            assert FrameReader(sock).frame()[0]["ok"]
    _killed(running.pids[0])
    line = server.wait_for_stderr(r"worker 1 is serving again \(pid (\d+)\)")[0]
    running.pids.append(int(re.search(r"pid (\d+)", line).group(1)))
    _out, err = running.stop()
    assert "muxserver: stopped after 40 transfer(s), 0 failed (worker 1: " in err, err
    shares = [int(n) for n in re.findall(r"worker \d: (\d+)", err)]
    assert sum(shares) == 40 and min(shares) > 0, err


def test_a_worker_that_keeps_dying_is_started_again_later_each_time(workers):
    running = workers("--worker-restart-calm", "3600")  # (each dies young, however slow)
    server = running.server
    _killed(running.pids[0])  # (young: the test just started it)
    for attempt, delay in enumerate((1, 2)):  # the successors die young too
        line = server.wait_for_stderr(r"worker 1 is serving again \(pid (\d+)\)",
                                      count=attempt + 1)[-1]
        successor = int(re.search(r"pid (\d+)", line).group(1))
        running.pids.append(successor)
        _killed(successor)
        server.wait_for_stderr(rf"worker 1 \(pid {successor}\) exited unexpectedly "
                               rf"\(killed by SIGKILL\); the others go on, and it starts "
                               rf"again after {delay} s")


def test_a_lock_holder_that_dies_lets_go_of_the_lock():
    """A worker killed inside a critical section must not leave the others waiting."""
    state = SharedState(2)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the lock, say so, and wait to be killed
        try:
            state.lock.__enter__()
            os.write(ready_w, b"x")
            signal.pause()
        finally:
            os._exit(0)
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"  # it holds the lock now
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
    taken = threading.Event()

    def take() -> None:
        with state.lock:
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    assert taken.wait(30), "the dead holder's lock was never released"


def test_each_worker_counts_its_own_clients_and_the_cap_counts_them_all():
    state = SharedState(2)
    first, second = state.connections(0), state.connections(1)
    assert first.take(3) and first.take(3) and second.take(3)
    assert not second.take(3) and not first.take(3)  # three in all: full
    assert first.value == second.value == 3
    state.forget_worker(0)  # worker 1 died: its two clients went with it
    assert second.value == 1
    assert first.take(3) and second.take(3) and not first.take(3)
    second.give_back()
    assert first.value == 2


def test_the_shared_book_blocks_like_the_local_one():
    shared = SharedState().strikes
    for book in (LocalStrikes(), shared):
        for second in range(3):
            book.strike("192.0.2.7", 100.0 + second, 60.0, 3)
        assert book.blocked_until("192.0.2.7") == 162.0
        assert book.blocked_until("192.0.2.8") == 0.0
    for n in range(6000):  # more addresses than slots: the book stays within its page
        shared.strike(f"10.0.{n // 256}.{n % 256}", 1.0, 60.0, 3)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "from 1"),
    (["--workers", "many"], "a number or auto"),
    (["--workers", "2", "--trace"], "one loop"),
])
def test_bad_worker_settings_are_usage_errors(root, args, message):
    result = subprocess.run([sys.executable, "-m", "muxserver", "--port", "0", "--root",
                             str(root), "--no-console", *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
