#!/usr/bin/env python3
"""Console cost: a 1 GiB upload to a server with the live console vs --no-console.

Two servers run side by side on /dev/shm roots: one on a pseudo-terminal (so its live
console draws, four times a second, as it would for a person watching) and one with
--no-console. Uploads alternate between them; the script prints the median, min and
max upload time and server CPU of each, the ratio console / no-console (the median of
the ratios of back-to-back pairs, and the ratio of the medians), and what one redraw
costs. Target: ratio <= 1.05. (`python scripts/bench.py --only console` runs the same.)

    python scripts/bench_console.py [--size-mib 1024] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from benchlib import GiB, console_cost, make_file, print_console_cost, scratch_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = scratch_dir("muxserver-bench-console-", 3 * (args.size_mib << 20) + GiB // 4)
    try:
        src = work / "upload.bin"
        make_file(src, args.size_mib << 20)
        report = {"size_mib": args.size_mib, **console_cost(src, args.runs, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = report["paired_ratio"] <= 1.05
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_console_cost(report, args.runs)
        print("target (<= 1.05):", "ok" if ok else "OVER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
