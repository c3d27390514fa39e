#!/usr/bin/env python3
"""rclone against muxserver's WebDAV: a tree there and back, byte for byte.

Makes a tree of ``--files`` files of mixed sizes (most small, some of megabytes, a few
up to ``--largest``), starts ``python -m muxserver serve``, and with rclone's
on-the-fly WebDAV remote (vendor ``other``):

1. ``rclone sync`` the tree to the server;
2. ``rclone check`` (sizes; ``--download``: every byte) reports no difference;
3. a second ``rclone sync`` transfers nothing;
4. ``rclone sync`` the server's copy back to a third folder, compared byte for byte
   with the first.

Prints each step's wall time and the server's CPU seconds, and exits 1 on any
difference.

    python scripts/rclone_check.py [--files 1000] [--largest-mib 100] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import filecmp
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cpu_seconds, spawn_muxserver  # noqa: E402

MiB = 1024 * 1024


def make_tree(top: Path, files: int, largest: int, seed: int = 7) -> int:
    """``files`` files in nested folders; their total size."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        folder = top / f"d{i % 17}" / f"e{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        roll = rng.random()
        size = (largest if i == 0 else rng.randrange(largest // 4, largest) if roll < 0.003
                else rng.randrange(MiB, 8 * MiB) if roll < 0.03
                else rng.randrange(0, 64 * 1024))
        with open(folder / f"file {i:04}.bin", "wb") as f:
            f.write(rng.randbytes(min(size, MiB)) * (size // MiB) + rng.randbytes(size % MiB))
        total += size
    return total


def rclone(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(["rclone", *args], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        raise SystemExit(f"rclone {args[0]} failed ({done.returncode})")
    return time.monotonic() - started, done.stdout + done.stderr


def same_trees(a: Path, b: Path) -> bool:
    compared = filecmp.dircmp(a, b)
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, compared.common_files, shallow=False)
    return not mismatch and not errors and all(
        same_trees(a / sub, b / sub) for sub in compared.common_dirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--largest-mib", type=int, default=100)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        source, served, back = Path(work) / "source", Path(work) / "served", Path(work) / "back"
        for path in (source, served, back):
            path.mkdir()
        total = make_tree(source, args.files, args.largest_mib * MiB)
        print(f"tree: {args.files} files, {total / MiB:.0f} MiB", flush=True)
        server = spawn_muxserver(served, "--log-level", "warning", "--allow-delete",
                                 "--allow-overwrite", keep_output=True)
        ok = True
        try:
            remote = f":webdav,url='http://127.0.0.1:{server.port}/',vendor=other:"
            cpu = cpu_seconds(server.proc.pid)
            took, _ = rclone("sync", str(source), remote, "--transfers", "4")
            print(f"sync up:        {took:6.1f} s, server CPU "
                  f"{cpu_seconds(server.proc.pid) - cpu:.1f} s")
            took, out = rclone("check", str(source), remote)
            print(f"check (sizes):  {took:6.1f} s: {last_line(out)}")
            took, out = rclone("check", str(source), remote, "--download")
            print(f"check (bytes):  {took:6.1f} s: {last_line(out)}")
            took, out = rclone("sync", str(source), remote, "-v")
            sent = re.search(r"Transferred:\s+(\d+) / (\d+)", out)
            again = int(sent.group(1)) if sent else 0
            print(f"sync again:     {took:6.1f} s: {again} files transferred")
            ok = ok and again == 0
            cpu = cpu_seconds(server.proc.pid)
            took, _ = rclone("sync", remote, str(back), "--transfers", "4")
            print(f"sync down:      {took:6.1f} s, server CPU "
                  f"{cpu_seconds(server.proc.pid) - cpu:.1f} s")
            identical = same_trees(source, back) and same_trees(source, served)
            print(f"byte-identical: {identical}")
            ok = ok and identical
        finally:
            server.stop()
        refused = [line for line in server.output or [] if "refused" in line]
        print(f"server refusals: {len(refused)}")
        for line in refused[:5]:
            print("  " + line.rstrip())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing)"


if __name__ == "__main__":
    sys.exit(main())
