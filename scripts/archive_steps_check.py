#!/usr/bin/env python3
"""Archives of many empty members: the loop stays short, and non-readers cost little.

An archive's loop steps once counted only file bytes, so a folder of 40,000 empty files
went out in one step (1.2-1.7 s with no other client served), and four clients that
asked for it and never read made the server queue the whole archive for each. This
check makes such a folder in /dev/shm (``--files`` empty files, and a few folders with
names the rules refuse, which must be left out and listed, never cut the stream),
starts ``python -m muxserver`` on it (this checkout, or ``--repo`` for another version
side by side) and:

1. downloads ``GET /empty/?download=zip`` with curl while a probe client asks ``stat``
   again and again (its worst wait is the loop's responsiveness as a client sees it),
   then checks the zip with ``unzip -t`` (or Python's zipfile);
2. opens four connections that ask for the same zip and never read, and samples the
   server's RSS before and once their queues have stopped growing;
3. stops the server and reads its own measure of the longest loop step.

    python scripts/archive_steps_check.py [--files 40000] [--repo PATH]

Figures depend on the machine (a shared VM here: run it twice, say so next to them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import rss  # noqa: E402
from muxserver.client import Client  # noqa: E402

LISTENING = re.compile(r"listening on (\S+):(\d+)")
LONGEST = re.compile(r"longest loop step ([\d.]+) ms \((.*)\), (\d+) over")
ODD = ["aux", "new\nline", "back\\slash"]


def make_folder(root: Path, files: int, odd: list[str]) -> None:
    empty = root / "empty"
    empty.mkdir(parents=True)
    for i in range(files):
        (empty / f"{i:06d}.txt").touch()
    for name in odd:
        (empty / name).mkdir()
        (empty / name / "inside.txt").touch()



class Probe(threading.Thread):
    """A client asking ``stat`` in a loop; its worst wait."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.worst, self.asked, self.running = port, 0.0, 0, True

    def run(self) -> None:
        with Client("127.0.0.1", self.port, timeout=60) as client:
            while self.running:
                started = time.monotonic()
                client.stat("empty")
                self.worst = max(self.worst, time.monotonic() - started)
                self.asked += 1


def non_readers(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connect)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /empty/?download=zip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks.append(sock)
    return socks


def settled_rss(pid: int) -> int:
    """The server's RSS once it stops growing (the non-readers' queues are full)."""
    last, same = rss(pid), 0
    while same < 10:
        time.sleep(0.2)
        now = rss(pid)
        same = same + 1 if abs(now - last) < 64 * 1024 else 0
        last = now
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--files", type=int, default=40_000)
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose server to run")
    parser.add_argument("--max-step-ms", type=float, default=20.0)
    parser.add_argument("--max-extra-rss-mib", type=float, default=10.0)
    parser.add_argument("--no-odd", action="store_true",
                        help="no folders with refused names (a version that cut the "
                             "stream for them can then be measured too)")
    args = parser.parse_args()
    odd = [] if args.no_odd else ODD
    work = Path(tempfile.mkdtemp(prefix="archive-steps-", dir="/dev/shm"))
    server = None
    try:
        make_folder(work / "root", args.files, odd)
        env = dict(os.environ, PYTHONPATH=args.repo)
        server = subprocess.Popen([sys.executable, "-m", "muxserver", "serve", "--port", "0",
                                   "--root", str(work / "root"), "--no-console"],
                                  cwd=args.repo, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stderr is not None
        port = next(int(m.group(2)) for line in server.stdout if (m := LISTENING.search(line)))
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.extend(server.stderr), daemon=True)
        reader.start()
        probe = Probe(port)
        probe.start()
        saved = work / "empty.zip"
        started = time.monotonic()
        fetched = subprocess.run(["curl", "-sS", "--fail", "-o", str(saved),
                                  f"http://127.0.0.1:{port}/empty/?download=zip"])
        took = time.monotonic() - started
        probe.running = False
        probe.join(timeout=60)
        try:
            with zipfile.ZipFile(saved) as z:
                members, bad = len(z.namelist()), z.testzip()
                left_out = (z.read("empty/muxserver-left-out.txt").decode().count("\n") - 2
                            if odd else 0)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            members, bad, left_out = 0, str(exc), 0
        before = settled_rss(server.pid)
        socks = non_readers(port, 4)
        after = settled_rss(server.pid)
        for sock in socks:
            sock.close()
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            reader.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    summary = next((m for line in errors if (m := LONGEST.search(line))), None)
    longest = float(summary.group(1)) if summary else float("nan")
    extra = (after - before) / 2**20
    print(f"server from {args.repo} (shared, noisy VM: run twice)")
    print(f"{args.files} empty files and {len(odd)} folders with refused names")
    print(f"  zip: curl exit {fetched.returncode} in {took:.2f} s, {members} members, "
          f"zipfile test {'ok' if bad is None else bad}, {left_out} entries listed as "
          "left out")
    print(f"  probe: {probe.asked} stat answered meanwhile, worst wait "
          f"{probe.worst * 1000:.1f} ms")
    print(f"  longest loop step (the server's own measure): {longest:.1f} ms "
          f"({summary.group(2) if summary else '?'}), {summary.group(3) if summary else '?'}"
          " over 20 ms")
    print(f"  four clients that never read: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} "
          f"MiB ({extra:+.1f} MiB)")
    ok = (fetched.returncode == 0 and bad is None
          and members == args.files + 1 + bool(odd) and left_out == len(odd)
          and longest <= args.max_step_ms
          and extra <= args.max_extra_rss_mib)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
