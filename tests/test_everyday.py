"""Everyday defects a new user met in the first ten minutes, each pinned by a test."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_cli, spawn_server, stop_process
from .session_harness import harnesses

pytestmark = pytest.mark.timeout(120)


def test_a_chunked_put_says_how_many_bytes_it_stored(tmp_path, caplog):
    root = tmp_path / "root"
    root.mkdir()
    with harnesses("http", root) as make:
        h = make()
        with caplog.at_level(logging.INFO, logger="muxserver"):
            h.send(h.wire.request("PUT", "/x", {"Transfer-Encoding": "chunked"},
                                  b"3\r\nhi\n\r\n0\r\n\r\n"))
        reply = h.replies()[-1]
    assert reply.status == 201 and b"stored x (3 bytes" in reply.body
    assert (root / "x").read_bytes() == b"hi\n"
    assert any("put x: 3 bytes" in r.getMessage() for r in caplog.records)


def test_put_as_a_new_name_logs_no_refusal(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "f.txt").write_text("data")
    server = spawn_server(root)
    try:
        put = run_cli("put", str(tmp_path / "f.txt"), "--as", "newname.txt", "--port",
                      str(server.port))
        assert put.returncode == 0
        server.wait_for_stderr(r"put newname.txt: 4 bytes")
    finally:
        stop_process(server.proc)
    _, err = server.output()
    assert "refused" not in err


def test_put_r_and_get_r_keep_empty_folders(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    tree = tmp_path / "d"
    (tree / "empty" / "deeper").mkdir(parents=True)
    (tree / "full").mkdir()
    (tree / "full" / "a.txt").write_text("a")
    server = spawn_server(root)
    try:
        put = run_cli("put", "-r", str(tree), "--port", str(server.port))
        assert put.returncode == 0, put.stderr
        assert (root / "d" / "empty" / "deeper").is_dir()
        out = tmp_path / "out"
        out.mkdir()
        got = run_cli("get", "-r", "d", "-o", str(out), "--port", str(server.port))
        assert got.returncode == 0, got.stderr
        assert (out / "d" / "empty" / "deeper").is_dir()
        assert (out / "d" / "full" / "a.txt").read_text() == "a"
    finally:
        stop_process(server.proc)


def test_a_mistyped_root_makes_no_tree_and_a_failed_start_leaves_nothing(tmp_path):
    typo = tmp_path / "no-such" / "deeper" / "shared"
    bad = run_cli("serve", "--root", str(typo), "--port", "0", "--no-console")
    assert bad.returncode == 2 and "no directory" in bad.stderr
    assert not (tmp_path / "no-such").exists()
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fresh = tmp_path / "fresh"
        busy = run_cli("serve", "--root", str(fresh), "--port",
                       str(taken.getsockname()[1]), "--no-console")
    assert busy.returncode == 1 and not fresh.exists()


@pytest.mark.parametrize("kind", ["native", "http"])
def test_a_drop_box_upload_is_logged_under_the_name_it_was_stored_as(tmp_path, caplog, kind):
    from muxserver.access import Ceiling

    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("first")
    with harnesses(kind, root) as make:
        h = make(ceiling=Ceiling(upload_only=True))
        with caplog.at_level(logging.INFO, logger="muxserver"):
            h.send(h.wire.put("notes.txt", b"second"))
        assert h.replies()[-1].ok
    assert (root / "notes (2).txt").read_bytes() == b"second"
    said = [r.getMessage() for r in caplog.records if "put " in r.getMessage()]
    assert any("put notes (2).txt: 6 bytes" in line for line in said), said


def test_a_server_that_stops_mid_upload_is_not_said_to_want_tls(tmp_path):
    import socket
    import threading

    from muxserver.client import Client, PutFile

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    listener = socket.create_server(("127.0.0.1", 0))
    taken = threading.Event()

    def take_some_then_hang_up() -> None:  # (a server stopped in the middle of a body)
        conn, _ = listener.accept()
        got = 0
        while got < 4 * 1024 * 1024:  # (the whole body: the client waits for a reply)
            data = conn.recv(65536)
            if not data:
                break
            got += len(data)
        taken.set()
        conn.close()

    thread = threading.Thread(target=take_some_then_hang_up, daemon=True)
    thread.start()
    try:
        with Client("127.0.0.1", listener.getsockname()[1], timeout=30) as client:
            result = client.run([PutFile(str(big), "big.bin")])[0]
        assert not result.ok and taken.is_set()
        assert "--tls" not in result.message
    finally:
        listener.close()
        thread.join(timeout=10)


def test_ls_of_a_file_get_o_a_file_and_a_bracketed_host(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "x.txt").write_text("x")
    server = spawn_server(root)
    try:
        port = str(server.port)
        ls = run_cli("ls", "x.txt", "--port", port)
        assert ls.returncode == 0 and "x.txt" in ls.stdout, ls.stderr
        (tmp_path / "f.txt").write_text("mine")
        get = run_cli("get", "x.txt", "-o", str(tmp_path / "f.txt"), "--port", port)
        assert get.returncode == 2 and "is a file" in get.stderr
        bracketed = run_cli("ls", "--host", "[127.0.0.1]", "--port", port)
        assert bracketed.returncode == 0 and "x.txt" in bracketed.stdout
    finally:
        stop_process(server.proc)


def test_a_certificate_without_its_key_is_a_usage_error_and_every_command_says_what_it_is():
    half = run_cli("serve", "--tls-cert", "cert.pem", "--port", "0")
    assert half.returncode == 2 and "--tls-key" in half.stderr
    for command in ("ls", "stat", "mkdir", "put", "get", "rm", "mv", "share"):
        shown = run_cli(command, "--help")
        described = shown.stdout.split("positional arguments:")[0].split("\n\n")[1]
        assert described.strip() and not described.startswith("positional"), command
        positionals = shown.stdout.split("positional arguments:")[1].split("options:")[0]
        for line in positionals.strip().splitlines():
            if line.startswith("  ") and not line.startswith("    "):
                assert len(line.split()) > 1, (command, line)  # (a name and its help)


class Uploader:
    def finish_upload(self):
        return lambda: (lambda: None)


def test_a_refused_mkdir_says_mkdir_and_the_stop_summary_names_methods(tmp_path,
                                                                        monkeypatch):
    import errno

    from muxserver.loop import callback_name
    from muxserver.storage import Root, StorageError

    root = Root(tmp_path)
    real_mkdir = os.mkdir

    def refused(path, *args, **kwargs):
        if path == "d":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refused)
    try:
        with pytest.raises(StorageError) as said:
            root.make_dir("d", parents=False)
        assert said.value.message == "cannot make the directory 'd': Permission denied"
    finally:
        root.close()
    assert callback_name(Uploader().finish_upload()()) == "Uploader.finish_upload"


def test_the_readme_says_what_the_tool_does():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    synopsis = readme[readme.index("## Commands"):readme.index("## From a browser")]
    for flag in ("--sync", "--workers", "muxserver token", "muxserver share",
                 "muxserver user"):
        assert flag in synopsis, flag
    assert "checked end to end with SHA-256" not in readme  # (the output says blake3)
    assert "pipx install ." in readme
    assert "python3 -m zipfile -e" in readme  # (a folder's zip without bsdtar)


def test_serve_help_shows_the_options_people_use_and_points_at_the_limits():
    short = run_cli("serve", "--help")
    assert short.returncode == 0 and len(short.stdout.splitlines()) < 80
    assert "--max-header-size" not in short.stdout and "--help-limits" in short.stdout
    full = run_cli("serve", "--help-limits")
    assert full.returncode == 0 and "--max-header-size" in full.stdout


def tus_with_time(root: Path, mtime: bytes) -> list:
    """A 2-byte tus upload of old.txt whose metadata says ``mtime``: the answers to its
    creation and (if made) its one piece."""
    import base64
    import urllib.parse

    meta = ("filename " + base64.b64encode(b"old.txt").decode() + ",mtime "
            + base64.b64encode(mtime).decode())
    with harnesses("http", root) as make:
        h = make()
        h.send(h.wire.request("POST", "/.tus/", {"Tus-Resumable": "1.0.0",
                                                 "Upload-Length": "2", "Upload-Metadata": meta}))
        if h.replies()[-1].status != 201:
            return h.replies()
        location = urllib.parse.urlsplit(h.replies()[-1].headers["location"]).path
        h.send(h.wire.request("PATCH", location, {
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": "2",
            "Content-Type": "application/offset+octet-stream"}, b"ok"))
        return h.replies()


def test_a_tus_upload_keeps_the_files_time(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert tus_with_time(root, b"1234567890.5")[-1].status == 204
    assert (root / "old.txt").stat().st_mtime == pytest.approx(1234567890.5)
    assert tus_with_time(tmp_path, b"soon")[-1].status == 400


@pytest.mark.parametrize("kind", ["http"])
def test_a_search_by_name_finds_matches_below_the_folder_in_bounded_steps(tmp_path, kind):
    import json

    from muxserver.access import Ceiling

    root = tmp_path / "root"
    (root / "photos" / "2024" / "deep").mkdir(parents=True)
    (root / "photos" / "2024" / "deep" / "Holiday-beach.JPG").write_text("x")
    (root / "photos" / "holiday.txt").write_text("y")
    (root / "photos" / "other.txt").write_text("z")
    (root / "elsewhere-holiday.txt").write_text("not below photos")
    for i in range(1200):  # (more than a step's worth of entries met)
        (root / "photos" / "2024" / f"noise{i}.bin").write_bytes(b"")
    with harnesses(kind, root) as make:
        h = make(ceiling=Ceiling())
        h.send(h.wire.request("GET", "/photos/?search=HOLIDAY&format=json"))
        found = json.loads(h.replies()[-1].body)
        assert sorted(e["name"] for e in found["entries"]) == [
            "photos/2024/deep/Holiday-beach.JPG", "photos/holiday.txt"]
        assert h.session.work.state.value == "idle"


def test_a_folder_says_how_many_entries_it_holds(tmp_path):
    import json

    from muxserver import http_folders

    root = tmp_path / "root"
    (root / "many").mkdir(parents=True)
    for i in range(30):
        (root / "many" / f"f{i}").write_bytes(b"")
    (root / "many" / ".muxserver-tmp-x").write_bytes(b"")  # (ours: not counted)
    with harnesses("http", root) as make:
        h = make()
        h.send(h.wire.request("GET", "/many/?count"))
        assert json.loads(h.replies()[-1].body) == {"count": 30, "more": False}
        old = http_folders.COUNT_UP_TO
        http_folders.COUNT_UP_TO = 10
        try:
            h.send(h.wire.request("GET", "/many/?count"))
            assert json.loads(h.replies()[-1].body) == {"count": 10, "more": True}
        finally:
            http_folders.COUNT_UP_TO = old
        h.send(h.wire.request("GET", "/nowhere/?count"))
        assert h.replies()[-1].status == 404


def test_a_file_dated_before_1970_is_stored_without_its_time(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    created, stored = tus_with_time(root, b"-86400")
    assert created.status == 201 and stored.status == 204
    assert (root / "old.txt").read_bytes() == b"ok"


def test_the_html_page_ignores_search_and_json_finds(tmp_path):
    root = tmp_path / "root"
    (root / "docs" / "2023").mkdir(parents=True)
    (root / "docs" / "2023" / "report.txt").write_text("r")
    with harnesses("http", root) as make:
        h = make()
        h.send(h.wire.request("GET", "/docs/?search=report", {"Accept": "text/html"}))
        page = h.replies()[-1].body
        assert b'data-name="2023"' in page and b'data-name="report.txt"' not in page
