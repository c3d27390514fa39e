#!/usr/bin/env python3
"""Descriptor pressure: a server limited to 256 descriptors keeps serving everyone.

Starts ``python -m muxserver`` under ``prlimit --nofile=256``, then at once:

* 50 connections each pipeline 100 GETs of a 20 KiB file and never read the replies
  (each queued download would keep its file open if nothing capped it);
* 4 puts to new paths 60 directories deep;
* a recursive listing of 1,500 subdirectories with a file in each;

and meanwhile a fresh client connects and asks ``stat``, ten times. It passes when
every ``stat`` was answered within ``--max-latency`` seconds, the listing was complete
(3,000 entries), the deep puts were stored, and the server never exited.

    python scripts/fd_pressure_check.py [--max-latency 1.0]

Needs prlimit (util-linux). Figures depend on the machine (a shared VM here).
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muxserver import protocol  # noqa: E402
from muxserver.client import Client, PutFile  # noqa: E402

LISTENING = re.compile(r"listening on (\S+):(\d+)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--max-latency", type=float, default=1.0)
    args = parser.parse_args()
    if shutil.which("prlimit") is None:
        raise SystemExit("needs prlimit (apt-get install util-linux)")
    work = Path(tempfile.mkdtemp(prefix="fd-pressure-"))
    root = work / "root"
    for i in range(1500):
        (root / "tree" / f"d{i:04d}").mkdir(parents=True)
        (root / "tree" / f"d{i:04d}" / "f").touch()
    (root / "f.bin").write_bytes(os.urandom(20 * 1024))
    (work / "small").write_bytes(b"deep")
    server = subprocess.Popen(["prlimit", "--nofile=256:256", sys.executable, "-m",
                               "muxserver", "serve", "--port", "0", "--root", str(root),
                               "--no-console"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    crowd: list[socket.socket] = []
    try:
        port = next(int(m.group(2)) for line in server.stdout
                    if (m := LISTENING.search(line)))
        burst = protocol.encode_get(1, "f.bin") * 100
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(burst)
            crowd.append(sock)
        with Client("127.0.0.1", port, timeout=30) as client:
            deep = ["/".join(f"p{j}{i}" for i in range(60)) + "/small" for j in range(4)]
            stored = all(r.ok for r in client.run([PutFile(work / "small", n) for n in deep]))
            listed = len(client.list("tree", recursive=True))
        latencies = []
        for _ in range(10):
            started = time.monotonic()
            with Client("127.0.0.1", port, timeout=30) as fresh:
                fresh.stat("f.bin")
            latencies.append(time.monotonic() - started)
        alive = server.poll() is None
    finally:
        for sock in crowd:
            sock.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    worst = max(latencies)
    ok = stored and listed == 3000 and alive and worst <= args.max_latency
    print(f"prlimit --nofile=256: 50 connections x 100 pipelined GETs never read, 4 deep "
          f"puts ({'stored' if stored else 'FAILED'}), a recursive listing of "
          f"{listed} entries (3,000 expected); fresh client's stat: worst "
          f"{worst * 1000:.1f} ms of 10; server {'alive' if alive else 'EXITED'} "
          "(shared, noisy VM)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
