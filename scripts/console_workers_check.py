#!/usr/bin/env python3
"""Real-terminal check of the live console with ``--workers 2``, through Ctrl-C.

Starts ``python -m muxserver --workers 2`` in a detached tmux session (a real
pseudo-terminal, so the live console is on), then: a few uploads that succeed, one
that fails (a wrong checksum), a burst of ordinary events after it, three uploads left
half-sent, Ctrl-C, the rest of those three (they finish within the grace period).
It captures the screen all along and passes when:

* no count in the header ever goes down between two frames (``done``, ``failed``,
  ``in``, ``out``) and no rate is negative, through the workers' exit too;
* the failure is still on screen after the burst of newer ordinary lines;
* the last frame shows the end: every transfer done, the three finished.

    python scripts/console_workers_check.py [--show]

Needs tmux (apt-get install tmux). Exit status 0 when the check passes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from muxserver import protocol  # noqa: E402
from muxserver.client import Client, PutFile  # noqa: E402

HEADER = re.compile(r"done (\d+)\s+failed (\d+)\s+in (-?[\d.]+ ?[KMGT]?i?B?)\s+"
                    r"out (-?[\d.]+ ?[KMGT]?i?B?)\s+(-?[\d.]+) ?[KMGT]?i?B/s")
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def capture(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def amount(text: str) -> float:
    """``7.2M``, ``12.0 MiB``, ``0 B``: the console's byte counts."""
    match = re.fullmatch(r"(-?[\d.]+) ?([KMGT]?)i?B?", text.strip())
    return float(match.group(1)) * UNITS[match.group(2)] if match else -1.0


class Watch:
    """Frames captured as they come, and the header's counts of each."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.frames: list[str] = []
        self.counts: list[tuple[float, ...]] = []

    def look(self) -> str:
        screen = capture(self.session)
        self.frames.append(screen)
        match = HEADER.search(screen)
        if match:
            rate = float(match.group(5))
            self.counts.append((int(match.group(1)), int(match.group(2)),
                                amount(match.group(3)), amount(match.group(4)), rate))
        return screen

    def until(self, pattern: str, timeout: float = 60.0) -> str:
        """Capture until ``pattern`` shows (a real event on screen, however long)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.look()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.05)
        raise SystemExit(f"FAIL: {pattern!r} never appeared on screen:\n{capture(self.session)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print the last frames")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("SKIP: tmux is not installed (apt-get install tmux)")
        return 0
    work = tempfile.mkdtemp(prefix="muxserver-workers-console-")
    root = os.path.join(work, "root")
    os.mkdir(root)
    session = f"muxworkers{os.getpid()}"
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    command = (f"cd {repo} && {sys.executable} -m muxserver --root {root} --port 0 "
               "--workers 2 --shutdown-grace 60")
    tmux("new-session", "-d", "-s", session, "-x", "110", "-y", "45", command)
    tmux("set-option", "-t", session, "remain-on-exit", "on")
    watch = Watch(session)
    try:
        screen = watch.until(r"listening on 127\.0\.0\.1:(\d+)|workers\)")
        port = int(re.search(r"127\.0\.0\.1:(\d+)", screen).group(1))
        small = os.path.join(work, "small.txt")
        with open(small, "w") as f:
            f.write("a small file\n")
        with Client("127.0.0.1", port) as client:
            for i in range(4):
                client.put_file(small, f"ok{i}.txt")
        with socket.create_connection(("127.0.0.1", port)) as sock:  # a wrong checksum
            sock.sendall(protocol.encode_put(1, "broken.bin", 5, "0" * 64) + b"12345")
            sock.recv(65536)
        watch.until(r"checksum")
        with Client("127.0.0.1", port) as client:  # a burst of newer, ordinary lines
            for i in range(12):
                client.put_file(small, f"after{i}.txt")
        after_burst = watch.until(r"done 16\b")
        data = os.urandom(8 * 1024 * 1024)
        digest = hashlib.sha256(data).hexdigest()
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for i, sock in enumerate(slow):
            sock.sendall(protocol.encode_put(1, f"slow{i}.bin", len(data), digest)
                         + data[:len(data) // 2])
        watch.until(r"(receiving body.*\n.*){3}")
        tmux("send-keys", "-t", session, "C-c")
        watch.until(r"stopping")
        for sock in slow:
            sock.sendall(data[len(data) // 2:])
        for sock in slow:
            reply = b""
            while b'"ok"' not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            sock.close()
        last = watch.until(r"stopped after 19 transfer")
        if args.show:
            print(after_burst, "-" * 110, last, sep="\n")
        if "checksum" not in after_burst:
            raise SystemExit(f"FAIL: the failure left the screen under newer lines:\n"
                             f"{after_burst}")
        for before, after in zip(watch.counts, watch.counts[1:]):
            if any(b > a for b, a in zip(before[:4], after[:4])) or after[4] < 0:
                raise SystemExit(f"FAIL: a count went down (or a rate below 0): {before} "
                                 f"then {after}")
        if not watch.counts or watch.counts[-1][0] < 19:
            raise SystemExit(f"FAIL: the last frame's count is not the end: {watch.counts[-1:]}")
        print(f"PASS: {len(watch.frames)} frames, no count down, the failure kept in sight, "
              f"the end shown (done {watch.counts[-1][0]}, failed {watch.counts[-1][1]})")
        return 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
