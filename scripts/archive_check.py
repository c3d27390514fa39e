#!/usr/bin/env python3
"""Folder download check: a 2 GiB folder as one zip stream, in bounded memory.

Makes a folder of ``--gib`` GiB in /dev/shm (a few big files and many small ones),
starts ``python -m muxserver`` on it, and then:

1. streams ``GET /photos/?download=zip`` through ``bsdtar -tvf -`` (libarchive reads
   the zip as it comes, as a pipe would), while a probe client asks ``stat`` again and
   again and the server's RSS is sampled;
2. saves the same zip to a file and runs ``unzip -t`` on it (every CRC checked);
3. does the same with ``?download=tar`` through ``tar -tvf -``.

It passes when every file is listed by both readers, ``unzip -t`` finds no error, the
server's RSS stays under ``--max-rss-mib``, and the probe is always answered within
``--max-latency`` seconds.

    python scripts/archive_check.py [--gib 2] [--max-rss-mib 100]

Needs curl, bsdtar (libarchive-tools) and unzip. Figures depend on the machine (a
shared VM here: say so next to them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import rss  # noqa: E402
from muxserver.client import Client  # noqa: E402

LISTENING = re.compile(r"listening on (\S+):(\d+)")


def make_folder(where: Path, gib: float) -> int:
    """Big files of 256 MiB and 200 small ones; returns how many files."""
    photos = where / "photos"
    (photos / "small").mkdir(parents=True)
    block = os.urandom(1024 * 1024)
    big = int(gib * 4)
    for i in range(big):
        with open(photos / f"big-{i}.bin", "wb") as f:
            for _ in range(256):
                f.write(block)
    for i in range(200):
        (photos / "small" / f"note-{i:03d}.txt").write_bytes(os.urandom(1000 + i))
    return big + 200


class Watch(threading.Thread):
    """Samples the server's RSS and a probe client's stat round trips."""

    def __init__(self, pid: int, port: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.max_rss = 0
        self.worst = 0.0
        self.running = True

    def run(self) -> None:
        with Client("127.0.0.1", self.port, timeout=30) as client:
            while self.running:
                self.max_rss = max(self.max_rss, rss(self.pid))
                started = time.monotonic()
                client.stat("photos")
                self.worst = max(self.worst, time.monotonic() - started)
                time.sleep(0.05)



def stream_into(url: str, reader: list[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    curl = subprocess.Popen(["curl", "-sS", "--fail", url], stdout=subprocess.PIPE)
    result = subprocess.run(reader, stdin=curl.stdout, capture_output=True, text=True)
    curl.stdout.close()
    curl.wait()
    return result.returncode | curl.returncode, result.stdout + result.stderr, (
        time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--max-rss-mib", type=float, default=100.0)
    parser.add_argument("--max-latency", type=float, default=1.0)
    args = parser.parse_args()
    for tool in ("curl", "bsdtar", "unzip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    work = Path(tempfile.mkdtemp(prefix="archive-check-", dir="/dev/shm"))
    server = None
    try:
        files = make_folder(work / "root", args.gib)
        server = subprocess.Popen([sys.executable, "-m", "muxserver", "serve", "--port", "0",
                                   "--root", str(work / "root"), "--no-console"], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        port = next(int(m.group(2)) for line in server.stdout if (m := LISTENING.search(line)))
        base = f"http://127.0.0.1:{port}/photos/"
        watch = Watch(server.pid, port)
        watch.start()
        zip_rc, zip_listing, zip_took = stream_into(base + "?download=zip", ["bsdtar", "-tvf", "-"])
        tar_rc, tar_listing, tar_took = stream_into(base + "?download=tar", ["tar", "-tvf", "-"])
        saved = work / "photos.zip"
        subprocess.run(["curl", "-sS", "--fail", "-o", str(saved), base + "?download=zip"],
                       check=True)
        watch.running = False
        watch.join(timeout=30)
        tested = subprocess.run(["unzip", "-t", str(saved)], capture_output=True, text=True)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    listed_zip = sum(1 for line in zip_listing.splitlines() if not line.rstrip().endswith("/")
                     and line.startswith("-"))
    listed_tar = sum(1 for line in tar_listing.splitlines() if line.startswith("-"))
    gib_s = args.gib / zip_took
    print(f"{files} files, {args.gib:g} GiB (shared, noisy VM: figures vary)")
    print(f"  zip through bsdtar: {zip_took:.1f} s ({gib_s:.2f} GiB/s), {listed_zip} files "
          f"listed, exit {zip_rc}")
    print(f"  tar through tar:    {tar_took:.1f} s, {listed_tar} files listed, exit {tar_rc}")
    print(f"  unzip -t: {tested.stdout.strip().splitlines()[-1] if tested.stdout else '?'}")
    print(f"  server RSS at most {watch.max_rss / 2**20:.1f} MiB; probe stat worst "
          f"{watch.worst * 1000:.1f} ms")
    ok = (zip_rc == 0 and tar_rc == 0 and listed_zip == files and listed_tar == files
          and tested.returncode == 0 and watch.max_rss < args.max_rss_mib * 2**20
          and watch.worst <= args.max_latency)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
