"""HTTP/1.1 on the native port: http.client, urllib, raw sockets and curl."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from muxserver import protocol
from muxserver.client import Client
from muxserver.http_dav import ALLOWED_METHODS
from muxserver.limits import Limits

from .conftest import FrameReader, temp_files, tls_client_context, tls_settings, visible_files

pytestmark = pytest.mark.timeout(60)


def connection(server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(server.host, server.port, timeout=20)


def request(server, method: str, path: str, body=None, headers=None):
    conn = connection(server)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_get_sends_the_file_with_its_headers(server):
    data = os.urandom(300_000)
    (server.root / "f.bin").write_bytes(data)
    status, headers, body = request(server, "GET", "/f.bin")
    assert status == 200 and body == data
    assert headers["Content-Length"] == str(len(data))
    assert headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept-Ranges"] == "bytes" and "GMT" in headers["Last-Modified"]


def test_head_has_the_headers_and_no_body(server):
    (server.root / "page.html").write_text("<p>hi</p>")
    status, headers, body = request(server, "HEAD", "/page.html")
    assert status == 200 and body == b"" and headers["Content-Length"] == "9"
    assert headers["Content-Type"] == "text/html"


@pytest.mark.parametrize("spec, start, end", [("bytes=10-19", 10, 20), ("bytes=995-", 995, 1000),
                                             ("bytes=-5", 995, 1000),
                                             ("bytes=990-5000", 990, 1000)])
def test_range_requests_get_206(server, spec, start, end):
    data = bytes(range(256)) * 4
    (server.root / "r.bin").write_bytes(data[:1000])
    status, headers, body = request(server, "GET", "/r.bin", headers={"Range": spec})
    assert status == 206 and body == data[start:end]
    assert headers["Content-Range"] == f"bytes {start}-{end - 1}/1000"


def test_an_unsatisfiable_range_gets_416(server):
    (server.root / "r.bin").write_bytes(b"12345")
    status, headers, _ = request(server, "GET", "/r.bin", headers={"Range": "bytes=10-20"})
    assert status == 416 and headers["Content-Range"] == "bytes */5"


def test_if_none_match_gets_304(server):
    (server.root / "c.txt").write_text("cache me")
    _, headers, _ = request(server, "GET", "/c.txt")
    status, _, body = request(server, "GET", "/c.txt", headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


def test_put_with_a_length_stores_atomically_and_verifies_the_digest(server):
    data = os.urandom(200_000)
    digest = hashlib.sha256(data).hexdigest()
    status, headers, body = request(server, "PUT", "/up/new.bin", data,
                                    {"X-Content-SHA256": digest})
    assert status == 201 and headers["ETag"] == f'"{digest}"'
    assert (server.root / "up" / "new.bin").read_bytes() == data
    b64 = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    status, _, _ = request(server, "PUT", "/up/bad.bin", data, {"Digest": f"sha-256={b64}"})
    assert status == 400
    assert not (server.root / "up" / "bad.bin").exists() and temp_files(server.root) == []


def test_put_chunked_from_a_generator(server):
    def chunks():
        for i in range(50):
            yield bytes([i]) * 1000

    conn = connection(server)
    conn.request("PUT", "/chunked.bin", body=chunks(), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 201
    response.read()
    conn.close()
    assert (server.root / "chunked.bin").read_bytes() == b"".join(chunks())


def test_put_needs_a_length(server):
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"PUT /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 411 Length Required")


def test_existing_files_are_not_replaced_unless_the_server_allows_it(make_server):
    strict = make_server()
    (strict.root / "keep.txt").write_text("original")
    status, _, body = request(strict, "PUT", "/keep.txt", b"new")
    assert status == 409 and b"does not overwrite" in body
    assert (strict.root / "keep.txt").read_text() == "original"
    lenient = make_server(root_dir=strict.root, allow_overwrite=True)
    status, _, _ = request(lenient, "PUT", "/keep.txt", b"new")
    assert status == 200 and (strict.root / "keep.txt").read_text() == "new"


def test_directory_index_lists_and_escapes_names(server):
    (server.root / "d").mkdir()
    (server.root / "d" / '<img src=x onerror="alert(1)">.txt').write_text("x")
    (server.root / "d" / "sub").mkdir()
    status, headers, body = request(server, "GET", "/d/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.txt" in page
    assert "<img" not in page
    assert 'href="/d/sub/"' in page and 'href="/d/%3Cimg%20src%3Dx' in page
    assert 'type="file" multiple' in page
    status, headers, _ = request(server, "GET", "/d")
    assert status == 301 and headers["Location"] == "/d/"


def test_the_page_has_its_style_and_script_as_files_with_an_etag(server):
    import re

    _, headers, body = request(server, "GET", "/")
    page = body.decode()
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert "<script>" not in page and "<style>" not in page  # (nothing inline)
    script = re.search(r'<script src="(/\.muxserver-page/index\.js\?v=\w+)"', page).group(1)
    style = re.search(r'href="(/\.muxserver-page/index\.css\?v=\w+)"', page).group(1)
    status, headers, js = request(server, "GET", script)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"xhr.upload.onprogress" in js and headers["ETag"].strip('"') in script
    status, headers, css = request(server, "GET", style)
    assert status == 200 and headers["Content-Type"].startswith("text/css") and css
    assert request(server, "GET", style, headers={"If-None-Match": headers["ETag"]})[0] == 304
    assert request(server, "GET", "/.muxserver-page/nothing.js")[0] == 404


def test_the_index_path_links_each_folder_and_keeps_odd_names_as_text(server):
    odd = server.root / "{settings}" / "a&b"
    odd.mkdir(parents=True)
    page = request(server, "GET", "/%7Bsettings%7D/a%26b/")[2].decode()
    assert ('<a href="/" aria-label="the top folder">/</a><a href="/%7Bsettings%7D/">'
            '{settings}</a>/<a href="/%7Bsettings%7D/a%26b/" aria-current="page">a&amp;b</a>/'
            ) in page
    assert 'data-settings="{&quot;dir&quot;: &quot;{settings}/a&amp;b&quot;' in page


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/x", "/a/%2E%2E/%2E%2E/x",
                                  "/a%5Cb", "/%00x", "/.muxserver-tmp-1", "/C:x", "/%ff"])
def test_bad_names_get_400(server, path):
    for method, body in (("GET", None), ("PUT", b"x")):
        conn = connection(server)
        conn.putrequest(method, path, skip_accept_encoding=True)
        if body is not None:
            conn.putheader("Content-Length", "1")
        conn.endheaders(body)
        assert conn.getresponse().status == 400, (method, path)
        conn.close()
    assert visible_files(server.root) == []


def test_missing_files_get_404_and_methods_405(server):
    assert request(server, "GET", "/nope")[0] == 404
    status, headers, _ = request(server, "PATCH", "/nope")
    assert status == 405 and headers["Allow"] == ALLOWED_METHODS


def test_keep_alive_and_pipelined_requests(server):
    (server.root / "a").write_text("A" * 100)
    (server.root / "b").write_text("B" * 50)
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\nGET /b HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"GET /a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"A" * 100) < data.index(b"B" * 50) < data.rindex(b"A" * 100)


def test_headers_too_large_get_431(make_server):
    server = make_server(limits=Limits(max_header_size=1024))
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"y" * 4000 + b"\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 431")


def test_a_body_over_the_size_limit_gets_413(make_server):
    server = make_server(limits=Limits(max_file_size=1000))
    assert request(server, "PUT", "/big", b"z" * 5000)[0] == 413
    conn = connection(server)
    conn.request("PUT", "/big2", body=iter([b"z" * 800, b"z" * 800]), encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert visible_files(server.root) == []


def test_neither_native_nor_http_is_refused(server):
    with server.connect() as sock:
        sock.sendall(b"hello there\r\n")
        fields, _ = FrameReader(sock).frame()
        assert fields["error"] == "bad_magic"


def test_a_method_split_across_reads_is_still_recognised(server):
    with socket.create_connection((server.host, server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"G")
        with server.client() as client:  # a round trip elsewhere: the server saw "G"
            client.list()
        sock.sendall(b"ET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_token_by_bearer_header_or_cookie(make_server):
    server = make_server(token="t0ken")
    (server.root / "s.txt").write_text("secret")
    status, headers, _ = request(server, "GET", "/s.txt")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, body = request(server, "GET", "/s.txt", headers={"Authorization": "Bearer t0ken"})
    assert status == 200 and body == b"secret"
    assert request(server, "GET", "/s.txt", headers={"Authorization": "Bearer nope"})[0] == 401
    status, headers, _ = request(server, "GET", "/?token=t0ken")
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    status, _, body = request(server, "GET", "/s.txt", headers={"Cookie": cookie})
    assert status == 200 and body == b"secret"


def test_three_bad_tokens_close_the_connection(make_server):
    server = make_server(token="t0ken")
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\r\n\r\n" * 4)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"401 Unauthorized") == 3


def test_https(make_server, certificates):
    server = make_server(**tls_settings(certificates))
    (server.root / "t.txt").write_text("over https")
    context = tls_client_context(certificates)
    conn = http.client.HTTPSConnection(server.host, server.port, context=context, timeout=20)
    conn.request("GET", "/t.txt")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"over https"
    conn.close()


def test_urllib_round_trip(server):
    data = b"urllib body" * 1000
    req = urllib.request.Request(f"http://{server.host}:{server.port}/u.bin", data=data,
                                 method="PUT")
    with urllib.request.urlopen(req, timeout=20) as response:
        assert response.status == 201
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/u.bin",
                                timeout=20) as response:
        assert response.read() == data
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{server.host}:{server.port}/none", timeout=20)
    assert info.value.code == 404


def test_native_and_http_clients_at_the_same_time_both_in_the_snapshot(server, tmp_path):
    with socket.create_connection((server.host, server.port)) as web:
        web.sendall(b"PUT /web.bin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
                    + b"w" * 1000)
        with server.connect() as native:
            native.sendall(protocol.encode_put(1, "native.bin", 100_000, "0" * 64) + b"n" * 1000)
            with server.client() as client:
                for _ in range(100):  # round trips until the server has read both headers
                    states = {c.name: c.state for c in server.snapshot().connections}
                    if {"web.bin", "native.bin"} <= set(states):
                        break
                    client.list()
            assert states["web.bin"] == "HTTP receiving body"
            assert states["native.bin"] == "receiving body"


# ----------------------------------------------------------------------------- curl

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--fail", *args], capture_output=True, timeout=60)


@needs_curl
def test_curl_download_upload_resume_and_pipe(server, tmp_path):
    base = f"http://{server.host}:{server.port}"
    data = os.urandom(3_000_000)
    (tmp_path / "c.bin").write_bytes(data)
    assert curl("-T", str(tmp_path / "c.bin"), f"{base}/c.bin").returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(["curl", "-sS", "--fail", "-O", f"{base}/c.bin"], cwd=out,
                            capture_output=True, timeout=60)
    assert result.returncode == 0 and (out / "c.bin").read_bytes() == data
    (out / "partial.bin").write_bytes(data[:1_234_567])
    assert curl("-C", "-", "-o", str(out / "partial.bin"), f"{base}/c.bin").returncode == 0
    assert (out / "partial.bin").read_bytes() == data
    piped = subprocess.run(["curl", "-sS", "--fail", "-T", "-", f"{base}/piped.txt"],
                           input=b"from a pipe\n", capture_output=True, timeout=60)
    assert piped.returncode == 0 and (server.root / "piped.txt").read_bytes() == b"from a pipe\n"
    assert b"stored piped.txt" in piped.stdout


@needs_curl
def test_curl_and_the_native_client_share_the_port(server, tmp_path):
    (tmp_path / "n.txt").write_text("native")
    with Client(server.host, server.port) as client:
        client.put_file(tmp_path / "n.txt", "n.txt")
    result = curl(f"http://{server.host}:{server.port}/n.txt")
    assert result.stdout == b"native"


def test_an_http_client_over_the_connection_cap_gets_503(make_server):
    server = make_server(limits=Limits(max_connections=1))
    with server.connect() as first:
        first.sendall(protocol.encode_list(1, ""))
        FrameReader(first).frame()  # accepted and counted
        status, headers, body = request(server, "GET", "/")
        assert status == 503 and headers["Retry-After"] == "5"
        assert b"limit of 1 connections" in body
