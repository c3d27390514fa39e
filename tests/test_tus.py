"""tus 1.0 on /.tus/: one resumable-upload mechanism with the native protocol, through
a client nobody here wrote (tuspy), and by hand."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from .conftest import spawn_server, stop_process, temp_files, visible_files
from .test_http_security import exchange, http_request

pytestmark = pytest.mark.timeout(120)
tusclient = pytest.importorskip("tusclient")

TUS = {"Tus_Resumable": "1.0.0"}


def meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def create(server, name: str, size: int, **more: str) -> str:
    raw = http_request("POST", "/.tus/", Upload_Length=str(size),
                       Upload_Metadata=meta(filename=name, **more), **TUS)
    [(status, headers, _)], _ = exchange(server, raw, ["POST"])
    assert status == 201, headers
    assert headers["tus-resumable"] == "1.0.0" and "upload-expires" in headers
    return headers["location"]


def patch(server, location: str, offset: int, data: bytes, **extra: str):
    raw = http_request("PATCH", location, Content_Type="application/offset+octet-stream",
                       Content_Length=str(len(data)), Upload_Offset=str(offset),
                       **TUS, **extra) + data
    [(status, headers, body)], _ = exchange(server, raw, ["PATCH"])
    return status, headers, body


def offset_of(server, location: str) -> int | None:
    [(status, headers, _)], _ = exchange(server, http_request("HEAD", location, **TUS),
                                         ["HEAD"])
    return int(headers["upload-offset"]) if status == 200 else None


def test_an_upload_in_pieces_is_stored_whole_and_only_at_the_end(server):
    data = os.urandom(300_000)
    location = create(server, "docs/report.bin", len(data))
    assert offset_of(server, location) == 0
    assert patch(server, location, 0, data[:100_000])[0] == 204
    assert offset_of(server, location) == 100_000
    assert not (server.root / "docs" / "report.bin").exists()  # nothing visible yet
    status, headers, _ = patch(server, location, 100_000, data[100_000:])
    assert status == 204 and headers["upload-offset"] == str(len(data))
    assert headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert (server.root / "docs" / "report.bin").read_bytes() == data
    assert temp_files(server.root) == [] and offset_of(server, location) is None


def test_a_wrong_offset_a_bad_checksum_and_a_missing_header_are_refused(server):
    location = create(server, "c.bin", 10)
    status, headers, _ = patch(server, location, 3, b"abcdefg")
    assert status == 409 and headers["upload-offset"] == "0"
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    status, _, _ = patch(server, location, 0, b"01234", Upload_Checksum=f"sha256 {bad}")
    assert status == 460 and offset_of(server, location) == 0  # the piece was not kept
    good = base64.b64encode(hashlib.sha1(b"01234").digest()).decode()
    assert patch(server, location, 0, b"01234", Upload_Checksum=f"sha1 {good}")[0] == 204
    assert offset_of(server, location) == 5
    raw = http_request("HEAD", location)  # no Tus-Resumable
    [(status, headers, _)], _ = exchange(server, raw, ["HEAD"])
    assert status == 412 and headers["tus-version"] == "1.0.0"
    [(status, _, _)], _ = exchange(server, http_request("DELETE", location, **TUS), ["DELETE"])
    assert status == 204 and offset_of(server, location) is None
    assert visible_files(server.root) == [] and temp_files(server.root) == []


def test_a_declared_sha256_is_checked_at_the_end(server):
    location = create(server, "s.bin", 4, sha256=hashlib.sha256(b"good").hexdigest())
    status, _, body = patch(server, location, 0, b"evil")
    # 400, not tus's 460: 460 asks for the piece again, and the upload is gone
    assert status == 400 and b"SHA-256" in body
    assert visible_files(server.root) == [] and offset_of(server, location) is None


def test_the_server_says_what_it_speaks(server):
    [(status, headers, _)], _ = exchange(server, http_request("OPTIONS", "/.tus/"), ["OPTIONS"])
    assert status == 204 and headers["tus-version"] == "1.0.0"
    assert set(headers["tus-extension"].split(",")) == {
        "creation", "termination", "checksum", "expiration"}
    assert "sha256" in headers["tus-checksum-algorithm"]


def test_tus_keeps_the_rights_and_the_name_rules(make_server):
    reader = make_server(tokens={"r": frozenset({"read"})})
    raw = http_request("POST", "/.tus/", Upload_Length="3", Upload_Metadata=meta(
        filename="x.bin"), Authorization="Bearer r", **TUS)
    assert exchange(reader, raw, ["POST"])[0][0][0] == 403
    server = make_server()
    raw = http_request("POST", "/.tus/", Upload_Length="3",
                       Upload_Metadata=meta(filename="../escape.bin"), **TUS)
    assert exchange(server, raw, ["POST"])[0][0][0] == 400
    (server.root / "taken.bin").write_bytes(b"old")
    raw = http_request("POST", "/.tus/", Upload_Length="3",
                       Upload_Metadata=meta(filename="taken.bin"), **TUS)
    assert exchange(server, raw, ["POST"])[0][0][0] == 409


def test_a_native_put_of_the_same_file_supersedes_a_tus_upload_of_it(server, tmp_path):
    from muxserver import cli

    data = os.urandom(3 * 1024 * 1024)
    location = create(server, "shared.bin", len(data), sha256=hashlib.sha256(data).hexdigest())
    assert patch(server, location, 0, data[:1_000_000])[0] == 204
    (tmp_path / "shared.bin").write_bytes(data)
    assert cli.main(["put", str(tmp_path / "shared.bin"), "-q", "--port", str(server.port)]) == 0
    assert (server.root / "shared.bin").read_bytes() == data
    assert temp_files(server.root) == []  # the tus upload's bytes went with it
    assert offset_of(server, location) is None


TUSPY_UPLOAD = textwrap.dedent("""
    import sys
    from tusclient import client
    from tusclient.storage import filestorage
    url, path, store = sys.argv[1:4]
    uploader = client.TusClient(url).uploader(
        path, chunk_size=8 * 1024 * 1024, metadata={"filename": "big/tus.bin"},
        store_url=True, url_storage=filestorage.FileStorage(store), upload_checksum=True)
    print("from", uploader.offset, flush=True)
    uploader.upload()
    print("done", uploader.offset, flush=True)
""")


def test_tuspy_killed_half_way_is_resumed_by_another_process(root, tmp_path):
    big = tmp_path / "tus.bin"
    with open(big, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1024 * 1024))
    srv = spawn_server(root, "--recv-size", "65536", "--reads-per-event", "1")
    url = f"http://{srv.host}:{srv.port}/.tus/"
    store = tmp_path / "tus-urls.json"
    argv = [sys.executable, "-c", TUSPY_UPLOAD, url, str(big), str(store)]
    try:
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            held = wait_for_half(root, 100 * 1024 * 1024)
            assert not (root / "big" / "tus.bin").exists()  # never visible before the end
        finally:
            first.kill()
            first.wait(timeout=20)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=100)
        assert second.returncode == 0, second.stderr
        resumed_from = int(second.stdout.split()[1])
        assert resumed_from > 0 and resumed_from <= held + 8 * 1024 * 1024
        assert "done 209715200" in second.stdout
    finally:
        stop_process(srv.proc)
    assert hashlib.sha256((root / "big" / "tus.bin").read_bytes()).digest() == hashlib.sha256(
        big.read_bytes()).digest()
    assert temp_files(root) == []


def wait_for_half(root, at_least: int, timeout: float = 60.0) -> int:
    """Until the server holds ``at_least`` bytes of the upload (its temporary or
    partial file grows): the moment to kill the client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in root.rglob(".muxserver-*"):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size >= at_least:
                return size
        time.sleep(0.01)
    raise AssertionError("the upload never got half-way")
