"""Acceptance under load: many client processes, and a 1 GiB round trip with bounded RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3
import pytest

from muxserver.client import Client

from .conftest import spawn_server, stop_process, temp_files

GiB = 1 << 30


@pytest.mark.timeout(300)
def test_100_client_processes_each_putting_10_files(tmp_path, root):
    srv = spawn_server(root)
    try:
        sources = []
        for n in range(100):
            src = tmp_path / f"client{n:03}"
            src.mkdir()
            for j in range(10):
                (src / f"file{j}.bin").write_bytes(os.urandom(1000 + 997 * j + n))
            sources.append(src)
        procs = [subprocess.Popen([sys.executable, "-m", "muxserver", "put", "-r", str(src),
                                   "--port", str(srv.port), "-q"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for src in sources]
        failures = []
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            if proc.returncode != 0:
                failures.append(err.decode())
        assert failures == []
        assert srv.proc.poll() is None, "the server exited"
        for src in sources:
            for j in range(10):
                stored = root / src.name / f"file{j}.bin"
                assert stored.read_bytes() == (src / f"file{j}.bin").read_bytes()
        assert temp_files(root) == []
    finally:
        stop_process(srv.proc)


def _big_scratch() -> Path | None:
    """A place for 3 GiB of files: /dev/shm (RAM) if it has room, else skip."""
    for candidate in ("/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(candidate) and shutil.disk_usage(candidate).free > 3.5 * GiB:
            return Path(candidate)
    return None


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.timeout(300)
def test_1_gib_put_then_get_is_identical_and_server_rss_stays_small():
    scratch = _big_scratch()
    if scratch is None:
        pytest.skip("no file system with 3.5 GiB free for the 1 GiB round trip")
    work = Path(tempfile.mkdtemp(prefix="muxserver-gib-", dir=scratch))
    try:
        root = work / "root"
        root.mkdir()
        src = work / "one.gib"
        block = os.urandom(1 << 20)
        expected = blake3.blake3()
        with open(src, "wb") as f:
            for i in range(1024):
                chunk = block[i:] + block[:i]
                f.write(chunk)
                expected.update(chunk)
        srv = spawn_server(root)
        try:
            with Client(srv.host, srv.port) as client:
                put = client.put_file(src, "one.gib")
                got = client.get_file("one.gib", work / "back.gib")
            assert put.digest.hex == got.digest.hex == expected.hexdigest()
            assert (work / "back.gib").stat().st_size == GiB
            peak = _peak_rss_kib(srv.proc.pid)
            print(f"server peak RSS: {peak / 1024:.1f} MiB")
            assert peak < 100 * 1024, f"server peak RSS {peak} KiB"
        finally:
            stop_process(srv.proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
