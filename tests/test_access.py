"""Access control: the token, and TLS in the same single-threaded loop."""

from __future__ import annotations

import socket
import ssl

import pytest

from muxserver import protocol
from muxserver.client import Client, ClientError

from .conftest import (
    FrameReader,
    put_frame,
    run_cli,
    spawn_server,
    start_thread_server,
    stop_process,
    stop_thread_server,
)

pytestmark = pytest.mark.timeout(60)

TOKEN = "correct horse battery staple"


@pytest.fixture
def token_server(make_server):
    return make_server(token=TOKEN)


def test_the_right_token_opens_every_operation(token_server, tmp_path):
    (tmp_path / "f").write_bytes(b"secret data")
    with Client(token_server.host, token_server.port, token=TOKEN) as client:
        client.put_file(tmp_path / "f", "f")
        assert client.stat("f")["size"] == 11
        client.get_file("f", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"secret data"


def test_requests_without_a_token_are_refused(token_server, tmp_path):
    with token_server.connect() as sock:
        sock.sendall(protocol.encode_list(1, "") + protocol.encode_stat(2, "x"))
        reader = FrameReader(sock)
        for expected_id in (1, 2):
            fields, _ = reader.frame()
            assert (fields["id"], fields["error"]) == (expected_id, "unauthorized")


def test_a_wrong_token_is_refused_and_three_failures_close(token_server):
    with token_server.connect() as sock:
        sock.sendall(b"".join(protocol.encode_auth(i, f"guess {i}") for i in range(1, 5)))
        reader = FrameReader(sock)
        for i in range(1, 4):
            fields, _ = reader.frame()
            assert (fields["id"], fields["error"], fields["message"]) == (
                i, "unauthorized", "wrong token")
        assert reader.closed()  # the fourth guess is never answered


def test_an_upload_from_a_stranger_is_not_read(token_server):
    with token_server.connect() as sock:
        sock.sendall(put_frame(1, "intruder.bin", b"x" * 100_000))
        reader = FrameReader(sock)
        assert reader.frame()[0]["error"] == "unauthorized"
        assert reader.closed()
    assert list(token_server.root.iterdir()) == []


def test_client_reports_a_refused_token(token_server):
    with Client(token_server.host, token_server.port, token="nope") as client:
        with pytest.raises(ClientError) as info:
            client.list()
    assert info.value.code == "unauthorized" and "refused the token" in info.value.message


def test_token_from_a_file_and_from_the_environment(tmp_path, root):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    srv = spawn_server(root, "--token-file", str(token_file))
    try:
        ports = ["--port", str(srv.port)]
        assert run_cli("ls", *ports, "--token-file", str(token_file)).returncode == 0
        env_ok = run_cli("ls", *ports, env={"MUXSERVER_TOKEN": TOKEN, "PATH": "/usr/bin"})
        assert env_ok.returncode == 0, env_ok.stderr
        refused = run_cli("ls", *ports, "--token", "wrong")
        assert refused.returncode == 1 and "refused the token" in refused.stderr
        missing = run_cli("ls", *ports, env={"PATH": "/usr/bin"})
        assert missing.returncode == 1 and "needs a token" in missing.stderr
    finally:
        stop_process(srv.proc)


def test_binding_beyond_loopback_without_a_token_warns():
    from muxserver.cli_serve import exposure_warning

    # (tests never bind outside loopback: the decision is checked, not the socket)
    assert exposure_warning("127.0.0.1", False, 9009, "/srv") is None
    assert exposure_warning("localhost", False, 9009, "/srv") is None
    assert exposure_warning("::1", False, 9009, "/srv") is None
    assert exposure_warning("0.0.0.0", True, 9009, "/srv") is None
    warning = exposure_warning("0.0.0.0", False, 9009, "/srv")
    assert "WARNING" in warning and "without a token" in warning and "/srv" in warning
    assert exposure_warning("192.0.2.7", False, 9009, "/srv") is not None


# ------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_server(make_server, certificates):
    return make_server(tls_cert=str(certificates / "cert.pem"),
                       tls_key=str(certificates / "key.pem"))


def test_tls_round_trip_large_and_small(tls_server, certificates, tmp_path):
    import os

    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "small").write_bytes(b"tiny")
    with Client(tls_server.host, tls_server.port, tls=True,
                cafile=str(certificates / "ca.pem")) as client:
        client.put_file(tmp_path / "big", "big")
        client.put_file(tmp_path / "small", "small")
        client.get_file("big", tmp_path / "big.back")
        client.get_file("small", tmp_path / "small.back")
        assert {e["name"] for e in client.list()} == {"big", "small"}
    assert (tmp_path / "big.back").read_bytes() == data
    assert (tmp_path / "small.back").read_bytes() == b"tiny"


def test_tls_with_pipelined_requests_in_one_record(tls_server, certificates):
    context = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    with socket.create_connection((tls_server.host, tls_server.port)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            burst = b"".join(put_frame(i, f"p{i}", b"%d" % i) for i in range(40))
            sock.sendall(burst)  # many frames inside few TLS records: pending() matters
            reader = FrameReader(sock)
            assert [reader.frame()[0]["id"] for _ in range(40)] == list(range(40))


def test_plaintext_on_the_tls_port_closes_only_that_connection(tls_server, certificates,
                                                                tmp_path):
    with tls_server.connect() as plain:
        plain.sendall(protocol.encode_list(1, ""))
        assert FrameReader(plain).closed()
    with Client(tls_server.host, tls_server.port, tls=True,
                cafile=str(certificates / "ca.pem")) as client:
        assert client.list() == []


def test_an_untrusted_certificate_is_refused_by_the_client(tls_server):
    with Client(tls_server.host, tls_server.port, tls=True) as client:
        with pytest.raises(ClientError) as info:
            client.list()
    assert info.value.code == "tls" and "not trusted" in info.value.message


def test_a_stalled_handshake_times_out(make_server, certificates, log_watcher):
    from muxserver.limits import Limits

    server = make_server(tls_cert=str(certificates / "cert.pem"),
                         tls_key=str(certificates / "key.pem"),
                         limits=Limits(handshake_timeout=0.3))
    with server.connect() as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        assert FrameReader(sock).closed()
    assert any("handshake timed out" in r.getMessage() for r in log_watcher.events("timeout"))


def test_tls_and_token_together_from_the_command_line(tmp_path, root, certificates):
    srv = spawn_server(root, "--tls-cert", str(certificates / "cert.pem"),
                       "--tls-key", str(certificates / "key.pem"), "--token", TOKEN)
    try:
        (tmp_path / "f").write_text("over tls")
        args = ["--port", str(srv.port), "--cafile", str(certificates / "ca.pem"),
                "--token", TOKEN]
        assert run_cli("put", str(tmp_path / "f"), *args).returncode == 0
        assert (root / "f").read_text() == "over tls"
        plain = run_cli("ls", "--port", str(srv.port), "--token", TOKEN)
        assert plain.returncode == 1 and "--tls" in plain.stderr
    finally:
        stop_process(srv.proc)


def test_a_wrong_cafile_or_name_gets_a_hint_that_fits(tls_server, certificates, tmp_path):
    trustme = pytest.importorskip("trustme")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other_ca)
    with Client(tls_server.host, tls_server.port, tls=True, cafile=str(other_ca)) as client:
        with pytest.raises(ClientError) as wrong_ca:
            client.list()
    assert "use --cafile" not in wrong_ca.value.message
    assert "other-ca.pem is not the certificate" in wrong_ca.value.message
    named = trustme.CA()
    (tmp_path / "named").mkdir()
    cert = named.issue_cert("files.example")  # (for another name than 127.0.0.1)
    cert.private_key_pem.write_to_path(tmp_path / "named" / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "named" / "cert.pem")
    named.cert_pem.write_to_path(tmp_path / "named" / "ca.pem")
    (tmp_path / "root2").mkdir()
    running, thread = start_thread_server(tmp_path / "root2", tls_cert=str(
        tmp_path / "named" / "cert.pem"), tls_key=str(tmp_path / "named" / "key.pem"))
    try:
        with Client(running.host, running.port, tls=True,
                    cafile=str(tmp_path / "named" / "ca.pem")) as client:
            with pytest.raises(ClientError) as mismatch:
                client.list()
        assert "not for the name '127.0.0.1'" in mismatch.value.message
    finally:
        stop_thread_server(running, thread)
