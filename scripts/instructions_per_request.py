#!/usr/bin/env python3
"""How many machine instructions a request costs the server in user space, counted
by valgrind's callgrind: muxserver against the flat and the bare server
(scripts/flat_server.py, scripts/bare_server.py), under the many-clients load of
``bench.py --only many`` (each connection puts 16 files, then gets them back).

Why count instructions. On this shared VM a request's CPU time swings by a tenth
from one run to the next, so a change worth 2 % cannot be seen in CPU seconds
without dozens of runs; and a count of Python calls (calls_per_request.py) does not
say what the calls cost. Callgrind executes the server on a simulated CPU and counts
every instruction it runs: the same code under the same load gives the same count to
within a few tenths of a percent, whatever else the machine is doing. It does not
count the kernel's side of the system calls (both servers make the same ones:
``strace -c``), nor cache misses; a count is user CPU work, not time.

The hash is counted apart. BLAKE3 picks its code by what the CPU offers, and
valgrind's simulated CPU has no AVX-512, so the hash costs more instructions here than
on the real CPU; the column "without the hash" is what the servers' own code and
Python cost, which is where they differ.

Each server runs under callgrind with counting switched off; ``callgrind_control``
switches it on once the server listens and a few warm-up requests are served, and off
after the load. Under valgrind a server runs some 20-50 times slower, so the load is
smaller than bench.py's (50 connections by default); the count per request hardly
depends on it.

    python scripts/instructions_per_request.py                 # muxserver, flat, bare
    python scripts/instructions_per_request.py --code ../older  # another checkout beside
    python scripts/instructions_per_request.py --code COPY      # a compiled copy
                                                  # (scripts/compiled_build.py), its floors too
    python scripts/instructions_per_request.py --only muxserver --server-args "--log-level warning"
    python scripts/instructions_per_request.py --phase puts     # the puts alone (or gets)
    python scripts/instructions_per_request.py --per-connection 1   # a connection a request

Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import LISTENING, REPO  # noqa: E402
from loadgen import LoadRun, many_clients_plans, raise_fd_limit  # noqa: E402

HASH_OBJECT = re.compile(r"blake3")  # the shared object of the BLAKE3 module
WARM_UP_CLIENTS = 4


class CountedServer:
    """A server under callgrind, counting nothing until ``start_counting``."""

    def __init__(self, command: list[str], code: Path, out: Path) -> None:
        self.out = out
        self.log = out.with_suffix(".stderr")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 f"--callgrind-out-file={out}", *command],
                cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = LISTENING.search(line)
            if match:
                self.host, self.port = match.group(1).decode(), int(match.group(2))
                break
        else:
            said = self.log.read_text(errors="replace").splitlines()[-10:]
            raise SystemExit(f"the server ended (exit status {self.proc.wait()}) before "
                             "it listened; the end of its output:\n" + "\n".join(said))
        # Its output is drained: a server whose pipe fills up blocks.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _control(self, switch: str) -> None:
        subprocess.run(["callgrind_control", "--instr=" + switch, str(self.proc.pid)],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    def start_counting(self) -> None:
        self._control("on")

    def stop_counting(self) -> None:
        self._control("off")

    def stop(self) -> tuple[int, int]:
        """End the server; return (all instructions counted, those in the hash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        total = hashing = 0
        for part in self.out.parent.glob(self.out.name + "*"):  # (one file per process)
            part_total, part_hashing = instructions_by_object(part)
            total += part_total
            hashing += part_hashing
        return total, hashing


def instructions_by_object(path: Path) -> tuple[int, int]:
    """(all instructions, those of the hash's shared object) in one callgrind file.

    The file lists each function's own cost lines after an ``ob=`` line naming its
    shared object; a ``calls=`` line's next cost line is what the call cost the callee
    (counted again under the callee: skipped here, so nothing counts twice)."""
    objects: dict[str, str] = {}  # callgrind names an object once, then by its number
    current, hashing, total, skip = "", 0, 0, False
    with open(path, errors="replace") as lines:
        for line in lines:
            first = line[:1]
            if first.isdigit() or first in "+-*":
                if skip:
                    skip = False
                    continue
                cost = int(line.split()[-1])
                total += cost
                if HASH_OBJECT.search(current):
                    hashing += cost
            elif line.startswith("ob="):
                current = _compressed_name(line[3:].strip(), objects)
            elif line.startswith("cob="):  # (a callee's object: may name it first)
                _compressed_name(line[4:].strip(), objects)
            elif line.startswith("calls="):
                skip = True
    return total, hashing


def _compressed_name(text: str, names: dict[str, str]) -> str:
    """callgrind's name compression: "(3) /lib/x.so" defines (3), "(3)" refers to it."""
    match = re.match(r"\((\d+)\)\s*(.*)", text)
    if not match:
        return text
    number, name = match.groups()
    if name:
        names[number] = name
    return names.get(number, text)


def count_instructions(label: str, command: list[str], code: Path, clients: int,
                       size: int, work: Path, phase: str = "both",
                       per_connection: int = 16) -> tuple[int, int, int]:
    """Run the load once against one server under callgrind: (instructions, of them
    in the hash, requests counted). ``phase``: count the puts, the gets, or both (the
    gets need the puts' files: those run uncounted). ``per_connection``: each client's
    16 puts (and 16 gets) go over connections of that many requests."""
    root = work / f"root-{label}"
    root.mkdir()
    server = CountedServer([*command, "--root", str(root)], code, work / f"{label}.callgrind")
    try:
        warm_puts, warm_gets = many_clients_plans(WARM_UP_CLIENTS, size)
        warm = LoadRun(server.host, server.port)
        warm.run(warm_puts, window=1, until_closed=True)  # (imports, caches filled)
        warm.run(warm_gets, window=1, until_closed=True)
        for folder in list(root.iterdir()):
            shutil.rmtree(folder)  # the load puts the same names again
        puts, gets = (in_connections_of(plan, per_connection)
                      for plan in many_clients_plans(clients, size))
        run = LoadRun(server.host, server.port)
        if phase != "gets":
            server.start_counting()
        # (Each run waits until the server has closed every connection: a connection's
        # end is counted with the phase that opened it.)
        run.run(puts, window=1, until_closed=True)
        if phase == "gets":
            server.start_counting()
        elif phase == "puts":
            server.stop_counting()
        run.run(gets, window=1, until_closed=True)
        if phase != "puts":
            server.stop_counting()
    finally:
        total, hashing = server.stop()
    requests = sum(map(len, puts + gets))
    if run.errors or run.checked != requests or warm.errors:
        raise SystemExit(f"{label}: {run.errors} errors, {run.checked} of {requests} "
                         "requests answered correctly: the count would mean nothing")
    if not total:
        raise SystemExit(f"{label}: callgrind counted nothing (see {server.log})")
    counted = {"both": puts + gets, "puts": puts, "gets": gets}[phase]
    return total, hashing, sum(map(len, counted))


def in_connections_of(plan: list[list], requests: int) -> list[list]:
    """The same requests, in the same order, over connections of ``requests`` each."""
    return [conn[i:i + requests] for conn in plan for i in range(0, len(conn), requests)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="clients (50)")
    parser.add_argument("--file-kib", type=int, default=64, help="each file's size (64)")
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another muxserver checkout to count beside this one "
                             "(repeatable)")
    parser.add_argument("--only", choices=("muxserver", "flat", "bare"), action="append",
                        help="count only these servers (repeatable; default: all three)")
    parser.add_argument("--phase", choices=("both", "puts", "gets"), default="both",
                        help="count the puts, the gets, or both (default): a put "
                             "hashes its body, so the two differ most beside the hash")
    parser.add_argument("--per-connection", type=int, default=16, choices=range(1, 17),
                        metavar="N", help="requests per connection (16: each client's "
                        "puts over one connection, then its gets over another; fewer: "
                        "over more connections, all opened at the start of the phase as "
                        "the load opens its own); 1 counts a connection's own cost "
                        "(accept, set-up, close, its log lines) in every request")
    parser.add_argument("--server-args", default="",
                        help="more arguments for every muxserver counted")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    raise_fd_limit()
    only = set(args.only or ("muxserver", "flat", "bare"))
    mux = [sys.executable, "-m", "muxserver", "serve", "--port", "0", "--no-console",
           *shlex.split(args.server_args)]
    servers: list[tuple[str, list[str], Path]] = []
    if "muxserver" in only:
        servers.append(("muxserver", mux, REPO))
        servers += [(f"muxserver ({code})", mux, code.resolve()) for code in args.code]
    for name in ("flat", "bare"):
        if name in only:
            for code in (REPO, *args.code):  # (a copy's floor runs on that copy's modules)
                label = f"{name} server" + ("" if code == REPO else f" ({code})")
                servers.append((label, [sys.executable, str(code.resolve() / "scripts" /
                                                            f"{name}_server.py"), "--port", "0"],
                                code.resolve()))
    counts: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mux-instructions-", dir="/dev/shm"
                                     if Path("/dev/shm").is_dir() else None) as scratch:
        for number, (label, command, code) in enumerate(servers):
            total, hashing, requests = count_instructions(
                f"server{number}", command, code, args.clients, args.file_kib * 1024,
                Path(scratch), args.phase, args.per_connection)
            counts[label] = (total / requests, hashing / requests)
    counted = {"both": "", "puts": ", the puts counted", "gets": ", the gets counted"}
    over = ("" if args.per_connection == 16 else
            f", over connections of {args.per_connection} request"
            + ("s" if args.per_connection > 1 else ""))
    print(f"User-space instructions per request (callgrind): {args.clients} clients, "
          f"each putting 16 files of {args.file_kib} KiB and getting them back{over} "
          f"({requests:,} requests{counted[args.phase]})\n")
    print(f"{'server':40s}{'all':>12s}{'the hash':>12s}{'without the hash':>18s}")
    for label, (total, hashing) in counts.items():
        print(f"{label:40s}{total:12,.0f}{hashing:12,.0f}{total - hashing:18,.0f}")
    if "bare server" in counts and len(counts) > 1:
        bare = counts["bare server"][0] - counts["bare server"][1]
        print("\nWithout the hash, against the bare server's: " + ", ".join(
            f"{label} {(total - hashing) / bare:.2f}x" for label, (total, hashing)
            in counts.items() if label != "bare server") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
