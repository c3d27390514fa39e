"""Graceful stop: SIGINT/SIGTERM let running transfers finish within the grace period."""

from __future__ import annotations

import signal
import socket

import pytest

from muxserver import protocol

from .conftest import (FrameReader, put_frame, sha256, spawn_server, stop_process,
                       temp_files, visible_files, wait_for_upload_to_start)

pytestmark = pytest.mark.timeout(60)


def test_an_upload_under_way_finishes_after_sigterm(root):
    srv = spawn_server(root, "--shutdown-grace", "20")
    data = b"g" * 300_000
    try:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(protocol.encode_put(1, "late.bin", len(data), sha256(data))
                         + data[:1000])
            reader = FrameReader(sock)
            wait_for_upload_to_start(root)
            with socket.create_connection((srv.host, srv.port)) as idle:
                # an idle connection is told why it is closed
                idle.sendall(protocol.encode_list(3, ""))  # a reply proves it was accepted
                idle_reader = FrameReader(idle)
                idle_reader.frame()
                sock.sendall(data[1000:2000])
                srv.proc.send_signal(signal.SIGTERM)
                fields, _ = idle_reader.frame()
                assert (fields["id"], fields["error"]) == (None, "shutting_down")
            with pytest.raises(OSError):  # no new connections
                socket.create_connection((srv.host, srv.port), timeout=5).close()
            sock.sendall(data[2000:] + protocol.encode_stat(2, "late.bin"))
            fields, _ = reader.frame()
            assert fields["ok"] and fields["sha256"] == sha256(data)
            fields, _ = reader.frame()  # the next request is not started
            assert (fields["id"], fields["error"]) == (None, "shutting_down")
            assert reader.closed()
        assert srv.proc.wait(timeout=10) == 0  # the last connection went: no need to wait
        assert (root / "late.bin").read_bytes() == data
        assert temp_files(root) == []
    finally:
        stop_process(srv.proc)


def test_the_grace_period_ends_unfinished_uploads_cleanly(root):
    srv = spawn_server(root, "--shutdown-grace", "0.5")
    try:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(protocol.encode_put(1, "never.bin", 10_000, "0" * 64) + b"n" * 10)
            reader = FrameReader(sock)
            wait_for_upload_to_start(root)
            srv.proc.send_signal(signal.SIGINT)
            assert srv.proc.wait(timeout=10) == 0
            assert reader.closed()
        _out, err = srv.output()
        assert "for 1 transfer(s)" in err
        assert visible_files(root) == [] and temp_files(root) == []
    finally:
        stop_process(srv.proc)


def test_a_download_under_way_finishes_after_sigint(root, tmp_path):
    data = bytes(range(256)) * 40_000  # 10 MB: sent in many turns
    srv = spawn_server(root, "--send-size", "65536")
    try:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(put_frame(1, "dl.bin", data))
            reader = FrameReader(sock)
            assert reader.frame()[0]["ok"]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(protocol.encode_get(2, "dl.bin"))
            first = sock.recv(1000)  # the download has started
            srv.proc.send_signal(signal.SIGINT)
            rest = bytearray(first)
            while chunk := sock.recv(1 << 20):
                rest += chunk
        assert data in bytes(rest)  # the whole body arrived before the close
        assert srv.proc.wait(timeout=10) == 0
    finally:
        stop_process(srv.proc)


def test_a_download_whose_digest_follows_its_body_finishes_after_sigint(root):
    data = bytes(range(256)) * 40_000  # 10 MB, never hashed: hashed while it is sent
    (root / "placed.bin").write_bytes(data)
    srv = spawn_server(root, "--send-size", "65536")
    try:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(protocol.encode_get(1, "placed.bin", trailer=True))
            received = bytearray(sock.recv(1000))  # the download has started
            srv.proc.send_signal(signal.SIGINT)
            while chunk := sock.recv(1 << 20):
                received += chunk
        assert srv.proc.wait(timeout=10) == 0
    finally:
        stop_process(srv.proc)
    decoder = protocol.FrameDecoder()
    decoder.receive_data(bytes(received))
    decoder.receive_data(b"")
    headers, body = [], bytearray()
    while not isinstance(event := decoder.next_event(), protocol.PeerClosed):
        if isinstance(event, protocol.FrameHeader):
            headers.append(event.fields)
        elif isinstance(event, protocol.BodyData):
            body += event.data
    assert headers[0]["trailer"] == "sha256" and body == data
    assert headers[1] == {"id": 1, "ok": True, "sha256": sha256(data)}  # then the close
    assert [h.get("error") for h in headers[2:]] in ([], ["shutting_down"])
