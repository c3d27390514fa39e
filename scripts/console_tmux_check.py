#!/usr/bin/env python3
"""Real-terminal check of the live console, in tmux.

Starts ``python -m muxserver`` inside a detached tmux session (a real pseudo-terminal,
so the live console is on), uploads a file slowly from this script, and captures the
pane twice while the upload runs. It passes when both captures show the file name,
the "receiving body" state and a percentage, and the percentage grew between them.

What to watch: run it with --show to print the captured screens.

    python scripts/console_tmux_check.py [--width 80] [--show]

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

NAME = "throttled [bold]upload[/bold].bin"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def capture(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for_text(session: str, pattern: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = capture(session)
        if re.search(pattern, screen):
            return screen
        time.sleep(0.1)
    raise SystemExit(f"FAIL: {pattern!r} never appeared on screen:\n{capture(session)}")


def percent_of(screen: str) -> int:
    for line in screen.splitlines():
        if "throt" in line and "].bin" in line:  # (the name, cut in the middle)
            match = re.search(r"(\d+)%", line)
            if match:
                return int(match.group(1))
    raise SystemExit(f"FAIL: no percentage on the transfer's row:\n{screen}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--show", action="store_true", help="print the captured screens")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("SKIP: tmux is not installed (apt-get install tmux)")
        return 0
    root = tempfile.mkdtemp(prefix="muxserver-console-")
    port = free_port()
    session = f"muxcheck{os.getpid()}"
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    command = f"cd {repo} && {sys.executable} -m muxserver --root {root} --port {port}"
    tmux("new-session", "-d", "-s", session, "-x", str(args.width), "-y", "30", command)
    try:
        wait_for_text(session, "no connections")
        data = os.urandom(24 * 1024 * 1024)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(protocol.encode_put(1, NAME, len(data), hashlib.sha256(data).hexdigest()))
            step = len(data) // 40
            for i in range(12):  # 30 % of the file, slowly
                sock.sendall(data[i * step:(i + 1) * step])
                time.sleep(0.1)
            first = wait_for_text(session, r"receiving body.*\d+%")
            for i in range(12, 28):
                sock.sendall(data[i * step:(i + 1) * step])
                time.sleep(0.1)
            time.sleep(0.6)  # a redraw happens at least every 0.25 s while busy
            second = capture(session)
            sock.sendall(data[28 * step:])
            protocol_reply = sock.recv(65536)
        if args.show:
            print(first, "-" * args.width, second, sep="\n")
        for screen in (first, second):
            name = "throttled [bold]upload[/bold].bin"  # (cut in the middle when narrow)
            if name[:5] not in screen or name[-5:] not in screen:
                raise SystemExit(f"FAIL: the file name is not shown literally:\n{screen}")
        p1, p2 = percent_of(first), percent_of(second)
        if not p2 > p1:
            raise SystemExit(f"FAIL: the percentage did not advance ({p1}% then {p2}%)")
        if b'"ok":true' not in protocol_reply:
            raise SystemExit(f"FAIL: the upload was not accepted: {protocol_reply!r}")
        print(f"PASS: name, state and progress shown; {p1}% then {p2}% "
              f"(width {args.width})")
        return 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
