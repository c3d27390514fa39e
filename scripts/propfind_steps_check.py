#!/usr/bin/env python3
"""A WebDAV PROPFIND (Depth: 1) of a folder of 100,000 entries: the loop's longest
step, and the server's memory, against a folder of 1,000.

Makes the two folders, starts ``python -m muxserver serve`` on them, asks for each
folder's members with the named properties rclone asks for and then with ``allprop``
(which reads every member's dead properties: an open per member), reading the
answer as it streams. Samples the server's resident memory while it answers, then
stops it and prints its own account of the longest loop step (and of the steps over
20 ms). A step writes a page of members, so it must not grow with the folder; nor may
the memory (the answer is never held whole).

    python scripts/propfind_steps_check.py [--entries 100000] [--dir /dev/shm]

Wall time on a busy machine moves the step figures; memory does not move much.
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cpu_seconds, rss, spawn_muxserver  # noqa: E402

NAMED = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
         b"<d:displayname/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/>"
         b"<d:getcontenttype/></d:prop></d:propfind>")
ALLPROP = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'


def propfind(port: int, path: str, body: bytes, pid: int) -> tuple[int, int, float, int]:
    """(members answered, bytes, server CPU seconds, peak server RSS while answering)."""
    peak = [rss(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = cpu_seconds(pid)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("PROPFIND", path, body, {"Depth": "1",
                                                    "Content-Type": "application/xml"})
        response = connection.getresponse()
        assert response.status == 207, response.status
        total = members = 0
        tail = b""
        while True:
            chunk = response.read(65536)
            if not chunk:
                break
            total += len(chunk)
            members += (tail + chunk).count(b"<D:response>") - tail.count(b"<D:response>")
            tail = chunk[-16:]
    finally:
        connection.close()
        done.set()
        sampler.join()
    return members, total, cpu_seconds(pid) - cpu, peak[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where to make the folders "
                        "(default: the system's temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        root = Path(work)
        for name, count in (("big", args.entries), ("small", 1000)):
            folder = root / name
            folder.mkdir()
            for i in range(count):
                (folder / f"file-{i:06}.txt").write_bytes(b"x" * (i % 100))
        server = spawn_muxserver(root, "--log-level", "warning", keep_output=True)
        try:
            base = rss(server.proc.pid)
            print(f"server RSS before: {base / 2**20:.1f} MiB")
            for label, body in (("named", NAMED), ("allprop", ALLPROP)):
                for name in ("small", "big"):
                    members, size, cpu, peak = propfind(server.port, f"/{name}/", body, server.proc.pid)
                    print(f"{label:8} {name:5}: {members:7} members, {size / 2**20:7.1f} MiB "
                          f"of XML, server CPU {cpu:6.2f} s, peak RSS {peak / 2**20:6.1f} MiB "
                          f"(+{(peak - base) / 2**20:.1f})")
        finally:
            server.stop()
        output = "".join(server.output or [])
        found = re.search(r"longest loop step .*", output)
        print(found.group(0) if found else "(no summary: " + output[-300:] + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
