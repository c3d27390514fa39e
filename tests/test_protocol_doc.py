"""docs/PROTOCOL.md is true: its hex example is what the server sends, and a client
written only from the document works against the server."""

from __future__ import annotations

import re
from pathlib import Path

import blake3
import pytest

from muxserver.digests import BLAKE3, Digest

from .doc_client import DocClient, ServerError

pytestmark = pytest.mark.timeout(60)

DOC = Path(__file__).parent.parent / "docs" / "PROTOCOL.md"


def hex_blocks() -> dict[str, bytes]:
    """The ```hex NAME blocks of the document, as bytes."""
    blocks = {}
    for name, text in re.findall(r"```hex ([\w-]+)\n(.*?)```", DOC.read_text(), re.S):
        data = bytearray()
        for line in text.splitlines():
            offset, rest = line.split("  ", 1)
            assert int(offset, 16) == len(data), f"{name}: offset {offset} is wrong"
            data += bytes.fromhex(rest.split("|")[0])
        blocks[name] = bytes(data)
    return blocks


def test_document_has_the_example_frames():
    assert set(hex_blocks()) == {"put-request", "put-reply", "get-request", "get-reply",
                                 "mkdir-request", "rm-request", "mv-request",
                                 "trailer-put-request", "trailer-frame", "trailer-put-reply"}


def test_the_example_bytes_are_what_the_encoders_produce():
    import hashlib

    from muxserver import protocol

    blocks = hex_blocks()
    body = b"hello, world\n"
    digest = hashlib.sha256(body).hexdigest()
    assert blocks["put-request"] == protocol.encode_put(1, "hello.txt", 13, digest,
                                                        mtime=1700000000) + body
    assert blocks["get-request"] == protocol.encode_get(2, "hello.txt")
    assert blocks["mkdir-request"] == protocol.encode_mkdir(3, "photos/2024", parents=True)
    assert blocks["rm-request"] == protocol.encode_rm(4, "photos/old", recursive=True)
    assert blocks["mv-request"] == protocol.encode_mv(5, "notes.txt", "archive/notes.txt")
    assert blocks["trailer-put-request"] == protocol.encode_put(
        6, "hello2.txt", 13, None, trailer=BLAKE3, mtime=1700000000) + body
    assert blocks["trailer-frame"] == protocol.encode_trailer(
        6, Digest(BLAKE3, blake3.blake3(body).hexdigest()))


def replay(server, sent: bytes, expected: bytes) -> bytes:
    """Send the documented request bytes; return as many reply bytes as documented."""
    with server.connect() as sock:
        sock.sendall(sent)
        received = bytearray()
        while len(received) < len(expected):
            data = sock.recv(65536)
            assert data, "server closed early"
            received += data
    return bytes(received)


def test_replaying_the_example_gets_the_documented_replies_byte_for_byte(server):
    blocks = hex_blocks()
    expected = blocks["put-reply"] + blocks["get-reply"]  # (pipelined, in one write)
    assert replay(server, blocks["put-request"] + blocks["get-request"], expected) == expected


def test_replaying_the_trailer_example_gets_its_reply_byte_for_byte(server):
    blocks = hex_blocks()
    expected = blocks["trailer-put-reply"]
    sent = blocks["trailer-put-request"] + blocks["trailer-frame"]
    assert replay(server, sent, expected) == expected
    assert (server.root / "hello2.txt").read_bytes() == b"hello, world\n"


def test_a_client_written_from_the_document_interoperates(server, tmp_path):
    client = DocClient(server.host, server.port)
    try:
        assert client.put("doc/one.txt", b"first file")["size"] == 10
        assert client.put("doc/two.bin", bytes(range(256)) * 1000)["ok"]
        assert client.put("empty", b"")["sha256"] == (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        assert client.get("doc/one.txt") == b"first file"
        assert client.get("empty") == b""
        assert client.stat("doc/two.bin")["size"] == 256000
        names = {e["name"] for e in client.list("", recursive=True)}
        assert names == {"doc", "doc/one.txt", "doc/two.bin", "empty"}
        replies = client.pipeline_gets(["doc/one.txt", "missing", "doc/two.bin"])
        assert replies[0][1] == b"first file"
        assert replies[1][0]["error"] == "not_found"
        assert replies[2][1] == bytes(range(256)) * 1000
        with pytest.raises(ServerError) as info:
            client.put("doc/one.txt", b"again")
        assert info.value.code == "exists"
        with pytest.raises(ServerError) as info:
            client.put("../outside", b"x")
        assert info.value.code == "bad_name"
        assert client.get("doc/one.txt") == b"first file"  # the connection is still good
    finally:
        client.close()
    (server.root / "big.bin").write_bytes(b"q" * 2_500_000)  # never hashed: hashed on get
    (server.root / "big2.bin").write_bytes(b"r" * 2_500_000)  # never hashed: a trailer
    client = DocClient(server.host, server.port)
    try:
        assert client.get("big.bin") == b"q" * 2_500_000
        assert client.get("big2.bin", trailer=True) == b"r" * 2_500_000
        assert client.digest_followed
        assert client.get("big2.bin", trailer=True) == b"r" * 2_500_000
        assert not client.digest_followed  # remembered now: in the header
    finally:
        client.close()


def test_the_documented_token_and_resume_flows(make_server, log_watcher):
    server = make_server(token="s3cret")
    data = bytes(range(256)) * 4000
    client = DocClient(server.host, server.port)
    try:
        with pytest.raises(ServerError) as info:
            client.stat("x")
        assert info.value.code == "unauthorized"
        assert client.auth("s3cret")["ok"]
        first = DocClient(server.host, server.port)
        first.auth("s3cret")
        first.start_resumable_put_and_vanish("resumed.bin", data, 300_000)
        log_watcher.wait_for("reset")
        log_watcher.wait_for("closed")
        offset = client.partial("resumed.bin", data)
        assert offset == 300_000
        assert client.resume_put("resumed.bin", data, offset)["size"] == len(data)
        assert client.get("resumed.bin") == data
        assert client.get_from("resumed.bin", 1000, data[:1000]) == data
    finally:
        client.close()


def test_the_documented_rules_for_ids_ops_and_guessing(make_server):
    server = make_server(token="s3cret")
    client = DocClient(server.host, server.port)
    try:
        client.auth("s3cret")
        for header in ({"op": 7, "id": 1}, {"id": 2}):  # section 5: wrong type or missing
            client.sock.sendall(client.frame(header))
            assert client.read_reply()[0]["error"] == "bad_request"
        client.sock.sendall(client.frame({"id": 3, "op": "chmod"}))
        assert client.read_reply()[0]["error"] == "unknown_op"
        reply, closed = client.request_without_id({"id": "x", "op": "stat", "name": "a"})
        assert (reply["id"], reply["error"], closed) == (None, "bad_request", True)
    finally:
        client.close()
    for attempt in range(10):  # section 5.0: ten wrong tokens from one address...
        guesser = DocClient(server.host, server.port)
        with pytest.raises(ServerError) as info:
            guesser.auth(f"guess {attempt}")
        assert info.value.code == "unauthorized"
        guesser.close()
    late = DocClient(server.host, server.port)
    try:  # ...and even the right one is refused for a while
        with pytest.raises(ServerError) as info:
            late.auth("s3cret")
        assert info.value.code == "too_many_attempts" and " s" in str(info.value)
    finally:
        late.close()


def test_the_documented_directory_operations(make_server):
    server = make_server(allow_delete=True)
    client = DocClient(server.host, server.port)
    try:
        assert client.mkdir("a/b", parents=True) == {"id": 1, "ok": True, "name": "a/b",
                                                     "created": True}
        assert client.mkdir("a/b", parents=True)["created"] is False
        with pytest.raises(ServerError) as info:
            client.mkdir("a/b")
        assert info.value.code == "exists"
        client.put("a/b/f.txt", b"f")
        assert client.mv("a/b/f.txt", "a/g.txt") == {"id": 5, "ok": True, "name": "a/g.txt",
                                                     "replaced": False}
        with pytest.raises(ServerError) as info:
            client.rm("a")
        assert info.value.code == "is_directory"
        assert client.rm("a", recursive=True)["removed"] == 3  # a, a/b, a/g.txt
    finally:
        client.close()


def test_every_limit_is_documented_for_operators():
    import dataclasses

    from muxserver.limits import Limits

    operations = (DOC.parent / "OPERATIONS.md").read_text()
    for field in dataclasses.fields(Limits):
        flag = "--" + field.name.replace("_", "-")
        assert f"| `{flag}` |" in operations, flag
        assert field.metadata.get("why"), field.name
