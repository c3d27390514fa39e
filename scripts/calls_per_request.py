#!/usr/bin/env python3
"""How many Python function calls a request costs the server, module by module:
muxserver against the two floors, the bare server (scripts/bare_server.py) and the flat
server (scripts/flat_server.py: the bare server plus muxserver's per-request checks),
under the many-clients load of ``bench.py --only many`` (each connection puts 16
files, then gets them back).

Calls are counted, not timed. On this shared VM a request's CPU time swings by a tenth
from one run to the next, and a change worth a few microseconds hides in that; the
number of calls hardly depends on the machine's speed or its neighbours (it moves by
a few tenths per request, with how the bytes happen to arrive), so it shows what a
change of the request path removed, and where the server's Python does more than
the floor's. A call is not a fixed cost: one-line calls cost next to nothing, so
compare CPU seconds with ``bench.py --only many`` as well.

Each server runs under ``cProfile``, switched on (SIGUSR1) only once it listens and
off again (SIGUSR2) once the load is over, so start-up is not counted.

    python scripts/calls_per_request.py                     # 200 connections, 64 KiB
    python scripts/calls_per_request.py --functions 30      # and the busiest functions
    python scripts/calls_per_request.py --code ../older     # another checkout instead
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import LISTENING, REPO, Spawned  # noqa: E402
from loadgen import LoadRun, many_clients_plans, raise_fd_limit  # noqa: E402

# Runs a server (the muxserver module, or a script's path) with cProfile switched on
# and off by signals; says on stdout when it has done each.
PROFILED = r"""
import cProfile, runpy, signal, sys
out, target, *argv = sys.argv[1:]
profile = cProfile.Profile()

def start(*_):
    profile.enable()
    print("profiling", flush=True)

def stop(*_):
    profile.disable()
    profile.dump_stats(out)
    print("profile written", flush=True)

signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
sys.argv = [target, *argv]
if target == "muxserver":
    runpy.run_module("muxserver", run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""

BUILTIN = "(built-in functions)"
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


class ProfiledServer:
    """A server process under PROFILED: it counts between ``start_counting`` and
    ``stop_counting``, which returns the counts."""

    def __init__(self, target: str, args: list[str], code: Path, out: Path) -> None:
        self.out, self.errors = out, out.with_suffix(".stderr")
        with open(self.errors, "wb") as errors:  # (its log, and what it said if it fails)
            self.proc = subprocess.Popen(
                [sys.executable, "-c", PROFILED, str(out), target, *args],
                cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                stdout=subprocess.PIPE, stderr=errors)
        match = self._wait_for(LISTENING)
        self.host, self.port = match.group(1).decode(), int(match.group(2))

    def _wait_for(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = pattern.search(line)
            if match:
                return match
        said = self.errors.read_text(errors="replace").splitlines()[-10:]
        raise SystemExit(f"the server ended (exit status {self.proc.wait()}) before "
                         f"printing {pattern.pattern!r}; the end of its output:\n"
                         + "\n".join(said))

    def start_counting(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)
        self._wait_for(re.compile(rb"^profiling"))

    def stop_counting(self) -> pstats.Stats:
        self.proc.send_signal(signal.SIGUSR2)
        self._wait_for(re.compile(rb"^profile written"))
        return pstats.Stats(str(self.out))

    def stop(self) -> None:
        Spawned(self.proc, self.host, self.port).stop()


def module_of(filename: str, code: Path) -> str:
    """The group a function's calls are counted in: its file below the checkout, a
    standard-library module, or the built-in functions."""
    if filename == "~":
        return BUILTIN
    path = Path(filename).resolve()
    for base, prefix in ((code, ""), (REPO, ""), (STDLIB, "(stdlib) ")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return filename  # (frozen modules, and anything else)


def count_calls(label: str, target: str, args: list[str], code: Path, clients: int,
                size: int, work: Path) -> tuple[collections.Counter[str],
                                               collections.Counter[str], int]:
    """Run the load once against one server; return its calls by module and by
    function, and the number of requests served."""
    root = work / f"root-{label}"
    root.mkdir()
    server = ProfiledServer(target, [*args, "--root", str(root)], code,
                            work / f"{label}.prof")
    try:
        puts, gets = many_clients_plans(clients, size)
        server.start_counting()
        run = LoadRun(server.host, server.port)
        run.run(puts, window=1)
        run.run(gets, window=1)
        stats = server.stop_counting()
    finally:
        server.stop()
    requests = sum(map(len, puts + gets))
    if run.errors or run.checked != requests:
        raise SystemExit(f"{label}: {run.errors} errors, {run.checked} of {requests} "
                         "requests answered correctly: the counts would mean nothing")
    by_module: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    for (filename, line, function), (_primitive, calls, *_rest) in stats.stats.items():
        module = module_of(filename, code)
        by_module[module] += calls
        where = function if module == BUILTIN else f"{module}:{line} {function}"
        by_function[where] += calls
    return by_module, by_function, requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="connections (200)")
    parser.add_argument("--file-kib", type=int, default=64, help="each file's size (64)")
    parser.add_argument("--code", type=Path, default=REPO,
                        help="the muxserver checkout to count (this one; the two "
                             "floors always run from this one)")
    parser.add_argument("--functions", type=int, default=0, metavar="N",
                        help="also list muxserver's N most called functions")
    args = parser.parse_args()
    raise_fd_limit()
    size = args.file_kib * 1024
    with tempfile.TemporaryDirectory(prefix="mux-calls-", dir="/dev/shm"
                                     if Path("/dev/shm").is_dir() else None) as scratch:
        work = Path(scratch)
        mux, mux_functions, requests = count_calls(
            "muxserver", "muxserver", ["serve", "--port", "0", "--no-console"],
            args.code.resolve(), args.clients, size, work)
        columns = {"muxserver": mux}
        for label, script in (("flat server", "flat_server.py"), ("bare server", "bare_server.py")):
            columns[label] = count_calls(label.split()[0], str(REPO / "scripts" / script),
                                         ["--port", "0"], REPO, args.clients, size, work)[0]
    print(f"Function calls per request: {args.clients} connections, each putting 16 files "
          f"of {args.file_kib} KiB and getting them back ({requests:,} requests)\n")
    print(f"{'module':44s}" + "".join(f"{label:>13s}" for label in columns))
    modules = sorted(set().union(*columns.values()) - {BUILTIN},
                     key=lambda m: [-counts[m] for counts in columns.values()])
    python = {label: sum(n for m, n in counts.items() if m != BUILTIN) / requests
              for label, counts in columns.items()}
    for module in modules:
        print(f"{module:44s}" + "".join(f"{_per(counts[module], requests):>13s}"
                                        for counts in columns.values()))
    print(f"{'all Python functions':44s}" + "".join(f"{n:13.1f}" for n in python.values()))
    print(f"{BUILTIN:44s}" + "".join(f"{_per(counts[BUILTIN], requests):>13s}"
                                     for counts in columns.values()))
    bare = python["bare server"]
    print(f"\nAgainst the bare server's Python calls per request: muxserver "
          f"{python['muxserver'] / bare:.2f}x ({python['muxserver'] - bare:.1f} more), "
          f"the flat server {python['flat server'] / bare:.2f}x "
          f"({python['flat server'] - bare:.1f} more).")
    if args.functions:
        print(f"\nmuxserver's {args.functions} most called functions, calls per request:")
        for where, calls in mux_functions.most_common(args.functions):
            print(f"{calls / requests:8.2f}  {where}")
    return 0


def _per(calls: int, requests: int) -> str:
    return f"{calls / requests:.2f}" if calls else "-"


if __name__ == "__main__":
    sys.exit(main())
