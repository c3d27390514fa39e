"""Folder downloads: zip and tar streams built as they go (archive.py, http.py)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import zipfile
import zlib

import pytest

from muxserver.archive import ZIP32_MAX, TarStream, ZipStream

from .test_http_security import exchange, http_request

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def folder(server):
    photos = server.root / "photos"
    (photos / "2024" / "empty").mkdir(parents=True)
    (photos / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (photos / "2024" / "été.txt").write_text("summer\n")
    (photos / "link").symlink_to("big.bin")  # never followed, never archived
    (server.root / "outside.txt").write_text("not in photos")
    return photos


def download(server, target: str) -> tuple[int, dict, bytes]:
    [(status, headers, body)], _ = exchange(server, http_request("GET", target), ["GET"])
    return status, headers, body


def test_a_folder_as_a_zip_holds_every_file_and_verifies(server, folder):
    status, headers, body = download(server, "/photos/?download=zip")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert headers["transfer-encoding"] == "chunked"  # built as it goes, no length known
    assert "photos.zip" in headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    # (named below the folder's own name: unpacking it makes that folder)
    assert sorted(archive.namelist()) == ["photos/", "photos/2024/", "photos/2024/empty/",
                                          "photos/2024/été.txt", "photos/big.bin"]
    assert archive.read("photos/big.bin") == (folder / "big.bin").read_bytes()
    assert archive.read("photos/2024/été.txt") == b"summer\n"


def test_a_folder_as_a_tar_holds_every_file(server, folder):
    status, headers, body = download(server, "/photos/?download=tar")
    assert status == 200 and headers["content-type"] == "application/x-tar"
    archive = tarfile.open(fileobj=io.BytesIO(body))
    members = {m.name: m for m in archive.getmembers()}
    assert set(members) == {"photos", "photos/2024", "photos/2024/empty",
                            "photos/2024/été.txt", "photos/big.bin"}
    assert members["photos"].isdir()
    assert archive.extractfile("photos/big.bin").read() == (folder / "big.bin").read_bytes()


def test_the_whole_root_and_the_refusals(make_server, folder, server):
    status, _, body = download(server, "/?download=tar")
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    top = server.root.name  # (the root's own folder name)
    assert f"{top}/outside.txt" in names and f"{top}/photos/big.bin" in names
    assert download(server, "/nope/?download=zip")[0] == 404
    [(status, headers, body)], _ = exchange(server, http_request("HEAD", "/photos/?download=zip"),
                                            ["HEAD"])
    assert status == 200 and body == b"" and headers["content-type"] == "application/zip"
    dropbox = make_server(root_dir=server.root, upload_only=True)
    assert download(dropbox, "/photos/?download=zip")[0] == 403


@pytest.mark.skipif(shutil.which("bsdtar") is None or shutil.which("curl") is None,
                    reason="needs bsdtar (libarchive-tools) and curl")
def test_bsdtar_reads_the_zip_as_a_stream(server, folder, tmp_path):
    url = f"http://{server.host}:{server.port}/photos/?download=zip"
    curl = subprocess.Popen(["curl", "-sS", "--fail", url], stdout=subprocess.PIPE)
    try:
        extracted = subprocess.run(["bsdtar", "-xf", "-", "-C", str(tmp_path)],
                                   stdin=curl.stdout, capture_output=True, timeout=60)
    finally:
        curl.stdout.close()
        curl.wait(timeout=30)
    assert extracted.returncode == 0, extracted.stderr
    assert (tmp_path / "photos" / "big.bin").read_bytes() == (folder / "big.bin").read_bytes()


def test_zip64_records_for_members_and_offsets_past_4_gib(tmp_path):
    """A sparse file stands for a 5 GiB member: zipfile must find the member after it
    through the ZIP64 offset, and read it back with its CRC checked."""
    big, small = 5 * 1024 ** 3, b"after the big one\n"
    writer = ZipStream()
    path = tmp_path / "big.zip"
    with open(path, "wb") as f:
        f.write(writer.member_start("huge.bin", 1_700_000_000))
        f.seek(big, os.SEEK_CUR)  # the member's data: a hole of zeros
        f.write(writer.member_end(zlib.crc32(b""), big, big))  # (its CRC is not read here)
        f.write(writer.member_start("small.txt", 1_700_000_000))
        f.write(small)
        f.write(writer.member_end(zlib.crc32(small), len(small), len(small)))
        f.write(writer.finish())
    archive = zipfile.ZipFile(path)
    huge, after = archive.infolist()
    assert huge.file_size == big and after.header_offset > ZIP32_MAX
    assert archive.read("small.txt") == small


def test_a_tar_header_promises_a_size_and_pads_to_blocks():
    writer = TarStream()
    header = writer.member_start("a" * 300, 0, size=10)  # a long name: a pax header
    assert len(header) % 512 == 0 and len(writer.padding(10)) == 502
    assert len(writer.finish()) == 1024


# ------------------------------------------------- listings and digests for programs


def test_a_listing_as_json_and_as_text(server, folder):
    import json

    status, headers, body = download(server, "/photos/?format=json")
    listing = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert listing["path"] == "photos"
    assert sorted(e["name"] for e in listing["entries"]) == [
        "photos/2024", "photos/big.bin", "photos/link"]
    raw = http_request("GET", "/photos/", Accept="text/plain")
    [(status, headers, body)], _ = exchange(server, raw, ["GET"])
    lines = body.decode().splitlines()
    assert headers["content-type"].startswith("text/plain") and len(lines) == 3
    assert any(line.endswith("photos/2024/") for line in lines)
    assert any("3.0 MiB" in line and line.endswith("photos/big.bin") for line in lines)


def test_downloads_carry_rfc9530_digests_and_uploads_may_declare_them(server, folder):
    import base64
    import hashlib

    data = (folder / "big.bin").read_bytes()
    expected = f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"
    status, headers, _ = download(server, "/photos/big.bin")
    assert headers["repr-digest"] == expected and headers["content-digest"] == expected
    raw = http_request("GET", "/photos/big.bin", Range="bytes=0-9")
    [(status, headers, _)], _ = exchange(server, raw, ["GET"])
    assert status == 206 and headers["repr-digest"] == expected
    assert "content-digest" not in headers  # (a part's content is not the whole)
    good = base64.b64encode(hashlib.sha256(b"declared").digest()).decode()
    raw = http_request("PUT", "/d.txt", Content_Length="8",
                       Content_Digest=f"sha-256=:{good}:") + b"declared"
    assert exchange(server, raw, ["PUT"])[0][0][0] == 201
    raw = http_request("PUT", "/e.txt", Content_Length="8",
                       Content_Digest=f"sha-256=:{good}:") + b"tampered"
    assert exchange(server, raw, ["PUT"])[0][0][0] == 400
