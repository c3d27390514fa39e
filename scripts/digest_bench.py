#!/usr/bin/env python3
"""How fast each digest hashes here: SHA-256 (hashlib) against BLAKE3 (the blake3 package).

Hashes the same buffer in 1 MiB pieces (as the helper thread and the client do), the two
algorithms alternating round by round, and prints the median speed of each and their
ratio; then the same with a read of a file from the page cache before each piece, which
is what hashing an upload costs the helper thread.

    python scripts/digest_bench.py [--mib 512] [--rounds 5]

The machine is shared and noisy: compare the ratio, not the speeds across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from muxserver.digests import ALGORITHMS, new_hasher  # noqa: E402

PIECE = 1 << 20


def hash_memory(algorithm: str, data: memoryview) -> float:
    hasher = new_hasher(algorithm)
    started = time.perf_counter()
    for offset in range(0, len(data), PIECE):
        hasher.update(data[offset:offset + PIECE])
    hasher.hexdigest()
    return time.perf_counter() - started


def hash_file(algorithm: str, fd: int, size: int) -> float:
    hasher = new_hasher(algorithm)
    started = time.perf_counter()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, PIECE, offset)
        hasher.update(chunk)
        offset += len(chunk)
    hasher.hexdigest()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="bytes hashed per run, in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.mib * PIECE
    data = memoryview(os.urandom(PIECE) * args.mib)
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.NamedTemporaryFile(dir=where) as scratch:
        scratch.write(data)
        scratch.flush()
        results: dict[str, dict[str, list[float]]] = {
            kind: {a: [] for a in ALGORITHMS} for kind in ("memory", "file")}
        for round_no in range(args.rounds):
            order = ALGORITHMS if round_no % 2 == 0 else ALGORITHMS[::-1]
            for algorithm in order:
                results["memory"][algorithm].append(hash_memory(algorithm, data))
                results["file"][algorithm].append(hash_file(algorithm, scratch.fileno(), size))
    print(f"{args.mib} MiB in 1 MiB pieces, {args.rounds} alternating rounds, median "
          f"(a shared, noisy machine: read the ratios)")
    for kind, label in (("memory", "from memory"), ("file", "pread + hash (page cache)")):
        speeds = {a: size / statistics.median(t) / 1e9 for a, t in results[kind].items()}
        line = ", ".join(f"{a} {speeds[a]:.2f} GB/s" for a in ALGORITHMS)
        print(f"  {label:<27} {line}; blake3 / sha256 = "
              f"{speeds['blake3'] / speeds['sha256']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
