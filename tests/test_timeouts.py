"""The same header, stall and idle timeouts in every phase, for both protocols.

Timeouts here are short (a fraction of a second) so the tests are quick, but no test
depends on how fast anything happens: each one waits for the server's real answer (a
reply, an EOF, a log record), and a busy machine only makes that answer come later.
"""

from __future__ import annotations

import os
import socket

import pytest

from muxserver import protocol
from muxserver.limits import Limits

from .conftest import FrameReader, temp_files, tls_client_context, tls_settings, visible_files

pytestmark = pytest.mark.timeout(60)


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_dribbling_clients_of_every_kind_are_closed_at_the_header_timeout(make_server, tmp_path):
    server = make_server(limits=Limits(header_timeout=0.5))
    (tmp_path / "f").write_bytes(b"normal client")
    starts = {
        "native": protocol.encode_list(1, "")[:5],  # inside the prefix
        "native header": protocol.encode_list(1, "")[:12],  # inside the JSON header
        "http": b"GET / HTTP/1.1\r\nHost: loc",  # inside the request head
        "sniffer": b"G",  # not even enough to tell the protocol
    }
    dribblers = []
    try:
        for kind, first in starts.items():
            for _ in range(10):
                sock = socket.create_connection((server.host, server.port), timeout=30)
                sock.sendall(first)
                dribblers.append((kind, sock))
        with server.client() as client:  # served while they hang on
            client.put_file(tmp_path / "f", "f")
            assert client.stat("f")["size"] == 13
        for kind, sock in dribblers:
            answer = read_to_eof(sock)  # the server hangs up on each one
            if kind.startswith("native"):
                fields = protocol.parse_header(answer[8:])
                assert (fields["id"], fields["error"]) == (None, "timeout")
            elif kind == "http":
                assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
            else:
                assert answer == b""
    finally:
        for _, sock in dribblers:
            sock.close()


def test_a_tls_handshake_gets_no_more_time_than_a_header(make_server, certificates):
    server = make_server(**tls_settings(certificates),
                         limits=Limits(header_timeout=0.5, handshake_timeout=600))
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"\x16\x03\x01\x02")  # the start of a ClientHello record, then silence
        assert read_to_eof(sock) == b""
    context = tls_client_context(certificates)
    with socket.create_connection((server.host, server.port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:  # still served
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert read_to_eof(sock).startswith(b"HTTP/1.1 200 OK")


def test_an_http_upload_that_stalls_gets_408_and_leaves_nothing(make_server, log_watcher):
    server = make_server(limits=Limits(stall_timeout=0.3))
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"PUT /stalled.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: 10000\r\n\r\n" + b"s" * 100)
        answer = read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
    log_watcher.wait_for("closed")
    assert visible_files(server.root) == [] and temp_files(server.root) == []
    assert server.server.stats.transfers_failed == 1


def test_an_http_reader_that_stopped_is_closed_at_the_stall_timeout(make_server, root,
                                                                     log_watcher):
    (root / "big").write_bytes(b"b" * 50_000_000)
    server = make_server(limits=Limits(stall_timeout=0.3))
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536)  # the download started; this client now stops reading
        records = log_watcher.wait_for("timeout")
        assert "the transfer stalled" in records[0].getMessage()
        log_watcher.wait_for("closed")
    assert server.server.stats.transfers_failed == 1


def test_an_idle_http_connection_is_closed_without_a_word(make_server):
    server = make_server(limits=Limits(idle_timeout=0.3))
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_to_eof(sock)  # one response, then the close: no 408 for nothing
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("wire", ["native", "http"])
def test_guessing_from_one_address_is_stopped_across_connections(make_server, wire):
    server = make_server(token="right", limits=Limits(address_auth_failures=3))

    def attempt(token: str) -> bytes:
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            if wire == "native":
                sock.sendall(protocol.encode_auth(1, token))
                fields, _ = FrameReader(sock).frame()
                return fields["error"].encode() if not fields["ok"] else b"ok"
            sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
            return read_to_eof(sock).split(b"\r\n")[0]

    denied = b"unauthorized" if wire == "native" else b"HTTP/1.1 401 Unauthorized"
    blocked = (b"too_many_attempts" if wire == "native"
               else b"HTTP/1.1 429 Too Many Requests")
    assert attempt("right") in (b"ok", b"HTTP/1.1 200 OK")
    assert [attempt(f"guess {i}") for i in range(3)] == [denied] * 3
    assert attempt("right") == blocked  # the right token too: the guesser learns nothing


@pytest.mark.parametrize("wire", ["native", "http"])
def test_no_stall_timeout_while_the_server_itself_hashes_the_file(make_server, root, wire):
    # A get of a file never hashed waits for the helper thread (on a busy machine, or
    # for a big file, longer than the stall timeout): the client waits for us, so it is
    # not "stalled". Here the helper is held until the stall timer has run out twice.
    import threading
    import time

    from muxserver import hashing

    body = os.urandom(3_000_000)
    (root / "big").write_bytes(body)
    server = make_server(limits=Limits(stall_timeout=0.2))
    opened = threading.Event()

    class Gate:  # queued ahead of the file's hash: the helper waits here
        def _run(self, buf: bytearray) -> None:
            opened.wait(30)

    hashing._worker().put(Gate())
    loop = server.server.loop
    try:
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            if wire == "native":
                sock.sendall(protocol.encode_get(1, "big"))
            else:
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            expired = loop.timeout_wakeups + 2  # the stall timer's deadline came and went
            deadline = time.monotonic() + 30
            while loop.timeout_wakeups < expired and time.monotonic() < deadline:
                time.sleep(0.01)
            assert loop.timeout_wakeups >= expired
            assert server.server.stats.transfers_failed == 0
            opened.set()
            if wire == "native":
                fields, data = FrameReader(sock).frame()
                assert fields["ok"] and data == body
            else:
                answer = read_to_eof(sock)
                assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(body)
    finally:
        opened.set()
    assert server.server.stats.transfers_failed == 0
