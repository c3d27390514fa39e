"""Faults and abuse: descriptor exhaustion, full disks, slowloris, hostile names, symlinks."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from muxserver import protocol
from muxserver.client import Client, ClientError, GetFile, ListDir, PutFile, Stat
from muxserver.limits import Limits
from muxserver.loop import EventLoop

from .conftest import (FrameReader, mounted_tmpfs, needs_prlimit, open_connections, sha256,
                       spawn_server, stop_process, temp_files, visible_files)
from .test_storage import BAD_NAMES

pytestmark = pytest.mark.timeout(90)

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@needs_prlimit
def test_out_of_descriptors_backs_off_without_spinning_and_recovers(root):
    # The cap is set above what 64 descriptors allow, so accept() itself hits EMFILE.
    srv = spawn_server(root, "--max-connections", "1000", prefix=["prlimit", "--nofile=64:64"])
    crowd = []
    try:
        crowd = open_connections(srv.host, srv.port, 100)
        with Client(srv.host, srv.port, timeout=1) as probe:
            with pytest.raises(ClientError):  # no descriptor left for a new client
                probe.list()
        before = cpu_seconds(srv.proc.pid)
        time.sleep(2.0)  # a measurement window, not a wait for the server
        used = cpu_seconds(srv.proc.pid) - before
        assert used < 0.5, f"the server burnt {used:.2f} s of CPU in 2 s while out of fds"
        for sock in crowd:
            sock.close()
        crowd = []
        with Client(srv.host, srv.port, timeout=15) as client:  # served once fds are back
            assert client.list() == []
    finally:
        for sock in crowd:
            sock.close()
        stop_process(srv.proc)
    _out, err = srv.output()
    assert err.count("pausing new connections") >= 1
    assert err.count("pausing new connections") <= 3, "logged on every retry"
    assert "accepting connections again" in err


@needs_prlimit
def test_the_connection_cap_follows_the_descriptor_limit(root):
    srv = spawn_server(root, prefix=["prlimit", "--nofile=64:64"])  # cap = 64 - 32 = 32
    crowd = []
    try:
        crowd = open_connections(srv.host, srv.port, 32)
        for sock in crowd:  # a reply on each proves they were all accepted
            sock.sendall(protocol.encode_list(1, ""))
            FrameReader(sock).frame()
        with socket.create_connection((srv.host, srv.port), timeout=10) as extra:
            extra.sendall(protocol.encode_list(1, ""))
            fields, _ = FrameReader(extra).frame()
            assert fields["error"] == "too_many_clients" and "32 connections" in fields["message"]
    finally:
        for sock in crowd:
            sock.close()
        stop_process(srv.proc)


class _Backlog:
    """A listening socket's queue of ``waiting`` connections, as accept() sees it."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting

    def accept(self):
        if not self.waiting:
            raise BlockingIOError
        self.waiting -= 1
        return object(), ("127.0.0.1", 40000 + self.waiting)


class _AcceptingServer:
    """What a Listener asks of its server (server.ListeningServer): limits, the loop's
    turn, and add_client."""

    def __init__(self, turn_events: int) -> None:
        from muxserver.observe import NOBODY

        self.limits = Limits()
        self.loop = EventLoop()
        self.loop.turn_events = turn_events
        self.observe = NOBODY
        self.accepted = 0

    def add_client(self, sock, addr) -> None:
        self.accepted += 1


@pytest.mark.parametrize("turn_events, accepted", [(0, 64), (5, 64), (300, 300)])
def test_a_turn_accepts_as_many_new_clients_as_it_serves_and_at_least_the_limit(
        turn_events, accepted):
    from muxserver.server import Listener

    server = _AcceptingServer(turn_events)
    try:
        backlog = _Backlog(1000)
        Listener(server, backlog).on_events(0)  # type: ignore[arg-type]
        assert server.limits.accepts_per_tick == 64
        assert server.accepted == accepted and backlog.waiting == 1000 - accepted
        Listener(server, _Backlog(3)).on_events(0)  # type: ignore[arg-type]
        assert server.accepted == accepted + 3  # (fewer waiting: all of them, no more)
    finally:
        server.loop.close()


@pytest.fixture
def small_disk():
    with mounted_tmpfs("4m") as where:
        yield where


def test_a_full_disk_refuses_the_upload_and_keeps_the_old_file(small_disk, tmp_path):
    first, second = os.urandom(2_500_000), os.urandom(2_500_000)
    (tmp_path / "first").write_bytes(first)
    (tmp_path / "second").write_bytes(second)
    srv = spawn_server(small_disk, "--allow-overwrite")
    try:
        with Client(srv.host, srv.port) as client:
            client.put_file(tmp_path / "first", "file.bin")
            results = client.run([PutFile(tmp_path / "second", "file.bin", overwrite=True),
                                  PutFile(tmp_path / "second", "other.bin"),
                                  ListDir("")])
            assert results[0].code == "no_space" and results[1].code == "no_space"
            assert [e["name"] for e in results[2].entries] == ["file.bin"]
        assert (small_disk / "file.bin").read_bytes() == first
        assert temp_files(small_disk) == []
        assert srv.proc.poll() is None
    finally:
        stop_process(srv.proc)


@needs_prlimit
def test_a_file_over_the_size_limit_is_refused_and_the_server_lives(root, tmp_path):
    srv = spawn_server(root, prefix=["prlimit", "--fsize=1000000"])  # EFBIG past 1 MB
    try:
        (tmp_path / "big").write_bytes(os.urandom(3_000_000))
        (tmp_path / "small").write_bytes(b"fits")
        with Client(srv.host, srv.port) as client:
            results = client.run([PutFile(tmp_path / "big", "big"),
                                  PutFile(tmp_path / "small", "small")])
        assert results[0].code == "no_space" and "too large" in results[0].message.lower()
        assert results[1].ok
        assert visible_files(root) == ["small"] and srv.proc.poll() is None
    finally:
        stop_process(srv.proc)


def test_the_max_file_size_is_enforced_before_anything_is_written(make_server):
    server = make_server(limits=Limits(max_file_size=1000))
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, "big", 5000, "0" * 64))
        fields, _ = FrameReader(sock).frame()
        assert fields["error"] == "too_large"
    with server.connect() as sock:  # a declared 2**63 is refused the same way
        sock.sendall(protocol.encode_frame({"id": 1, "op": "put", "name": "x",
                                            "sha256": "0" * 64, "length": 2**63 - 1}))
        assert FrameReader(sock).frame()[0]["error"] == "too_large"
    assert visible_files(server.root) == []


def test_slowloris_connections_do_not_delay_a_normal_client(make_server, tmp_path):
    server = make_server(limits=Limits(header_timeout=3.0))
    frame = protocol.encode_list(1, "")
    dribblers = open_connections(server.host, server.port, 300)
    try:
        for i, sock in enumerate(dribblers):
            sock.sendall(frame[: 1 + i % 7])  # every one stuck in its prefix or header
        (tmp_path / "f").write_bytes(os.urandom(100_000))
        with server.client() as client:  # served while 300 others hang on (how fast:
            client.put_file(tmp_path / "f", "f")  # scripts/slowloris_check.py measures)
            client.get_file("f", tmp_path / "back")
            assert [e["name"] for e in client.list()] == ["f"]
        for sock in dribblers[:5]:
            sock.sendall(frame[7:9])  # dribbling more does not extend the header timeout
        reader = FrameReader(dribblers[0])
        fields, _ = reader.frame()  # the server's answer: a timeout, then the close
        assert (fields["id"], fields["error"]) == (None, "timeout")
        assert reader.closed()
    finally:
        for sock in dribblers:
            sock.close()


def test_a_peer_that_never_reads_cannot_grow_server_memory(make_server, root):
    (root / "f").write_bytes(b"z" * 60_000)  # inlined replies: they sit in memory
    server = make_server(limits=Limits(max_output_buffer=2 * 1024 * 1024))
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = protocol.encode_get(1, "f") * 2000
        try:
            sock.sendall(burst)  # 2000 requests, 120 MB of replies, none read
        except OSError:
            pass  # the server may stop reading long before: that is the backpressure
        snapshot = server.snapshot()
        queued = max((c.send_buffered for c in snapshot.connections), default=0)
        assert queued <= 2 * 1024 * 1024 + 70_000


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_bad_name_is_refused_by_the_server(server, name):
    def frame(fields: dict, body: bytes = b"") -> bytes:  # JSON escapes carry any code point
        header = json.dumps(dict(fields, length=len(body)) if body else fields).encode()
        return protocol.PREFIX.pack(protocol.MAGIC, 1, 0, len(header)) + header + body

    with server.connect() as sock:  # raw frames: the client library must not sanitise
        sock.sendall(frame({"id": 1, "op": "put", "name": name, "sha256": sha256(b"x")}, b"x")
                     + frame({"id": 2, "op": "get", "name": name})
                     + frame({"id": 3, "op": "stat", "name": name})
                     + frame({"id": 4, "op": "list", "path": name}))
        reader = FrameReader(sock)
        codes = [reader.frame()[0].get("error") for _ in range(4)]
    assert codes[:3] == ["bad_name"] * 3
    assert codes[3] == (None if name == "" else "bad_name")  # list "" is the root itself
    assert visible_files(server.root) == []
    assert sorted(os.listdir(server.root.parent)) == ["root"]


def test_symlinks_inside_the_root_are_not_followed_by_the_server(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(outside, server.root / "link")
    os.symlink(outside / "secret", server.root / "secret-link")
    (tmp_path / "f").write_bytes(b"x")
    with server.client() as client:
        results = client.run([GetFile("secret-link", tmp_path / "a"),
                              GetFile("link/secret", tmp_path / "b"),
                              PutFile(tmp_path / "f", "link/planted"),
                              Stat("link/secret"), ListDir("link")])
        listing = {e["name"]: e["type"] for e in client.list()}
    assert [r.code for r in results] == ["forbidden"] * 5
    assert listing == {"link": "symlink", "secret-link": "symlink"}
    assert os.listdir(outside) == ["secret"]


def test_a_symlink_swapped_in_during_an_upload_is_not_followed(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.root / "d").mkdir()
    data = os.urandom(200_000)
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, "d/f", len(data), sha256(data)) + data[:1000])
        reader = FrameReader(sock)
        with server.client() as client:
            for _ in range(100):  # round trips until the server has the upload open
                if temp_files(server.root):
                    break
                client.list()
        os.rename(server.root / "d", server.root / "d-moved")
        os.symlink(outside, server.root / "d")
        sock.sendall(data[1000:])
        assert reader.frame()[0]["ok"]
    assert os.listdir(outside) == []
    assert (server.root / "d-moved" / "f").read_bytes() == data


def test_a_stalled_upload_times_out_and_leaves_nothing(make_server, log_watcher):
    server = make_server(limits=Limits(stall_timeout=0.3))
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, "stalled.bin", 10_000, "0" * 64) + b"s" * 100)
        reader = FrameReader(sock)
        fields, _ = reader.frame()
        assert (fields["id"], fields["error"]) == (None, "timeout")
        assert "stalled" in fields["message"]
        assert reader.closed()
    log_watcher.wait_for("closed")
    assert visible_files(server.root) == []


def test_an_idle_connection_times_out(make_server):
    server = make_server(limits=Limits(idle_timeout=0.3))
    with server.connect() as sock:
        sock.sendall(protocol.encode_list(1, ""))
        reader = FrameReader(sock)
        assert reader.frame()[0]["ok"]
        fields, _ = reader.frame()  # then nothing from us: the server hangs up
        assert (fields["id"], fields["error"]) == (None, "timeout") and "idle" in fields["message"]
        assert reader.closed()


def test_a_download_to_a_reader_that_stopped_times_out(make_server, root, log_watcher):
    (root / "big").write_bytes(b"b" * 50_000_000)
    server = make_server(limits=Limits(stall_timeout=0.3))
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(protocol.encode_get(1, "big"))
        assert sock.recv(65536)  # the download started; this client now stops reading
        records = log_watcher.wait_for("timeout")
        assert "the transfer stalled" in records[0].getMessage()
        log_watcher.wait_for("closed")
        with server.client() as client:  # the others are still served
            assert client.stat("big")["size"] == 50_000_000


@pytest.fixture
def disk_of_12_mib():
    with mounted_tmpfs("12m") as where:
        yield where


def test_a_full_disk_during_a_spliced_upload_is_reported_and_cleaned(disk_of_12_mib, tmp_path):
    big = os.urandom(8 * 1024 * 1024)  # over 4 MiB: spliced from the socket to the file
    (tmp_path / "a").write_bytes(big)
    (tmp_path / "b").write_bytes(big[::-1])
    srv = spawn_server(disk_of_12_mib)
    try:
        with Client(srv.host, srv.port) as client:
            results = client.run([PutFile(tmp_path / "a", "a"), PutFile(tmp_path / "b", "b"),
                                  ListDir("")])
        assert results[0].ok and results[1].code == "no_space"
        assert [e["name"] for e in results[2].entries] == ["a"]
        assert temp_files(disk_of_12_mib) == [] and srv.proc.poll() is None
    finally:
        stop_process(srv.proc)
