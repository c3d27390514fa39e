"""HTTP keeps the promises the native protocol keeps: against a live server, each
defect found by trying the HTTP side as an attacker would (see docs/OPERATIONS.md,
"HTTP on the same port")."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess

import h11
import pytest

from muxserver import protocol
from muxserver.limits import Limits

from .conftest import FrameReader, temp_files, tls_client_context, tls_settings, visible_files

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken+with/slash="


def exchange(server, raw: bytes, methods: list[str] | None = None,
             host: str | None = None) -> tuple[list[tuple[int, dict, bytes]], bool]:
    """Send ``raw`` (one or more requests) and read the responses to ``methods`` (one
    GET by default). Returns them, and whether the server closed the connection after
    the last one (the close is waited for only when no keep-alive was promised)."""
    methods = methods or ["GET"]
    responses: list[tuple[int, dict, bytes]] = []
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(raw)
        for method in methods:
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
            status, headers, body = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                    continue
                if type(event) is h11.ConnectionClosed:
                    return responses, True
                if type(event) is h11.Response:
                    status = event.status_code
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    break
            responses.append((status, headers, bytes(body)))
            if conn.their_state is h11.MUST_CLOSE:
                return responses, _closed(sock)
            conn.start_next_cycle()
        return responses, False


def _closed(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def http_request(method: str, target: str, host: str = "127.0.0.1", **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------ DNS rebinding


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example",
                                  "127.0.0.1.nip.io"])
def test_a_foreign_host_is_refused_and_nothing_is_read_or_written(server, host):
    (server.root / "secret.txt").write_text("private")
    [(status, _, body)], closed = exchange(server, http_request("GET", "/", host=host))
    assert status == 403 and b"secret" not in body and closed
    put = http_request("PUT", "/planted.txt", host=host, Content_Length="5") + b"12345"
    [(status, _, _)], closed = exchange(server, put, ["PUT"])
    assert status == 403 and closed and not (server.root / "planted.txt").exists()


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:{port}", "localhost.:{port}",
                                  "127.0.0.1:{port}", "[::1]:{port}", "app.localhost"])
def test_the_names_of_this_server_are_answered(server, host):
    (server.root / "f.txt").write_text("ok")
    raw = http_request("GET", "/f.txt", host=host.format(port=server.port))
    [(status, _, body)], _ = exchange(server, raw)
    assert (status, body) == (200, b"ok")


def test_allow_host_adds_names_and_domains(make_server):
    server = make_server(allow_hosts=["files.example", ".lan.example"])
    for host in ("files.example", "box.lan.example:9009"):
        assert exchange(server, http_request("GET", "/", host=host))[0][0][0] == 200
    assert exchange(server, http_request("GET", "/", host="other.example"))[0][0][0] == 403


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_works_on_localhost_and_the_address(server):
    (server.root / "c.txt").write_text("curl")
    for host in ("127.0.0.1", "localhost"):
        result = subprocess.run(["curl", "-sS", "--fail", f"http://{host}:{server.port}/c.txt"],
                                capture_output=True, timeout=30)
        assert result.returncode == 0 and result.stdout == b"curl", result.stderr


# --------------------------------------------------------------- HEAD and errors


def test_errors_to_head_have_headers_only_and_log_no_traceback(server, log_watcher):
    raw = http_request("HEAD", "/missing.txt") * 300 + http_request("GET", "/")
    responses, closed = exchange(server, raw, ["HEAD"] * 300 + ["GET"])
    assert [status for status, _, _ in responses] == [404] * 300 + [200] and not closed
    assert all(body == b"" and int(headers["content-length"]) > 0
               for _, headers, body in responses[:300])
    assert log_watcher.events("error") == []


def test_head_refused_for_want_of_a_token_has_headers_only(make_server, log_watcher):
    server = make_server(token=TOKEN)
    [(status, headers, body)], _ = exchange(server, http_request("HEAD", "/"), ["HEAD"])
    assert (status, body) == (401, b"") and "www-authenticate" in headers
    assert log_watcher.events("error") == []


# ------------------------------------------------------------------- credentials


def test_credentials_do_not_stick_to_the_connection(make_server):
    server = make_server(token=TOKEN)
    (server.root / "s.txt").write_text("secret")
    raw = (http_request("GET", "/s.txt", Authorization=f"Bearer {TOKEN}")
           + http_request("GET", "/s.txt"))
    responses, _ = exchange(server, raw, ["GET", "GET"])
    assert [(s, b) for s, _, b in responses] == [(200, b"secret"), (401, responses[1][2])]
    assert b"secret" not in responses[1][2]


@pytest.mark.parametrize("target", ["/../x", "/%ff", "/fine.bin"])
def test_a_stranger_is_answered_before_its_body_and_disconnected(make_server, target):
    server = make_server(token=TOKEN)
    head = http_request("PUT", target, Content_Length=str(10_000_000))
    [(status, _, _)], closed = exchange(server, head, ["PUT"])  # no body sent at all
    assert status == 401 and closed
    assert visible_files(server.root) == [] and temp_files(server.root) == []


def test_the_token_redirect_stays_on_this_server(make_server):
    server = make_server(token=TOKEN)
    for target, location in [("/%2Fevil.example/", "/evil.example/"),
                             ("//evil.example/", "/evil.example/"),
                             ("/%5Cevil.example", "/%5Cevil.example"),
                             ("/docs/", "/docs/")]:
        raw = http_request("GET", f"{target}?token={TOKEN}")
        [(status, headers, _)], _ = exchange(server, raw)
        assert (status, headers["location"]) == (303, location)


def test_a_token_with_a_plus_logs_in_from_the_query_string(make_server):
    server = make_server(token=TOKEN)
    [(status, headers, _)], _ = exchange(server, http_request("GET", f"/?token={TOKEN}"))
    assert status == 303 and "muxserver_session=" in headers["set-cookie"]  # (signed)
    assert TOKEN not in headers["set-cookie"]  # (a session, never the token itself)
    assert "Secure" not in headers["set-cookie"]  # plain HTTP: a Secure cookie would be lost


def test_the_cookie_is_secure_over_tls(make_server, certificates):
    server = make_server(token=TOKEN, **tls_settings(certificates))
    context = tls_client_context(certificates)
    with socket.create_connection((server.host, server.port), timeout=20) as raw_sock:
        with context.wrap_socket(raw_sock, server_hostname="127.0.0.1") as sock:
            sock.sendall(http_request("GET", f"/?token={TOKEN}", Connection="close"))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    cookie = [line for line in data.split(b"\r\n") if line.lower().startswith(b"set-cookie")]
    assert cookie and b"; Secure" in cookie[0] and b"HttpOnly" in cookie[0]


# --------------------------------------------------------------------- framing


def test_content_length_with_transfer_encoding_is_refused_and_closed(server):
    smuggled = http_request("GET", "/secret.txt")
    raw = (http_request("PUT", "/x.bin", Content_Length="5", Transfer_Encoding="chunked")
           + b"5\r\nhello\r\n0\r\n\r\n" + smuggled)
    responses, closed = exchange(server, raw, ["PUT", "GET"])
    assert [status for status, _, _ in responses] == [400] and closed
    assert visible_files(server.root) == []


def test_a_put_with_content_range_stores_nothing(server):
    raw = http_request("PUT", "/part.bin", Content_Length="1000",
                       Content_Range="bytes 1000-1999/2000") + b"p" * 1000
    [(status, _, body)], closed = exchange(server, raw, ["PUT"])
    assert status == 400 and b"Content-Range" in body and closed
    assert visible_files(server.root) == [] and temp_files(server.root) == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_resuming_an_upload_never_stores_a_truncated_file(server, tmp_path):
    (tmp_path / "whole.bin").write_bytes(bytes(range(256)) * 20)
    result = subprocess.run(["curl", "-sS", "--fail", "-C", "1000", "-T",
                             str(tmp_path / "whole.bin"),
                             f"http://{server.host}:{server.port}/whole.bin"],
                            capture_output=True, timeout=30)
    assert result.returncode != 0
    assert visible_files(server.root) == []


# ------------------------------------------------------------------ user files


@pytest.mark.parametrize("name, kind", [("page.html", "text/html"),
                                        ("image.svg", "image/svg+xml"),
                                        ("notes.txt", "text/plain")])
def test_user_files_are_served_sandboxed_and_never_sniffed(server, name, kind):
    (server.root / name).write_text("<script>parent.document.title='owned'</script>")
    [(status, headers, _)], _ = exchange(server, http_request("GET", "/" + name))
    assert status == 200 and headers["content-type"].startswith(kind)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "sandbox"
    [(status, headers, _)], _ = exchange(server, http_request("GET", "/"))
    assert "script-src" in headers["content-security-policy"]  # the index has its own


# ------------------------------------------------------------------ statistics


def test_a_refused_chunked_put_counts_one_failure(make_server):
    server = make_server(limits=Limits(max_file_size=1000))
    body = b"".join(b"%x\r\n%s\r\n" % (500, b"c" * 500) for _ in range(4)) + b"0\r\n\r\n"
    raw = http_request("PUT", "/big.bin", Transfer_Encoding="chunked") + body
    [(status, _, _)], closed = exchange(server, raw, ["PUT"])
    assert status == 413 and closed
    stats = server.server.stats
    assert (stats.transfers_done, stats.transfers_failed) == (0, 1)


# ---------------------------------------------------- the native side of the same


def test_a_native_token_utf8_cannot_encode_is_a_wrong_token(make_server):
    server = make_server(token=TOKEN)
    raw = b'{"id":1,"op":"auth","token":"\\ud800"}'
    with server.connect() as sock:
        sock.sendall(protocol.PREFIX.pack(protocol.MAGIC, 1, 0, len(raw)) + raw
                     + protocol.encode_auth(2, TOKEN) + protocol.encode_list(3, ""))
        reader = FrameReader(sock)
        assert reader.frame()[0]["error"] == "unauthorized"
        assert reader.frame()[0] == {"id": 2, "ok": True}
        assert reader.frame()[0]["ok"]


def test_native_replies_say_offset_and_length_even_when_zero(server):
    (server.root / "empty").write_bytes(b"")
    (server.root / "f").write_bytes(b"abc")
    with server.connect() as sock:
        sock.sendall(protocol.encode_get(1, "empty") + protocol.encode_get(2, "f"))
        reader = FrameReader(sock)
        empty, _ = reader.frame()
        full, body = reader.frame()
    assert (empty["offset"], empty["length"]) == (0, 0)
    assert (full["offset"], full["length"], body) == (0, 3, b"abc")
    assert full["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_a_token_is_never_written_to_the_log_or_the_trace(make_server, log_watcher):
    from muxserver.trace import Narrator

    server = make_server(token=TOKEN)
    lines: list[str] = []
    server.server.watch(Narrator("en", write=lines.append))
    raw = (http_request("GET", f"/?token={TOKEN}") + http_request("GET", "/?token=guess")
           + http_request("GET", "/", Authorization=f"Bearer {TOKEN}x"))
    exchange(server, raw, ["GET", "GET", "GET"])
    with server.connect() as sock:
        sock.sendall(protocol.encode_auth(1, TOKEN + "y"))
        FrameReader(sock).frame()
    said = "\n".join(lines + [r.getMessage() for r in log_watcher.records])
    assert "HTTP request: GET /?token=…" in said
    assert TOKEN not in said and "guess" not in said
