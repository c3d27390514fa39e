"""BLAKE3 beside SHA-256, and the digest that follows the body (a trailer frame).

The native protocol names a digest by its algorithm (``"blake3"`` or ``"sha256"``), in
put, get, partial, stat and the put's reply; a put may announce ``"trailer": "blake3"``
instead of a digest and send the digest in a ``trailer`` frame right after its body.
docs/PROTOCOL.md, sections 3, 5.1, 5.2 and 5.5.
"""

from __future__ import annotations

import os

import pytest

from muxserver import protocol
from muxserver.client import PutFile
from muxserver.client import local as client_local
from muxserver.digests import BLAKE3, SHA256, Digest, from_fields
from muxserver.protocol import RequestError, parse_request

from .conftest import FrameReader, b3, sha256, visible_files

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
