"""Real sockets on 127.0.0.1: the server, the client library, and raw misbehaving peers."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading

import pytest

from muxserver import protocol
from muxserver.client import ClientError, GetFile, ListDir, PutFile, Stat
from muxserver.limits import Limits

from .conftest import (FrameReader, b3, needs_python_classes, put_frame, sha256, temp_files,
                       visible_files)

pytestmark = pytest.mark.timeout(60)


def random_file(path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024])
def test_put_then_get_is_byte_identical(server, tmp_path, size):
    src = tmp_path / "src.bin"
    data = random_file(src, size)
    with server.client() as client:
        put = client.put_file(src, "f.bin")
        assert put.digest == b3(data) and put.size == size
        got = client.get_file("f.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data
    assert (server.root / "f.bin").read_bytes() == data
    assert got.digest == b3(data)
    assert not (tmp_path / "back.bin.part").exists()


@pytest.mark.timeout(120)
def test_200_mib_put_then_get_is_byte_identical(server, tmp_path):
    src = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with open(src, "wb") as f:
        for i in range(200):
            f.write(block[i:] + block[:i])
    with server.client() as client:
        client.put_file(src, "big.bin")
        client.get_file("big.bin", tmp_path / "back.bin")
    assert _file_hash(tmp_path / "back.bin") == _file_hash(src)
    assert (tmp_path / "back.bin").stat().st_size == 200 * 1024 * 1024


def _file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_many_files_share_one_pipelined_connection(server, tmp_path, log_watcher):
    ops = []
    for i in range(30):
        src = tmp_path / f"f{i}.txt"
        src.write_text(f"file number {i}\n" * i)
        ops.append(PutFile(src, f"batch/f{i}.txt"))
    with server.client() as client:
        results = client.run(ops)
        assert all(r.ok for r in results)
        out = tmp_path / "out"
        out.mkdir()
        results = client.run([GetFile(f"batch/f{i}.txt", out / f"f{i}.txt") for i in range(30)])
    assert all(r.ok for r in results)
    for i in range(30):
        assert (out / f"f{i}.txt").read_text() == f"file number {i}\n" * i
    assert len(log_watcher.events("connected")) == 1


def test_list_and_stat_show_subdirectories(server, tmp_path):
    (tmp_path / "x").write_bytes(b"12345")
    with server.client() as client:
        client.put_file(tmp_path / "x", "top.txt")
        client.put_file(tmp_path / "x", "d/e/deep.txt")
        top = {e["name"]: e for e in client.list()}
        assert set(top) == {"top.txt", "d"} and top["d"]["type"] == "dir"
        deep = {e["name"] for e in client.list("d", recursive=True)}
        assert deep == {"d/e", "d/e/deep.txt"}
        info = client.stat("d/e/deep.txt")
        assert info["size"] == 5 and info["type"] == "file" and info["blake3"] == b3(b"12345").hex
        with pytest.raises(ClientError) as exc:
            client.list("top.txt")
        assert exc.value.code == "not_a_directory"


def test_listing_of_a_big_directory_arrives_in_pages(make_server, root):
    limits = Limits(list_page_size=50)
    server = make_server(limits=limits)
    for i in range(321):
        (root / f"f{i:04}").write_bytes(b"")
    with server.connect() as sock:
        sock.sendall(protocol.encode_list(1, ""))
        reader = FrameReader(sock)
        names, frames = [], 0
        while True:
            fields, body = reader.frame()
            frames += 1
            assert fields["id"] == 1 and fields["count"] == len(body.splitlines())
            names += [line for line in body.splitlines()]
            if not fields["more"]:
                break
    assert len(names) == 321 and frames == 7


def test_a_request_dribbled_one_byte_per_send(server):
    data = b"dribbled body"
    frames = put_frame(1, "dribble.txt", data) + protocol.encode_get(2, "dribble.txt")
    with server.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(frames)):
            sock.send(frames[i:i + 1])
        reader = FrameReader(sock)
        put_reply, _ = reader.frame()
        get_reply, body = reader.frame()
    assert put_reply["ok"] and get_reply["ok"] and body == data


def test_a_burst_of_100_pipelined_requests_in_one_send(server):
    burst = b"".join(put_frame(i, f"burst/{i}.txt", str(i).encode() * 3) for i in range(50))
    burst += b"".join(protocol.encode_get(50 + i, f"burst/{i}.txt") for i in range(50))
    with server.connect() as sock:
        sock.sendall(burst)
        reader = FrameReader(sock)
        replies = [reader.frame() for _ in range(100)]
    assert [f["id"] for f, _ in replies] == list(range(100))  # in request order
    assert all(f["ok"] for f, _ in replies)
    assert [body for _, body in replies[50:]] == [str(i).encode() * 3 for i in range(50)]


def test_a_slow_client_does_not_stall_a_fast_one(server, tmp_path):
    big = tmp_path / "big"
    random_file(big, 32 * 1024 * 1024)
    with server.client() as client:
        client.put_file(big, "big")
    slow = server.connect()
    try:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(protocol.encode_get(1, "big"))  # ...and never reads the reply
        half = server.connect()
        half.sendall(protocol.encode_put(1, "half", 1000, "0" * 64) + b"x" * 10)  # stalls mid-body
        # Served at all while the others hang on is the point (a loop that blocked on
        # either would never answer); how fast is for scripts/slowloris_check.py.
        (tmp_path / "small").write_bytes(b"small")
        with server.client() as client:
            client.put_file(tmp_path / "small", "small")
            client.get_file("small", tmp_path / "small.back")
            assert sorted(e["name"] for e in client.list()) == ["big", "small"]
        half.close()
    finally:
        slow.close()


def test_disconnect_mid_upload_leaves_nothing_behind(server, log_watcher):
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, "partial.bin", 10_000, "0" * 64) + b"x" * 5000)
    log_watcher.wait_for("reset")
    log_watcher.wait_for("closed")
    assert visible_files(server.root) == [] and temp_files(server.root) == []


def test_reset_mid_upload_leaves_nothing_behind(server, log_watcher):
    sock = server.connect()
    sock.sendall(protocol.encode_put(1, "reset.bin", 1 << 20, "0" * 64) + b"y" * 100_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    log_watcher.wait_for("closed")
    assert visible_files(server.root) == []
    with server.client() as client:  # and the server still serves
        assert client.list() == []


def test_a_bad_frame_gets_an_error_and_the_server_keeps_serving(server, tmp_path):
    with server.connect() as bad:
        bad.sendall(b"hello? \x00\x01 not a protocol\r\n")
        reader = FrameReader(bad)
        fields, _ = reader.frame()
        assert fields == {"id": None, "ok": False, "error": "bad_magic",
                          "message": fields["message"]}
        assert reader.closed()
    with server.connect() as bad:
        bad.sendall(struct.pack("!4sBBH", protocol.MAGIC, 1, 0, 60000))
        fields, _ = FrameReader(bad).frame()
        assert fields["error"] == "header_too_large"
    (tmp_path / "ok").write_bytes(b"still fine")
    with server.client() as client:
        client.put_file(tmp_path / "ok", "ok")
        assert client.stat("ok")["size"] == 10


def test_refused_names_get_bad_name_and_touch_nothing(server, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    names = ["../x", "/etc/passwd", "a/../../x", "..\\x", "C:x", "a\0b", ".muxserver-tmp-x"]
    with server.client() as client:
        results = client.run([PutFile(tmp_path / "f", n) for n in names])
        results += client.run([GetFile(n, tmp_path / f"g{i}") for i, n in enumerate(names)])
    assert [r.code for r in results] == ["bad_name"] * len(names) * 2
    assert visible_files(server.root) == []
    assert not os.path.exists(tmp_path.parent / "x")


def test_unknown_op_and_bad_requests_keep_the_connection(server):
    with server.connect() as sock:
        sock.sendall(protocol.encode_frame({"id": 1, "op": "delete", "name": "a"})
                     + protocol.encode_frame({"id": 2, "name": "a"})
                     + protocol.encode_frame({"id": 3, "op": 7, "name": "a"})
                     + protocol.encode_list(4, ""))
        reader = FrameReader(sock)
        replies = [reader.frame()[0] for _ in range(4)]
        assert (replies[0]["id"], replies[0]["error"]) == (1, "unknown_op")
        # A missing op and an op of the wrong type get the same answer.
        assert (replies[1]["id"], replies[1]["error"]) == (2, "bad_request")
        assert (replies[2]["id"], replies[2]["error"]) == (3, "bad_request")
        assert (replies[3]["id"], replies[3]["ok"]) == (4, True)


def test_an_error_with_a_null_id_closes_the_connection(server):
    """A request whose id cannot be read gets "id": null, and every such reply is the
    last: the client cannot tell which request it concerns (docs/PROTOCOL.md, 6)."""
    with server.connect() as sock:
        sock.sendall(protocol.encode_frame({"op": "get", "name": "a"})
                     + protocol.encode_list(3, ""))
        reader = FrameReader(sock)
        first, _ = reader.frame()
        assert (first["id"], first["error"]) == (None, "bad_request")
        assert reader.closed()


def test_a_get_with_a_body_is_refused_and_its_body_skipped(server):
    with server.connect() as sock:
        sock.sendall(protocol.encode_frame({"id": 1, "op": "get", "name": "x"}, 5) + b"12345"
                     + protocol.encode_list(2, ""))
        reader = FrameReader(sock)
        assert reader.frame()[0]["error"] == "bad_request"
        assert reader.frame()[0] == {"id": 2, "ok": True, "more": False, "count": 0, "length": 0}


def test_existing_file_is_refused_early_and_the_client_goes_on(server, tmp_path):
    big = tmp_path / "big"
    random_file(big, 8 * 1024 * 1024)
    (tmp_path / "after").write_bytes(b"after")
    with server.client() as client:
        client.put_file(big, "big")
        results = client.run([PutFile(big, "big"), PutFile(tmp_path / "after", "after")])
    assert results[0].code == "exists" and "already exists" in results[0].message
    assert results[1].ok and (server.root / "after").read_bytes() == b"after"


def test_overwrite_needs_the_server_flag(make_server, tmp_path):
    (tmp_path / "v1").write_bytes(b"one")
    (tmp_path / "v2").write_bytes(b"two")
    strict = make_server()
    with strict.client() as client:
        client.put_file(tmp_path / "v1", "f")
        with pytest.raises(ClientError) as exc:
            client.put_file(tmp_path / "v2", "f", overwrite=True)
        assert exc.value.code == "overwrite_refused"
    assert (strict.root / "f").read_bytes() == b"one"
    lenient = make_server(root_dir=strict.root, allow_overwrite=True)
    with lenient.client() as client:
        with pytest.raises(ClientError) as exc:
            client.put_file(tmp_path / "v2", "f")
        assert exc.value.code == "exists"
        client.put_file(tmp_path / "v2", "f", overwrite=True)
    assert (strict.root / "f").read_bytes() == b"two"


def test_checksum_mismatch_is_refused_and_nothing_is_stored(server):
    with server.connect() as sock:
        sock.sendall(protocol.encode_put(1, "bad.txt", 4, sha256(b"good")) + b"evil")
        fields, _ = FrameReader(sock).frame()
    assert fields["error"] == "checksum_mismatch"
    assert visible_files(server.root) == []


def test_half_closed_client_still_gets_its_replies(server, tmp_path):
    (server.root / "hc.txt").write_bytes(b"half close")
    with server.connect() as sock:
        sock.sendall(protocol.encode_get(1, "hc.txt") + protocol.encode_stat(2, "hc.txt"))
        sock.shutdown(socket.SHUT_WR)  # recv will return b"" on the server side
        reader = FrameReader(sock)
        get_reply, body = reader.frame()
        stat_reply, _ = reader.frame()
        assert reader.closed()
    assert body == b"half close" and stat_reply["size"] == 10


def test_a_file_never_hashed_is_verified_then_remembered(server, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (server.root / "placed.bin").write_bytes(data)  # put there by hand, not by an upload
    with server.client() as client:
        assert not {"sha256", "blake3"} & set(client.stat("placed.bin"))
        got = client.get_file("placed.bin", tmp_path / "placed")
        assert got.digest == b3(data)
        assert client.stat("placed.bin")["blake3"] == b3(data).hex  # now remembered
    assert (tmp_path / "placed").read_bytes() == data


def test_fifo_in_the_root_is_refused_without_blocking_the_loop(server):
    os.mkfifo(server.root / "pipe")
    with server.client() as client:
        results = client.run([GetFile("pipe", server.root.parent / "p"), Stat("pipe"),
                              ListDir("")])
    assert results[0].code == "not_a_file"
    assert results[1].ok and results[1].info["type"] == "other"
    assert results[2].ok


def test_connection_cap_sends_too_many_clients(make_server):
    server = make_server(limits=Limits(max_connections=2))
    first, second = server.connect(), server.connect()
    try:  # a reply on each proves both were accepted before the third connects
        first.sendall(protocol.encode_list(1, ""))
        FrameReader(first).frame()
        second.sendall(protocol.encode_list(1, ""))
        FrameReader(second).frame()
        with server.connect() as third:  # (clients speak first: it answers the request)
            third.sendall(protocol.encode_list(1, ""))
            fields, _ = FrameReader(third).frame()
            assert fields["error"] == "too_many_clients"
            assert FrameReader(third).closed()
    finally:
        first.close()
        second.close()


def test_many_concurrent_clients_each_get_their_files(server, tmp_path):
    errors = []

    def worker(n: int) -> None:
        try:
            src = tmp_path / f"w{n}"
            src.write_bytes(os.urandom(50_000))
            with server.client() as client:
                for j in range(5):
                    client.put_file(src, f"w{n}/{j}")
                client.get_file(f"w{n}/4", tmp_path / f"w{n}.back")
            assert (tmp_path / f"w{n}.back").read_bytes() == src.read_bytes()
        except Exception as exc:  # reported below with the worker's number
            errors.append((n, exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(visible_files(server.root)) == 100


@needs_python_classes
def test_a_bug_in_one_connection_closes_only_that_connection(server, monkeypatch, log_watcher):
    from muxserver import native

    real = native.NativeSession.start_request

    def buggy(self, fields, length):
        if fields.get("name") == "boom":
            raise RuntimeError("simulated bug")
        return real(self, fields, length)

    monkeypatch.setattr(native.NativeSession, "start_request", buggy)
    with server.connect() as victim:
        victim.sendall(protocol.encode_stat(1, "boom"))
        assert FrameReader(victim).closed()
    assert "simulated bug" in str(log_watcher.wait_for("error")[0].exc_info[1])
    with server.client() as client:
        assert client.list() == []


def test_a_refused_listing_leaves_the_connection_fully_usable(server, log_watcher):
    with server.connect() as sock:
        sock.sendall(protocol.encode_list(1, "missing") + protocol.encode_list(2, "../up")
                     + protocol.encode_stat(3, "missing") + protocol.encode_list(4, ""))
        reader = FrameReader(sock)
        assert [reader.frame()[0].get("error") for _ in range(4)] == [
            "not_found", "bad_name", "not_found", None]
        sock.shutdown(socket.SHUT_WR)
        assert reader.closed()  # and the server noticed our end of stream
    log_watcher.wait_for("closed")


def test_the_client_remembers_its_files_hashes(server, tmp_path, monkeypatch):
    from muxserver.client import local as client_module

    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "f").write_bytes(data)
    with server.client() as client:
        client.put_file(tmp_path / "f", "first")
    assert os.getxattr(tmp_path / "f", "user.muxserver.blake3").decode().endswith(b3(data).hex)
    client_module.LOCAL_HASHES._entries.clear()  # only the xattr is left to remember

    def no_reading(*args):
        raise AssertionError("the file was read again to hash it")

    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:  # (the server is idle: patching os.pread touches nobody else)
        monkeypatch.setattr(client_module.os, "pread", no_reading)
        assert client_module.remembered_digest(fd, os.fstat(fd)) == b3(data)
    finally:
        monkeypatch.undo()
        os.close(fd)
    with server.client() as client:
        assert client.put_file(tmp_path / "f", "second").digest == b3(data)
