#!/usr/bin/env python3
"""Measure the streaming zip writers a folder download could use, side by side.

Writes a stored (uncompressed) zip of one folder to nowhere (the bytes are counted and
dropped), with each writer in turn, A B C A B C ..., each run in a fresh process, and
prints per writer the median time, throughput, peak RSS and the longest gap between two
pieces of output (what one loop step would hold the loop for, were the writer driven
from the loop):

* ``muxserver``: ``muxserver.archive.ZipStream``, files read in 256 KiB pieces, which
  is how ``http_folders.py`` drives it (one piece per loop step);
* ``zipstream-ng``: ``zipstream.ZipStream(compress_type=ZIP_STORED)``, fed the same
  pieces through ``add(iterable, name, size=...)``;
* ``stream-zip``: ``stream_zip`` with ``NO_COMPRESSION_64``, its stored mode for
  members of unknown CRC (``NO_COMPRESSION_64(size, crc)`` streams, but needs the
  CRC before the first byte, that is a second read of every file).

    python scripts/zip_writer_bench.py [--dir /dev/shm/muxbench-zip] [--rounds 3]

The folder (default: four 256 MiB files and 1000 of 16 KiB, 1.02 GiB) is made on the
RAM disk the first time. Needs ``pip install zipstream-ng stream-zip`` (a writer that
is missing is skipped). The machine is shared and noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIECE = 256 * 1024
WRITERS = ["muxserver", "zipstream-ng", "stream-zip"]


def make_folder(folder: Path) -> None:
    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1024 * 1024)
    for index in range(4):
        with open(folder / f"big{index}.bin", "wb") as out:
            for _ in range(256):
                out.write(block)
    small = folder / "small"
    small.mkdir(exist_ok=True)
    for index in range(1000):
        (small / f"{index:04}.txt").write_bytes(block[index:index + 16 * 1024])
    (folder / "done").write_text("")


def members(folder: Path) -> list[tuple[str, Path]]:
    return [(path.relative_to(folder).as_posix(), path) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != "done"]


def pieces(path: Path):
    with open(path, "rb") as handle:
        while chunk := handle.read(PIECE):
            yield chunk


def write_muxserver(files):
    sys.path.insert(0, str(REPO))
    from muxserver.archive import ZipStream, crc32

    writer = ZipStream()
    for name, path in files:
        yield writer.member_start(name, path.stat().st_mtime)
        crc = size = 0
        for chunk in pieces(path):
            crc, size = crc32(crc, chunk), size + len(chunk)
            yield chunk
        yield writer.member_end(crc, size, size)
    yield writer.finish()


def write_zipstream_ng(files):
    import zipstream

    stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED)
    for name, path in files:
        stream.add(pieces(path), name, size=path.stat().st_size)
    yield from stream


def write_stream_zip(files):
    from stream_zip import NO_COMPRESSION_64, stream_zip

    yield from stream_zip(
        (name, datetime.fromtimestamp(path.stat().st_mtime), 0o644, NO_COMPRESSION_64,
         pieces(path)) for name, path in files)


def one_run(writer: str, folder: Path) -> dict:
    produce = {"muxserver": write_muxserver, "zipstream-ng": write_zipstream_ng,
               "stream-zip": write_stream_zip}[writer]
    files = members(folder)
    total = gap = 0
    started = last = time.perf_counter()
    for data in produce(files):
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
        total += len(data)
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "bytes": total, "rss": rss, "gap": gap}


def available(writer: str) -> bool:
    module = {"muxserver": None, "zipstream-ng": "zipstream", "stream-zip": "stream_zip"}[writer]
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/dev/shm/muxbench-zip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # (a single run, in a child)
    args = parser.parse_args()
    folder = Path(args.dir)
    if args.one:
        print(json.dumps(one_run(args.one, folder)))
        return 0
    make_folder(folder)
    writers = [w for w in WRITERS if available(w)]
    for missing in set(WRITERS) - set(writers):
        print(f"(skipping {missing}: not installed)")
    results: dict[str, list[dict]] = {w: [] for w in writers}
    for _ in range(args.rounds):
        for writer in writers:  # alternating: A B C A B C
            child = subprocess.run([sys.executable, __file__, "--dir", str(folder), "--one",
                                    writer], capture_output=True, text=True, check=True)
            results[writer].append(json.loads(child.stdout))
    print(f"stored zip of {folder} ({results['muxserver'][0]['bytes'] / 2**30:.2f} GiB), "
          f"median of {args.rounds} runs each, alternating; shared noisy machine")
    base = statistics.median(r["seconds"] for r in results["muxserver"])
    print(f"{'writer':14} {'time':>8} {'GiB/s':>7} {'vs ours':>8} {'peak RSS':>10} "
          f"{'longest gap':>12}")
    for writer, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss"] for r in runs) / 2**20
        gap = statistics.median(r["gap"] for r in runs) * 1000
        rate = runs[0]["bytes"] / seconds / 2**30
        print(f"{writer:14} {seconds:7.2f}s {rate:7.2f} {seconds / base:7.2f}x "
              f"{rss:8.1f} MiB {gap:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
