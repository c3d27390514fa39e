#!/usr/bin/env python3
"""muxserver's WebDAV against another WebDAV server, in the server's CPU seconds.

For each server, alternating (A, B, A, B...), the same requests on the same kind of
tree: a PROPFIND (Depth: 1, allprop) of a folder of ``--entries`` files, a PUT of a
``--mib`` MiB file, a GET of it, a COPY of it and a MOVE. Reports the medians of the
server's CPU seconds (user + system, from /proc) per operation, and their ratio. The
file is made in memory first (touched) and the folders live under ``--dir``.

The other server is WsgiDAV (``pip install wsgidav cheroot``, in any environment: give
its ``wsgidav`` program with ``--wsgidav``); without it, muxserver alone is measured.

    python scripts/dav_bench.py [--runs 3] [--entries 10000] [--mib 100] [--dir /dev/shm]
        [--wsgidav /path/to/wsgidav]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (Spawned, cpu_seconds, free_port, spawn_muxserver,  # noqa: E402
                      wait_listening)

ALLPROP = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'


def start_muxserver(root: Path) -> Spawned:
    return spawn_muxserver(root, "--log-level", "warning", "--allow-delete",
                           "--allow-overwrite")


def start_wsgidav(program: str, root: Path) -> Spawned:
    port = free_port()  # (wsgidav takes no port 0; a race here costs a rerun, no more)
    proc = subprocess.Popen([program, "--host", "127.0.0.1", "--port", str(port), "--root",
                             str(root), "--auth", "anonymous", "--no-config", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, timeout=30)
    return Spawned(proc, "127.0.0.1", port)


def request(port: int, method: str, path: str, body: bytes | Path = b"",
            headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        headers = dict(headers or {})
        if isinstance(body, Path):
            headers["Content-Length"] = str(body.stat().st_size)
            with open(body, "rb") as f:
                connection.request(method, path, f, headers)
        else:
            connection.request(method, path, body, headers)
        response = connection.getresponse()
        while response.read(1 << 20):
            pass
        return response.status
    finally:
        connection.close()


def one_run(name: str, start, base: Path, entries: int, big: Path) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(dir=base))
    folder = root / "many"
    folder.mkdir()
    for i in range(entries):
        (folder / f"f{i:06}.txt").write_bytes(b"x" * (i % 50))
    server = start(root)
    port = server.port
    costs: dict[str, float] = {}
    try:
        steps = [
            ("PROPFIND 1", lambda: request(port, "PROPFIND", "/many/", ALLPROP,
                                           {"Depth": "1", "Content-Type": "application/xml"})),
            ("PUT", lambda: request(port, "PUT", "/big.bin", big)),
            ("GET", lambda: request(port, "GET", "/big.bin")),
            ("COPY", lambda: request(port, "COPY", "/big.bin", b"", {
                "Destination": f"http://127.0.0.1:{port}/copy.bin"})),
            ("MOVE", lambda: request(port, "MOVE", "/copy.bin", b"", {
                "Destination": f"http://127.0.0.1:{port}/moved.bin"})),
        ]
        for label, step in steps:
            before = cpu_seconds(server.proc.pid)
            status = step()
            costs[label] = cpu_seconds(server.proc.pid) - before
            assert status < 300, f"{name} {label}: {status}"
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--wsgidav", default=shutil.which("wsgidav"))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        big = base / "big.bin"
        with open(big, "wb") as f:  # (touched: every page is written before the runs)
            f.write(os.urandom(args.mib << 20))
        contenders = {"muxserver": start_muxserver}
        if args.wsgidav:
            contenders["wsgidav"] = lambda root: start_wsgidav(args.wsgidav, root)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, start in contenders.items():
                results[name].append(one_run(name, start, base, args.entries, big))
        labels = list(results["muxserver"][0])
        print(f"server CPU seconds, median of {args.runs} (PROPFIND of {args.entries} "
              f"entries, allprop; a {args.mib} MiB file):")
        print(f"{'':12}" + "".join(f"{name:>12}" for name in results)
              + ("   ratio" if len(results) == 2 else ""))
        for label in labels:
            medians = [statistics.median(run[label] for run in runs)
                       for runs in results.values()]
            ratio = (f"   {medians[1] / medians[0]:5.1f}x" if len(medians) == 2 and medians[0]
                     else "")
            print(f"{label:12}" + "".join(f"{m:12.3f}" for m in medians) + ratio)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
