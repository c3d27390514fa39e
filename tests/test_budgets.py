"""Budgets: no request holds the loop, no connection holds the descriptors, no failure
holds the disk (docs/OPERATIONS.md, "Limits"; the loop's longest step is measured by
scripts/loop_stall_check.py)."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import socket
import threading

import pytest

from muxserver import protocol
from muxserver.channel import Channel
from muxserver.client import Client, Partial, PutFile
from muxserver.digests import SHA256, Digest
from muxserver.limits import Limits

from .conftest import (FrameReader, mounted_tmpfs, needs_prlimit, open_descriptors,
                       spawn_server, stop_process)
from .session_harness import Harness

pytestmark = pytest.mark.timeout(120)


def live_channels() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Channel)


def test_closed_connections_leave_no_timers_and_no_channels_behind(server, log_watcher):
    with server.connect() as idle:  # one idle client keeps its 300 s timer at the top
        idle.sendall(protocol.encode_list(1, ""))
        FrameReader(idle).frame()
        for i in range(3000):
            with socket.create_connection((server.host, server.port), timeout=20) as sock:
                sock.sendall(protocol.encode_stat(1, "x"))
                FrameReader(sock).frame()
        log_watcher.wait_for("closed", count=3000, timeout=60)
        assert live_channels() < 20
        assert server.server.loop.timer_count < 200


# ---------------------------------------------------------------- descriptors


@pytest.mark.parametrize("size", [1024, 20 * 1024])  # sent from memory / by sendfile
def test_pipelined_gets_never_read_hold_few_descriptors(root, size):
    (root / "f.bin").write_bytes(os.urandom(size))
    srv = spawn_server(root)
    crowd: list[socket.socket] = []
    try:
        baseline = open_descriptors(srv.proc.pid)
        burst = b"GET /f.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 300
        for _ in range(4):
            sock = socket.create_connection((srv.host, srv.port), timeout=20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(burst)  # 300 requests in one segment: read in one go
            assert sock.recv(64).startswith(b"HTTP/1.1 200")  # ...and never read again
            crowd.append(sock)
        # each connection: its socket and at most two queued files (--files-per-connection)
        assert open_descriptors(srv.proc.pid) <= baseline + 4 * 3 + 2
        with Client(srv.host, srv.port) as client:  # the others are still served
            assert client.stat("f.bin")["size"] == size
    finally:
        for sock in crowd:
            sock.close()
        stop_process(srv.proc)


def test_a_deep_new_path_holds_one_directory_descriptor_at_a_time(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    h = Harness("native", root)
    try:
        before = open_descriptors(os.getpid())
        name = "/".join(f"d{i}" for i in range(62)) + "/f.bin"
        h.send(h.wire.put(name, b"x" * 1000, body=False))  # the body has not come yet
        assert h.session.upload is not None
        assert open_descriptors(os.getpid()) - before <= 2  # the temporary file, its folder
        h.send(b"x" * 1000)
        assert h.replies()[-1].ok and (root / name).read_bytes() == b"x" * 1000
        h.send(h.wire.put("/".join(["d"] * 64) + "/f.bin", b"y"))
        assert h.replies()[-1].refused("bad_name")  # 65 components: too deep
    finally:
        h.close()


@pytest.mark.parametrize("kind", ["native", "http", "webdav"])
def test_out_of_descriptors_is_an_error_reply_and_the_connection_lives(tmp_path, kind,
                                                                       monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.txt").write_text("here")
    h = Harness(kind, root)
    real_open = os.open

    def starved_open(path, *args, **kw):
        if path == ".":  # the root, opened for its listing
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args, **kw)

    try:
        monkeypatch.setattr(os, "open", starved_open)
        listing = h.wire.request("GET", "/") if kind != "native" else protocol.encode_list(1, "")
        h.send(listing)
        monkeypatch.setattr(os, "open", real_open)
        busy = h.replies()[-1]
        assert busy.refused("server_busy") and not h.closing
        if kind != "native":
            assert busy.headers["retry-after"] == "1"
        h.send(h.wire.get("f.txt"))
        assert h.replies()[-1].body == b"here"
    finally:
        monkeypatch.setattr(os, "open", real_open)
        h.close()


def test_a_listing_that_cannot_finish_says_so(tmp_path, monkeypatch):
    root = tmp_path / "root"
    for i in range(5):
        (root / "tree" / f"sub{i}").mkdir(parents=True)
        (root / "tree" / f"sub{i}" / "f").touch()
    h = Harness("native", root, limits=Limits(list_page_size=2))
    real_open = os.open

    def starved_open(path, *args, **kw):
        if path == "sub3":
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args, **kw)

    try:
        monkeypatch.setattr(os, "open", starved_open)
        h.send(protocol.encode_list(1, "tree", recursive=True))
        monkeypatch.setattr(os, "open", real_open)
        replies = h.replies()
        assert [r.ok for r in replies[:-1]] == [True] * (len(replies) - 1)
        assert all(r.headers["more"] == "true" for r in replies[:-1])  # never "complete"
        assert replies[-1].refused("server_busy") and not h.closing
    finally:
        monkeypatch.setattr(os, "open", real_open)
        h.close()


@needs_prlimit
def test_under_descriptor_pressure_everyone_is_still_served(root, tmp_path):
    """The acceptance scenario: 256 descriptors; 50 connections pipelining 100 GETs they
    never read, deep-path puts, a recursive listing of 1,500 subdirectories."""
    (root / "f.bin").write_bytes(os.urandom(20 * 1024))  # sent by sendfile: a descriptor
    for i in range(1500):
        (root / "tree" / f"d{i:04d}").mkdir(parents=True)
        (root / "tree" / f"d{i:04d}" / "f").touch()
    srv = spawn_server(root, prefix=["prlimit", "--nofile=256:256"])
    crowd: list[socket.socket] = []
    try:
        burst = protocol.encode_get(1, "f.bin") * 100
        for _ in range(50):
            sock = socket.create_connection((srv.host, srv.port), timeout=30)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(burst)
            assert sock.recv(64)  # served its first reply, then never reads again
            crowd.append(sock)
        (tmp_path / "small").write_bytes(b"deep")
        with Client(srv.host, srv.port) as client:
            deep = ["/".join(f"p{j}{i}" for i in range(60)) + "/small" for j in range(4)]
            assert all(r.ok for r in client.run([PutFile(tmp_path / "small", n) for n in deep]))
            listed = client.list("tree", recursive=True)
            assert len(listed) == 3000  # every directory, and the file in each
            assert client.stat("f.bin")["size"] == 20 * 1024
        assert srv.proc.poll() is None
    finally:
        for sock in crowd:
            sock.close()
        stop_process(srv.proc)


# ----------------------------------------------------------------- loop steps


def test_names_deeper_than_64_components_are_refused(server, tmp_path):
    (tmp_path / "f").write_bytes(b"deep")
    with server.client() as client:
        results = client.run([PutFile(tmp_path / "f", "/".join(["d"] * 63) + "/f"),
                              PutFile(tmp_path / "f", "/".join(["e"] * 64) + "/f")])
    assert [(r.ok, r.code) for r in results] == [(True, ""), (False, "bad_name")]


def test_the_index_of_a_big_directory_is_sent_in_pieces(server):
    for i in range(1200):
        (server.root / f"n{i:04d}.txt").touch()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head  # pages of rows, one per loop turn
    assert all(f"n{i:04d}.txt".encode() in body for i in range(0, 1200, 7))


# ----------------------------------------------------------------------- disk


MiB = 1024 * 1024


def hidden_bytes(root) -> int:
    return sum(p.stat().st_size for p in root.rglob(".muxserver-*"))


def cut_off_upload(server, name: str, size: int, sent: int, log_watcher,
                   resumable: bool = True) -> None:
    """A resumable put that sends ``sent`` of ``size`` bytes and vanishes."""
    data = bytes([len(name) % 251]) * size
    before = len(log_watcher.events("closed"))
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, name, size, hashlib.sha256(data).hexdigest(),
                                         resumable=resumable) + data[:sent])
    log_watcher.wait_for("closed", count=before + 1)


@pytest.fixture
def disk_of_20_mib():
    with mounted_tmpfs("20m") as where:
        yield where


def test_an_upload_that_fails_for_want_of_space_keeps_nothing(disk_of_20_mib, make_server,
                                                              tmp_path):
    server = make_server(root_dir=disk_of_20_mib)
    (tmp_path / "huge").write_bytes(b"h" * 30 * MiB)
    (tmp_path / "filler").write_bytes(b"f" * 18 * MiB)
    with server.client() as client:
        [refused] = client.run([PutFile(tmp_path / "huge", "huge.bin", resumable=True)])
        assert refused.code == "no_space"  # cannot fit at all: refused before a byte
        assert client.run([PutFile(tmp_path / "filler", "filler.bin")])[0].ok
        (tmp_path / "more").write_bytes(b"m" * 3 * MiB)
        [failed] = client.run([PutFile(tmp_path / "more", "more.bin", resumable=True)])
        assert failed.code == "no_space"  # the disk filled up on the way
    assert hidden_bytes(disk_of_20_mib) == 0  # a failure is not an interruption


def test_an_upload_refused_after_its_body_keeps_nothing(make_server, tmp_path, log_watcher):
    server = make_server()
    data = os.urandom(2 * MiB)
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, "x.bin", len(data), hashlib.sha256(data).hexdigest(),
                                         resumable=True) + data[:MiB])
        (tmp_path / "first").write_bytes(b"first")
        with server.client() as other:  # the name is taken while the body still comes
            assert other.run([PutFile(tmp_path / "first", "x.bin")])[0].ok
        sock.sendall(data[MiB:])
        assert FrameReader(sock).frame()[0]["error"] == "exists"
    assert hidden_bytes(server.root) == 0


def test_partials_over_their_budget_are_evicted_oldest_first(make_server, log_watcher):
    server = make_server(limits=Limits(partial_budget=5 * MiB))
    cut_off_upload(server, "one.bin", 4 * MiB, 3 * MiB, log_watcher)
    kept = log_watcher.wait_for("kept")
    assert "kept 3.0 MiB of one.bin for resume" in kept[0].getMessage()
    cut_off_upload(server, "two.bin", 4 * MiB, 3 * MiB, log_watcher)
    log_watcher.wait_for("evicted")
    assert hidden_bytes(server.root) == 3 * MiB  # only the newer one fits the budget
    with server.client() as client:
        one = client.run([Partial("one.bin", hashlib.sha256(bytes([7]) * 4 * MiB).hexdigest(),
                                  4 * MiB)])[0]
    assert one.info["offset"] == 0


def test_a_disk_filled_by_failures_still_takes_a_small_upload(disk_of_20_mib, make_server,
                                                              tmp_path, log_watcher):
    budget = 16 * MiB
    server = make_server(root_dir=disk_of_20_mib, limits=Limits(partial_budget=budget))
    for i in range(3):  # interrupted: kept for a resume (15 MiB hidden)
        cut_off_upload(server, f"cut{i}.bin", 6 * MiB, 5 * MiB, log_watcher)
        assert hidden_bytes(disk_of_20_mib) <= budget
    (tmp_path / "big").write_bytes(b"b" * 30 * MiB)
    (tmp_path / "fill").write_bytes(b"f" * 4 * MiB)
    (tmp_path / "small").write_bytes(b"s" * 2 * MiB)
    with server.client() as client:
        assert client.run([PutFile(tmp_path / "big", "big.bin")])[0].code == "no_space"
        assert client.run([PutFile(tmp_path / "fill", "fill.bin")])[0].ok
        assert hidden_bytes(disk_of_20_mib) <= budget
        # ~1 MiB is free now: the small upload makes room by evicting the oldest partial
        assert client.run([PutFile(tmp_path / "small", "small.bin")])[0].ok
    assert (disk_of_20_mib / "small.bin").stat().st_size == 2 * MiB
    assert hidden_bytes(disk_of_20_mib) <= budget and log_watcher.events("evicted")


# ------------------------------------------------------------------- guessing


def test_thousands_of_guesses_from_one_address_get_ten_answers(make_server):
    server = make_server(token="the right one")
    answers: list[str] = []
    lock = threading.Lock()

    def guesser(first: int) -> None:
        for i in range(first, first + 50):
            with socket.create_connection((server.host, server.port), timeout=30) as sock:
                sock.sendall(b"".join(protocol.encode_auth(j, f"guess {i}.{j}")
                                      for j in range(3)))
                reader = FrameReader(sock)
                try:
                    while True:
                        fields, _ = reader.frame()
                        with lock:
                            answers.append(fields["error"])
                except ConnectionError:
                    pass

    threads = [threading.Thread(target=guesser, args=(k * 50,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limits = Limits()
    assert answers.count("unauthorized") == limits.address_auth_failures
    assert answers.count("too_many_attempts") >= 400 - limits.address_auth_failures


def test_the_client_says_what_the_server_kept_of_a_cut_off_upload(server, tmp_path,
                                                                  log_watcher, capsys):
    from muxserver.cli_client import tell_what_the_server_kept

    size = 3 * MiB
    cut_off_upload(server, "movie.bin", size, 2 * MiB, log_watcher)
    local = tmp_path / "movie.bin"
    local.write_bytes(bytes([len("movie.bin") % 251]) * size)
    op = PutFile(local, "movie.bin", resumable=True,
                 digest=Digest(SHA256, hashlib.sha256(local.read_bytes()).hexdigest()))
    op.file_size = size
    op.result.code = "connection"  # as if its connection had just broken
    with server.client() as client:
        tell_what_the_server_kept([op], client)
    err = capsys.readouterr().err
    assert "movie.bin: interrupted; 2.0 MiB kept on the server: put --resume continues it" in err
