"""BLAKE3 beside SHA-256, and the digest that follows the body (a trailer frame).

The native protocol names a digest by its algorithm (``"blake3"`` or ``"sha256"``), in
put, get, partial, stat and the put's reply; a put may announce ``"trailer": "blake3"``
instead of a digest and send the digest in a ``trailer`` frame right after its body,
and a get that says ``"trailer": true`` takes the digest of a file the server never
hashed in a frame after the body (the server hashes it while sending it).
docs/PROTOCOL.md, sections 3, 5.1, 5.2 and 5.5.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest

from muxserver import hashing, protocol
from muxserver import rules as rules_module
from muxserver.client import GetFile, PutFile
from muxserver.client import local as client_local
from muxserver.digests import BLAKE3, SHA256, Digest, from_fields
from muxserver.protocol import RequestError, parse_request

from .conftest import (FrameReader, UnreadableHashJob, b3, sha256, visible_files,
                       wait_until)

pytestmark = pytest.mark.timeout(60)

HEX = "ab" * 32


# ----------------------------------------------------------------- the headers


@pytest.mark.parametrize("fields, problem", [
    ({"blake3": HEX, "trailer": "blake3"}, "not both"),
    ({}, "not both"),
    ({"trailer": "md5"}, "must name a digest"),
    ({"blake3": "AB" * 32}, "64 lowercase hex"),
    ({"trailer": "blake3", "resumable": True}, "needs mtime"),
])
def test_a_put_declares_exactly_one_digest_or_a_trailer(fields, problem):
    with pytest.raises(RequestError) as refused:
        parse_request({"id": 1, "op": "put", "name": "a", **fields}, 3)
    assert refused.value.code == "bad_request" and problem in refused.value.message


def test_what_the_headers_carry():
    put = parse_request({"id": 1, "op": "put", "name": "a", "blake3": HEX}, 3)
    assert put.digest == Digest(BLAKE3, HEX) and not put.trailer
    put = parse_request({"id": 1, "op": "put", "name": "a", "trailer": "blake3",
                         "resumable": True, "mtime": 5.5}, 3)
    assert put.digest is None and put.trailer == BLAKE3 and put.mtime == 5.5
    old = parse_request({"id": 1, "op": "put", "name": "a", "sha256": HEX}, 3)
    assert old.digest == Digest(SHA256, HEX)  # the first version's puts still work
    assert parse_request({"id": 1, "op": "get", "name": "a"}, 0).algorithm == SHA256
    assert parse_request({"id": 1, "op": "get", "name": "a", "digest": "blake3"},
                         0).algorithm == BLAKE3
    partial = parse_request({"id": 1, "op": "partial", "name": "a", "size": 9,
                             "mtime": 7.0}, 0)
    assert partial.digest is None and partial.mtime == 7.0
    trailer = parse_request({"id": 1, "op": "trailer", "blake3": HEX}, 0)
    assert trailer.digest == Digest(BLAKE3, HEX)
    with pytest.raises(RequestError):
        parse_request({"id": 1, "op": "trailer"}, 0)
    assert from_fields({"sha256": HEX, "blake3": HEX}).algorithm == BLAKE3  # (the faster)


# ---------------------------------------------------------- on a real server


def trailer_put(req_id: int, name: str, data: bytes, **kw) -> bytes:
    return protocol.encode_put(req_id, name, len(data), None, trailer=BLAKE3, **kw) + data


def test_a_put_with_its_digest_after_the_body_is_checked_then_stored(server):
    data = os.urandom(300_000)
    with server.connect() as sock:
        sock.sendall(trailer_put(1, "t.bin", data))
        sock.sendall(protocol.encode_trailer(1, b3(data)))
        reply, _ = FrameReader(sock).frame()
    assert reply["ok"] and reply["blake3"] == b3(data).hex
    assert (server.root / "t.bin").read_bytes() == data


def test_a_wrong_trailer_stores_nothing(server):
    data = b"the bytes that came"
    with server.connect() as sock:
        sock.sendall(trailer_put(1, "t.bin", data)
                     + protocol.encode_trailer(1, b3(b"the bytes that were meant"))
                     + protocol.encode_stat(2, "t.bin"))
        reader = FrameReader(sock)
        assert reader.frame()[0]["error"] == "checksum_mismatch"
        assert reader.frame()[0]["error"] == "not_found"  # and the connection goes on
    assert visible_files(server.root) == []


def test_a_missing_trailer_fails_the_put_and_the_next_request_is_served(server):
    with server.connect() as sock:
        sock.sendall(trailer_put(1, "t.bin", b"abc") + protocol.encode_stat(2, "t.bin"))
        reader = FrameReader(sock)
        put, _ = reader.frame()
        assert put["id"] == 1 and put["error"] == "bad_request" and "trailer" in put["message"]
        stat, _ = reader.frame()
        assert stat["id"] == 2 and stat["error"] == "not_found"
    assert visible_files(server.root) == []


def test_the_trailer_of_a_refused_put_is_dropped_quietly(server):
    (server.root / "taken.txt").write_text("mine")
    with server.connect() as sock:
        sock.sendall(trailer_put(1, "taken.txt", b"yours")
                     + protocol.encode_trailer(1, b3(b"yours"))
                     + protocol.encode_stat(2, "taken.txt"))
        reader = FrameReader(sock)
        assert reader.frame()[0]["error"] == "exists"
        stat, _ = reader.frame()
        assert stat["id"] == 2 and stat["size"] == 4
    assert (server.root / "taken.txt").read_text() == "mine"


def test_a_trailer_put_cut_off_is_resumed_by_its_mtime(server, log_watcher, tmp_path):
    data = os.urandom(2_000_000)
    with server.connect() as sock:  # cut off after 1,200,000 bytes
        sock.sendall(trailer_put(1, "r.bin", data, resumable=True, mtime=1234.5)[:-800_000])
    log_watcher.wait_for("kept")
    with server.connect() as sock:
        reader = FrameReader(sock)
        sock.sendall(protocol.encode_partial(1, "r.bin", None, len(data), mtime=1234.5)
                     + protocol.encode_partial(2, "r.bin", None, len(data), mtime=99.0))
        held = reader.frame()[0]["offset"]
        assert 0 < held <= 1_200_000 and reader.frame()[0]["offset"] == 0  # (another version)
    local = tmp_path / "r.bin"  # the client's own question, after such a cut
    local.write_bytes(data)
    os.utime(local, (1234.5, 1234.5))
    cut = PutFile(local, "r.bin", resumable=True)
    cut.prepare()
    cut.header()
    cut.cleanup(failed=True)
    with server.client() as client:
        assert client.run([cut.kept_query()])[0].info["offset"] == held
    with server.connect() as sock:
        reader = FrameReader(sock)
        rest = data[held:]
        sock.sendall(protocol.encode_put(3, "r.bin", len(rest), None, trailer=BLAKE3,
                                         offset=held, resumable=True, mtime=1234.5)
                     + rest + protocol.encode_trailer(3, b3(data)))
        reply, _ = reader.frame()
    assert reply["ok"] and reply["blake3"] == b3(data).hex
    assert (server.root / "r.bin").read_bytes() == data


def test_a_get_announces_the_digest_asked_for(server):
    (server.root / "g.txt").write_bytes(b"get me")
    with server.connect() as sock:
        reader = FrameReader(sock)
        sock.sendall(protocol.encode_get(1, "g.txt", digest=BLAKE3) + protocol.encode_get(
            2, "g.txt") + protocol.encode_stat(3, "g.txt"))
        first, second, stat = reader.frame()[0], reader.frame()[0], reader.frame()[0]
    assert first["blake3"] == b3(b"get me").hex and "sha256" not in first
    assert second["sha256"] == sha256(b"get me") and "blake3" not in second
    assert stat["blake3"] == first["blake3"] and stat["sha256"] == second["sha256"]


BIG = 3 * 1024 * 1024 + 5  # over the inline size: a get of it is sent by sendfile


def _get_then_stat(sock, name: str) -> FrameReader:
    """Send a get that takes its digest after the body (id 1), and a stat behind it."""
    sock.sendall(protocol.encode_get(1, name, digest=BLAKE3, trailer=True)
                 + protocol.encode_stat(2, name))
    return FrameReader(sock)


def test_a_get_that_takes_a_trailer_gets_a_never_hashed_file_at_once(server):
    data = os.urandom(BIG)
    (server.root / "placed.bin").write_bytes(data)  # put there by hand: never hashed
    with server.connect() as sock:
        reader = _get_then_stat(sock, "placed.bin")
        header, body = reader.frame()
        trailer, trailer_body = reader.frame()
        stat = reader.frame()[0]  # the request behind the get waited for its trailer
        sock.sendall(protocol.encode_get(3, "placed.bin", digest=BLAKE3, trailer=True))
        again, again_body = reader.frame()
    assert header["ok"] and header["trailer"] == BLAKE3 and "blake3" not in header
    assert header["length"] == header["size"] == BIG and body == data
    assert trailer == {"id": 1, "ok": True, "blake3": b3(data).hex} and trailer_body == b""
    assert stat["id"] == 2 and stat["blake3"] == b3(data).hex  # remembered
    assert again["blake3"] == b3(data).hex and "trailer" not in again and again_body == data


def test_without_trailer_a_never_hashed_file_is_hashed_before_its_header(server):
    data = os.urandom(BIG)
    (server.root / "placed.bin").write_bytes(data)
    (server.root / "small.txt").write_bytes(b"small")  # inline: hashed at once, no trailer
    with server.connect() as sock:
        reader = FrameReader(sock)
        sock.sendall(protocol.encode_get(1, "placed.bin", digest=BLAKE3)
                     + protocol.encode_get(2, "small.txt", digest=BLAKE3, trailer=True)
                     + protocol.encode_stat(3, "small.txt"))
        header, body = reader.frame()
        small, small_body = reader.frame()
        stat = reader.frame()[0]
    assert header["blake3"] == b3(data).hex and "trailer" not in header and body == data
    assert small["blake3"] == b3(b"small").hex and "trailer" not in small
    assert small_body == b"small" and stat["id"] == 3


def test_a_file_that_cannot_be_hashed_while_sent_fails_after_its_body(server, tmp_path,
                                                                      monkeypatch):
    data = os.urandom(BIG)
    (server.root / "placed.bin").write_bytes(data)
    monkeypatch.setattr(rules_module, "HashJob", UnreadableHashJob)
    with server.connect() as sock:
        reader = _get_then_stat(sock, "placed.bin")
        header, body = reader.frame()
        after = reader.frame()[0]
        stat = reader.frame()[0]  # the connection is still usable
    assert header["trailer"] == BLAKE3 and body == data
    assert after["id"] == 1 and after["ok"] is False and after["error"] == "io_error"
    assert stat["ok"] and "blake3" not in stat  # nothing was remembered
    (tmp_path / "here").mkdir()
    with server.client() as client:  # the client drops what it received
        result = client.run([GetFile("placed.bin", tmp_path / "here" / "got.bin")])[0]
    assert result.code == "io_error" and os.listdir(tmp_path / "here") == []
    assert server.server.services.stats.transfers_failed == 2


def test_no_descriptor_left_to_hash_while_sending_is_a_clear_error(server, monkeypatch):
    (server.root / "placed.bin").write_bytes(os.urandom(BIG))

    class NoDescriptor(hashing.HashJob):
        def __init__(self, *args, **kw) -> None:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(rules_module, "HashJob", NoDescriptor)
    before = len(os.listdir("/proc/self/fd"))
    with server.connect() as sock:
        reader = _get_then_stat(sock, "placed.bin")
        refused, body = reader.frame()
        stat = reader.frame()[0]
        assert len(os.listdir("/proc/self/fd")) == before + 2  # (the connection: both ends)
    assert refused["ok"] is False and refused["error"] == "io_error" and body == b""
    assert "Too many open files" in refused["message"] and stat["ok"]


def test_a_get_cut_off_while_its_digest_is_due_holds_nothing(server, monkeypatch,
                                                             log_watcher):
    data = os.urandom(64 * 1024 * 1024)  # more than the socket buffers hold
    (server.root / "placed.bin").write_bytes(data)
    started = []

    class Held(hashing.HashJob):
        """A job that never finishes by itself: the connection ends first."""

        def finish(self, total, on_done) -> None:
            started.append(self)

    monkeypatch.setattr(rules_module, "HashJob", Held)
    before = len(os.listdir("/proc/self/fd"))
    with server.connect() as sock:  # reset while most of the body is still to come
        sock.sendall(protocol.encode_get(1, "placed.bin", digest=BLAKE3, trailer=True))
        assert sock.recv(64)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    log_watcher.wait_for("closed")
    assert server.server.services.stats.transfers_failed == 1
    assert started[0].cancelled  # and the helper closes its descriptor of the file:
    wait_until(lambda: started[0].fd == -1, what="the helper letting go of the file")
    assert len(os.listdir("/proc/self/fd")) <= before


def test_the_helper_takes_turns_between_files(monkeypatch, tmp_path):
    """A big file's hash gives way to a small one's after FAIR_SHARE bytes."""
    monkeypatch.setattr(hashing, "FAIR_SHARE", hashing.READ_SIZE)
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(b"b" * (8 * hashing.READ_SIZE))
    small.write_bytes(b"s" * 10)
    import threading

    class Gate:  # holds the helper thread until both jobs are queued behind it
        opened = threading.Event()

        def _run(self, buf: bytearray) -> None:
            self.opened.wait(30)

    gate = Gate()
    hashing._worker().put(gate)
    finished = []
    jobs = []
    for path in (big, small):
        fd = os.open(path, os.O_RDONLY)
        try:
            job = hashing.HashJob(fd, BLAKE3, already=path.stat().st_size)
        finally:
            os.close(fd)
        job.finish(path.stat().st_size, lambda digest, name=path.name: finished.append(name))
        jobs.append(job)
    gate.opened.set()
    assert jobs[0].wait(30) is not None and jobs[1].wait(30) is not None
    assert finished == ["small", "big"]


# ------------------------------------------------------------------ the client


def test_a_fresh_file_is_read_once_and_its_digest_follows_the_body(server, tmp_path,
                                                                   monkeypatch):
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "fresh.bin").write_bytes(data)

    def no_pre_pass(*args):
        raise AssertionError("the file was hashed before it was sent")

    class Recorded(PutFile):
        def header(self) -> bytes:
            self.sent = super().header()
            return self.sent

    monkeypatch.setattr(client_local, "file_digest", no_pre_pass)
    put = Recorded(tmp_path / "fresh.bin", "fresh.bin")
    with server.client() as client:
        assert client.run([put])[0].ok
        assert put.result.digest == b3(data)
        assert b'"trailer":"blake3"' in put.sent and b'"blake3":' not in put.sent
        second = Recorded(tmp_path / "fresh.bin", "again.bin")
        assert client.run([second])[0].ok  # remembered now: declared up front
        assert b"trailer" not in second.sent and b3(data).hex.encode() in second.sent
    assert (server.root / "fresh.bin").read_bytes() == data


def test_the_client_gets_a_never_hashed_file_with_its_digest_after_the_body(server,
                                                                          tmp_path):
    data = os.urandom(BIG)
    (server.root / "placed.bin").write_bytes(data)
    with server.client() as client:
        first = client.get_file("placed.bin", tmp_path / "first.bin")
        second = client.get_file("placed.bin", tmp_path / "second.bin")  # remembered now
    assert first.digest == second.digest == b3(data)
    assert (tmp_path / "first.bin").read_bytes() == data
    assert (tmp_path / "second.bin").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["first.bin", "root", "second.bin"]  # no .part


def test_ctrl_c_and_stop_signals_reach_the_main_thread_never_the_hashing_helper():
    """A signal the helper thread took would wake no select() of the main thread: a
    client's Ctrl-C waited for its whole timeout (a test of it failed 1 run in 10)."""
    import signal
    import threading

    seen: list[set[int]] = []
    done = threading.Event()

    class Probe:
        def _run(self, buf: bytearray) -> None:  # (what the helper runs for each job)
            seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
            done.set()

    hashing._worker().put(Probe())
    assert done.wait(10)
    assert {signal.SIGINT, signal.SIGTERM} <= seen[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # (ours: not)
