"""Durability and resume: interrupted transfers, kill -9 of either side, partial files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from muxserver import protocol
from muxserver.client import Client, ClientError, GetFile, Partial, PutFile
from muxserver.digests import BLAKE3, SHA256, Digest
from muxserver.limits import Limits
from muxserver.storage import native_identity, partial_key

from .conftest import (FrameReader, Valve, run_cli, sha256, spawn_server, stop_process,
                       temp_files, visible_files)

pytestmark = pytest.mark.timeout(90)

DATA = bytes(range(256)) * 4096 * 3  # 3 MiB


def interrupted_upload(server, name: str, data: bytes, sent: int, *, resumable: bool,
                       log_watcher, mtime: float | None = None) -> None:
    """Start a put, send ``sent`` body bytes, and vanish; wait until the server noticed.
    The put declares the SHA-256 of ``data``; or, given the source's ``mtime``, it is
    what the client sends for a file it has not hashed yet: its digest to follow the
    body (a trailer), the mtime naming it meanwhile."""
    if mtime is None:
        header = protocol.encode_put(1, name, len(data), sha256(data), resumable=resumable)
    else:
        header = protocol.encode_put(1, name, len(data), None, trailer=BLAKE3, mtime=mtime,
                                     resumable=resumable)
    with server.connect() as sock:
        sock.sendall(header + data[:sent])
    log_watcher.wait_for("reset")
    log_watcher.wait_for("closed")


def partial_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".muxserver-part-*")]


def test_an_interrupted_resumable_upload_is_kept_hidden_and_resumed(server, tmp_path,
                                                                     log_watcher):
    interrupted_upload(server, "dir/big.bin", DATA, 1_000_000, resumable=True,
                       log_watcher=log_watcher)
    assert visible_files(server.root) == [f"dir/{partial_files(server.root)[0]}"]
    (tmp_path / "big.bin").write_bytes(DATA)
    with server.client() as client:
        assert [e["name"] for e in client.list("", recursive=True)] == ["dir"]  # hidden
        query = client.run([Partial("dir/big.bin", sha256(DATA), len(DATA))])[0]
        assert query.ok and query.info["offset"] == 1_000_000
        put = PutFile(tmp_path / "big.bin", "dir/big.bin", offset=1_000_000,
                      digest=Digest(SHA256, sha256(DATA)))
        assert client.run([put])[0].ok
        assert put.done_bytes == len(DATA) - 1_000_000  # only the rest travelled
    assert (server.root / "dir" / "big.bin").read_bytes() == DATA
    assert partial_files(server.root) == [] and temp_files(server.root) == []


@pytest.mark.parametrize("same_content", [True, False])
def test_storing_a_name_removes_the_partials_held_for_it(server, tmp_path, log_watcher,
                                                         same_content):
    interrupted_upload(server, "dir/big.bin", DATA, 1_000_000, resumable=True,
                       log_watcher=log_watcher)
    assert len(partial_files(server.root)) == 1
    data = DATA if same_content else b"another version"
    (tmp_path / "f").write_bytes(data)
    with server.client() as client:  # a plain put, from byte 0
        assert client.run([PutFile(tmp_path / "f", "dir/big.bin")])[0].ok
    assert (server.root / "dir" / "big.bin").read_bytes() == data
    assert partial_files(server.root) == [] and temp_files(server.root) == []


def test_a_plain_interrupted_upload_leaves_nothing(server, log_watcher):
    interrupted_upload(server, "dir/plain.bin", DATA, 500_000, resumable=False,
                       log_watcher=log_watcher)
    assert visible_files(server.root) == []
    assert not (server.root / "dir").exists()  # the directory it made is gone too


def test_a_resume_offset_must_match_exactly(server, tmp_path, log_watcher):
    interrupted_upload(server, "m.bin", DATA, 700_000, resumable=True, log_watcher=log_watcher)
    (tmp_path / "m.bin").write_bytes(DATA)
    with server.client() as client:
        for wrong in (699_999, 700_001):
            result = client.run([PutFile(tmp_path / "m.bin", "m.bin", offset=wrong,
                                         digest=Digest(SHA256, sha256(DATA)))])[0]
            assert result.code == "offset_mismatch" and "holds 700000 bytes" in result.message
        other = DATA[:-1] + b"!"  # another file of the same size: no partial of it
        assert client.run([Partial("m.bin", sha256(other), len(other))])[0].info["offset"] == 0
        assert client.run([PutFile(tmp_path / "m.bin", "m.bin", offset=700_000,
                                   digest=Digest(SHA256, sha256(DATA)))])[0].ok
    assert (server.root / "m.bin").read_bytes() == DATA


def test_a_resumed_upload_with_the_wrong_bytes_stores_nothing(server, tmp_path, log_watcher):
    interrupted_upload(server, "w.bin", DATA, 400_000, resumable=True, log_watcher=log_watcher)
    with server.connect() as sock:
        rest = b"\0" * (len(DATA) - 400_000)  # not what the declared hash promises
        sock.sendall(protocol.encode_put(2, "w.bin", len(rest), sha256(DATA), offset=400_000)
                     + rest)
        assert FrameReader(sock).frame()[0]["error"] == "checksum_mismatch"
    assert visible_files(server.root) == []  # and the bad partial is not kept either


def test_get_resume_continues_a_part_file(server, tmp_path):
    (server.root / "g.bin").write_bytes(DATA)
    dest = tmp_path / "g.bin"
    Path(str(dest) + ".part").write_bytes(DATA[:1_234_567])
    with server.client() as client:
        op = GetFile("g.bin", dest, resume=True)
        assert client.run([op])[0].ok
        assert op.done_bytes == len(DATA) - 1_234_567
    assert dest.read_bytes() == DATA and not Path(str(dest) + ".part").exists()


def test_get_resume_of_a_changed_file_fails_and_discards_the_part(server, tmp_path):
    (server.root / "c.bin").write_bytes(DATA)
    dest = tmp_path / "c.bin"
    Path(str(dest) + ".part").write_bytes(b"x" * 1000)  # not the file's first bytes
    with server.client() as client:
        result = client.run([GetFile("c.bin", dest, resume=True)])[0]
    assert result.code == "checksum_mismatch" and "changed since" in result.message
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_get_resume_beyond_the_end_is_refused(server, tmp_path):
    (server.root / "s.bin").write_bytes(b"short")
    dest = tmp_path / "s.bin"
    Path(str(dest) + ".part").write_bytes(b"much longer than the file")
    with server.client() as client:
        result = client.run([GetFile("s.bin", dest, resume=True)])[0]
    assert result.code == "offset_mismatch"


# -------------------------------------------------- real processes, real kill -9


#: Where a transfer through a Valve stops: far from its end, and past what a test waits for.
CUT = 2 * 1024 * 1024
#: ``python -m muxserver`` as a terminal starts it: Ctrl-C raises KeyboardInterrupt. A
#: script run in the background ignores SIGINT, its children inherit that, and Python
#: then leaves it ignored (CI may run the tests so).
MUXSERVER_WITH_CTRL_C = [
    sys.executable, "-c", "import runpy, signal, sys; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'muxserver'; runpy.run_module('muxserver', run_name='__main__')"]


def wait_for_growth(path_glob, root: Path, at_least: int, timeout: float = 20.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in root.rglob(path_glob):
            try:
                if path.stat().st_size >= at_least:
                    return path
            except FileNotFoundError:
                continue
        time.sleep(0.005)
    raise AssertionError(f"nothing matching {path_glob} grew to {at_least} bytes")


def test_kill_9_of_a_client_mid_upload_then_put_resume(root, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    srv = spawn_server(root)
    try:
        ports = ["--port", str(srv.port)]
        with Valve(srv.port, up=CUT) as valve:  # the upload stops there, whatever the speed
            client = subprocess.Popen([sys.executable, "-m", "muxserver", "put", str(big),
                                       "--port", str(valve.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_growth(".muxserver-tmp-*", root, CUT // 2)
            client.kill()
            client.wait(timeout=10)
        assert not (root / "big.bin").exists()
        with Client(srv.host, srv.port) as probe:  # the server noticed, kept a partial
            for _ in range(200):
                if partial_files(root):
                    break
                probe.list()  # a round trip: lets the server process the reset
            assert probe.list() == []
        assert len(partial_files(root)) == 1
        result = run_cli("put", str(big), "--resume", *ports)
        assert result.returncode == 0, result.stderr
        assert (root / "big.bin").read_bytes() == big.read_bytes()
        assert partial_files(root) == [] and temp_files(root) == []
    finally:
        stop_process(srv.proc)


def test_kill_9_of_the_server_mid_upload_then_restart_and_resume(root, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    (root / "big.bin").write_bytes(b"previous version")
    srv = spawn_server(root, "--allow-overwrite")
    try:
        with Valve(srv.port, up=CUT) as valve:
            client = subprocess.Popen([sys.executable, "-m", "muxserver", "put", str(big),
                                       "--overwrite", "--port", str(valve.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wait_for_growth(".muxserver-tmp-*", root, CUT // 2)
            srv.proc.kill()  # kill -9: no cleanup at all
            srv.proc.wait(timeout=10)
            client.wait(timeout=30)
        assert client.returncode == 1
    finally:
        stop_process(srv.proc)
    assert (root / "big.bin").read_bytes() == b"previous version"  # never a partial file
    restarted = spawn_server(root, "--allow-overwrite")
    try:
        assert temp_files(root) == partial_files(root)  # temp became a resumable partial
        assert len(partial_files(root)) == 1
        with Client(restarted.host, restarted.port) as client:
            assert [e["name"] for e in client.list()] == ["big.bin"]
        result = run_cli("put", str(big), "--resume", "--overwrite", "--port",
                         str(restarted.port))
        assert result.returncode == 0, result.stderr
        assert (root / "big.bin").read_bytes() == big.read_bytes()
    finally:
        stop_process(restarted.proc)
    _out, err = restarted.output()
    assert "kept 1 resumable upload" in err


def test_kill_9_of_a_client_mid_download_then_get_resume(root, tmp_path):
    data = os.urandom(24 * 1024 * 1024)
    (root / "dl.bin").write_bytes(data)
    srv = spawn_server(root)
    out = tmp_path / "out"
    out.mkdir()
    try:
        ports = ["--port", str(srv.port)]
        with Valve(srv.port, down=CUT) as valve:
            client = subprocess.Popen([sys.executable, "-m", "muxserver", "get", "dl.bin",
                                       "-o", str(out), "--port", str(valve.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            part = wait_for_growth("dl.bin.part", out, CUT // 2)
            client.kill()
            client.wait(timeout=10)
        assert part.exists() and not (out / "dl.bin").exists()
        result = run_cli("get", "dl.bin", "-o", str(out), "--resume", *ports)
        assert result.returncode == 0, result.stderr
        assert (out / "dl.bin").read_bytes() == data and not part.exists()
    finally:
        stop_process(srv.proc)


def test_ctrl_c_of_a_download_keeps_the_part_file_and_says_so(root, tmp_path):
    (root / "dl.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    srv = spawn_server(root)
    out = tmp_path / "out"
    out.mkdir()
    try:
        with Valve(srv.port, down=CUT) as valve:
            client = subprocess.Popen([*MUXSERVER_WITH_CTRL_C, "get", "dl.bin", "-o", str(out),
                                       "--port", str(valve.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
            wait_for_growth("dl.bin.part", out, CUT // 2)
            client.send_signal(signal.SIGINT)
            _out, err = client.communicate(timeout=20)
        assert client.returncode == 130
        assert "Traceback" not in err and "--resume" in err
        assert (out / "dl.bin.part").stat().st_size > 0
    finally:
        stop_process(srv.proc)


def test_stale_partials_expire_at_start(root):
    old = root / ".muxserver-part-0123-abcd-10"
    old.write_bytes(b"0123456789")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    fresh = root / ".muxserver-part-4567-abcd-10"
    fresh.write_bytes(b"01234")
    srv = spawn_server(root)
    stop_process(srv.proc)
    assert partial_files(root) == [fresh.name]


def test_listing_never_shows_temporary_or_partial_files(server, log_watcher):
    interrupted_upload(server, "hidden.bin", DATA, 100_000, resumable=True,
                       log_watcher=log_watcher)
    with server.connect() as sock:  # an upload in progress has a temporary file
        sock.sendall(protocol.encode_put(1, "inflight.bin", 10_000, "0" * 64) + b"i" * 10)
        with server.client() as client:
            for _ in range(100):
                if temp_files(server.root) and len(temp_files(server.root)) == 2:
                    break
                client.list()
            assert len(temp_files(server.root)) == 2
            assert client.list("", recursive=True) == []
            with pytest.raises(ClientError):
                client.stat(partial_files(server.root)[0])


def test_a_partial_file_expires_while_the_server_runs(make_server, log_watcher):
    server = make_server(limits=Limits(partial_ttl=2.0))
    interrupted_upload(server, "dir/late.bin", DATA, 200_000, resumable=True,
                       log_watcher=log_watcher)
    assert len(partial_files(server.root)) == 1  # kept, for now
    log_watcher.wait_for("expired")
    assert partial_files(server.root) == []
    with server.client() as client:  # a resume now starts from the beginning
        query = client.run([Partial("dir/late.bin", sha256(DATA), len(DATA))])[0]
        assert query.ok and query.info["offset"] == 0


def test_partials_found_at_start_expire_later_unless_resumed(root, make_server, log_watcher,
                                                             tmp_path):
    data = b"0123456789" * 1000
    key = partial_key("keep.bin", b"", native_identity(Digest(SHA256, sha256(data)), None),
                      len(data))
    (root / f".muxserver-part-{key}").write_bytes(data[:4000])
    (root / ".muxserver-part-0123-abcd-10").write_bytes(b"01234")  # nobody comes back
    server = make_server(limits=Limits(partial_ttl=3.0))
    (tmp_path / "keep.bin").write_bytes(data)
    with server.client() as client:  # resumed before it expires: it is not lost
        assert client.run([PutFile(tmp_path / "keep.bin", "keep.bin", offset=4000,
                                   digest=Digest(SHA256, sha256(data)))])[0].ok
    log_watcher.wait_for("expired")
    assert partial_files(root) == []
    assert (root / "keep.bin").read_bytes() == data


def test_a_plain_put_finds_what_the_server_kept_and_says_so(server, tmp_path, log_watcher,
                                                            capsys):
    from muxserver import cli

    (tmp_path / "big.bin").write_bytes(DATA)  # never hashed here: sent with a trailer
    interrupted_upload(server, "big.bin", DATA, 1_000_000, resumable=True,
                       log_watcher=log_watcher, mtime=(tmp_path / "big.bin").stat().st_mtime)
    status = cli.main(["put", str(tmp_path / "big.bin"), "--port", str(server.port)])
    assert status == 0
    err = capsys.readouterr().err
    assert "big.bin: resuming: 976.6 KiB of it are on the server already" in err
    resumed = log_watcher.wait_for("resumed")
    assert "resumed big.bin at 976.6 KiB" in resumed[0].getMessage()
    assert (server.root / "big.bin").read_bytes() == DATA
    assert partial_files(server.root) == []
