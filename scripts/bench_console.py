#!/usr/bin/env python3
"""Console cost: a 1 GiB upload to a server with the live console vs --no-console.

Two servers run side by side on /dev/shm roots: one on a pseudo-terminal (so its live
console draws, four times a second, as it would for a person watching) and one with
--no-console. Uploads alternate between them; the script prints the median, min and
max upload time of each and the ratio console / no-console. Target: ratio <= 1.05.

    python scripts/bench_console.py [--size-mib 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from benchlib import (GiB, alternate, cpu_seconds, make_file, scratch_dir, spawn_muxserver,
                      summary, timed)

from muxserver.client import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size_mib << 20
    work = scratch_dir("muxserver-bench-console-", 3 * size + GiB // 4)
    servers = {}
    try:
        src = work / "upload.bin"
        make_file(src, size)
        for name, terminal in (("console", True), ("no-console", False)):
            root = work / name
            root.mkdir()
            servers[name] = (spawn_muxserver(root, terminal=terminal), root)

        cpu: dict[str, list[float]] = {name: [] for name in servers}

        def one_run(name: str, entry) -> float:
            server, root = entry
            target = root / "upload.bin"
            before = cpu_seconds(server.proc.pid)
            with Client(server.host, server.port) as client:
                seconds = timed(lambda: client.put_file(src, "upload.bin"))
            cpu[name].append(cpu_seconds(server.proc.pid) - before)
            os.unlink(target)
            return seconds

        timings = alternate(servers, args.runs, one_run)
    finally:
        for server, _root in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    stats = {name: summary(samples) for name, samples in timings.items()}
    cpu_stats = {name: summary(samples) for name, samples in cpu.items()}
    ratio = stats["console"]["median"] / stats["no-console"]["median"]
    cpu_ratio = cpu_stats["console"]["median"] / cpu_stats["no-console"]["median"]
    if args.json:
        print(json.dumps({"size_bytes": size, "wall": stats, "server_cpu": cpu_stats,
                          "ratio": ratio, "cpu_ratio": cpu_ratio}, indent=2))
    else:
        print(f"upload of {args.size_mib} MiB, {args.runs} runs each, alternating")
        print(f"{'server':<12} {'median s':>9} {'min s':>7} {'max s':>7} {'MiB/s':>7} "
              f"{'server CPU s':>13}")
        for name, s in stats.items():
            print(f"{name:<12} {s['median']:9.3f} {s['min']:7.3f} {s['max']:7.3f} "
                  f"{args.size_mib / s['median']:7.0f} {cpu_stats[name]['median']:13.3f}")
        verdict = "ok" if ratio <= 1.05 else "OVER the 5% target"
        print(f"console / no-console wall-time ratio (medians): {ratio:.3f} ({verdict})")
        print(f"console / no-console server CPU ratio (medians): {cpu_ratio:.3f}")
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
