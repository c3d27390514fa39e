#!/usr/bin/env python3
"""muxserver benchmarks: bulk transfers, many clients, small files, an idle crowd, and
the cost of the live console. Prints a table (and JSON with --json).

Every scenario runs on loopback with its files in /dev/shm. Contenders alternate run by
run (A B, B A, ...), and the table shows the median, min and max and, for bulk
transfers, the ratio to socat measured in the same run, and each row's CPU by side
(client, server) and kind (user: the code; system: the kernel, and the host's spells).
Missing peers (socat, curl, pyftpdlib) are reported as skipped.

    python scripts/bench.py                       # everything, about ten minutes
    python scripts/bench.py --only bulk --runs 5  # one scenario
    python scripts/bench.py --json
    python scripts/bench.py --only bulk,many --baseline ../older-checkout   # A/B
    python scripts/bench.py --only many --compiled   # and the compiled build (setup.py)

Targets (checked and printed): every bulk transfer's CPU (client and server) within
1.15x the floor's (socat's copy and one BLAKE3 pass at each end, in the same run), a
bulk put of a fresh file within 1.25x socat's time, a put of a file whose digest is
remembered and a get within 1.0x socat's time and faster than pyftpdlib + curl in the
same run; many clients with 0 errors and p99 per-file latency under 150 ms, server CPU
per request and p99 within 1.3x the bare server's and files/s at least 0.75x its (and,
with --baseline, 1.5x the baseline's files/s; with --compiled, the same three for the
compiled build against the bare server run on the same compiled modules); an
idle crowd of 10,000 connections under 4 KiB of server RSS each and stat p99 under
50 ms; the console costing under 5 %.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from benchlib import (GiB, alternate, console_cost, cpu_split, make_file,
                      paired_ratios, print_console_cost, scratch_dir, spawn_muxserver,
                      summary, timed, free_port, wait_listening)
import compiled_build
from loadgen import idle_crowd, many_clients, small_files

SCENARIOS = ("bulk", "many", "small", "idle", "console")
#: The bulk row every transfer's CPU is measured against: socat, and a hash at each end.
FLOOR = "floor: socat + 2 BLAKE3"
#: A bulk transfer's CPU (client and server) at most this many times the floor's.
CPU_TO_FLOOR = 1.15


# --------------------------------------------------------------------------- bulk


def run_socat(src: Path, dest: Path) -> float:
    """file -> TCP -> file with 1 MiB buffers; time from the send to the file being whole."""
    port = free_port()
    receiver = subprocess.Popen(["socat", "-b", "1048576", "-u",
                                 f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                                 f"OPEN:{dest},creat,trunc"])
    try:
        wait_listening(port)
        started = time.perf_counter()
        subprocess.run(["socat", "-b", "1048576", "-u", f"OPEN:{src}",
                        f"TCP:127.0.0.1:{port}"], check=True)
        receiver.wait(timeout=120)
        return time.perf_counter() - started
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


def hash_cpu(path: Path) -> None:
    """One BLAKE3 pass over ``path`` in a forked child (its CPU time counts as a child's,
    with no interpreter to start): what the floor adds to socat for each end, which must
    hash what it sends or stores."""
    import blake3

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            hasher, buf = blake3.blake3(), bytearray(1 << 20)
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    hasher.update(memoryview(buf)[:n])
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError(f"hashing {path} failed")


def run_floor(src: Path, dest: Path) -> float:
    """The floor of a verified transfer: socat's copy (its wall time is the row's) and one
    BLAKE3 pass at each end (in its CPU time)."""
    wall = run_socat(src, dest)
    hash_cpu(src)
    hash_cpu(dest)
    return wall


def touch_memory(work: Path, size: int) -> None:
    """Write (and delete) ``size`` bytes in ``work``: this VM backs a page the first
    time it is touched, and that first touch must not land in a timed run."""
    path = work / "touch.bin"
    block = bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
    path.unlink()


def bulk_files(args: argparse.Namespace) -> int:
    """How many copies of the bulk file exist at once, at most: the source and its fresh
    copy; socat's, the floor's, the gets' two and pyftpdlib's in out/; two in each
    server's root; pyftpdlib's own. (The memory touched first, 4 copies, is gone by then.)"""
    return 2 + 5 + 2 * (2 if args.baseline else 1) + 1


def bulk(args: argparse.Namespace, work: Path) -> dict:
    size = args.size_mib << 20
    touch_memory(work, 4 * size)  # (the files every contender writes, and their copies)
    src = work / "bulk.bin"
    make_file(src, size)
    out = work / "out"
    out.mkdir()
    roots = {"muxserver": work / "muxroot"}
    if args.baseline:  # the same client against another checkout's server
        roots["baseline"] = work / "baseroot"
    servers = {}
    for label, root in roots.items():
        root.mkdir()
        servers[label] = spawn_muxserver(root, code=Path(args.baseline).resolve()
                                         if label == "baseline" else None)
    ftp = start_pyftpdlib(work) if have_pyftpdlib() else None
    copies = itertools.count()

    def fresh_copy() -> Path:
        """The file again, under a new inode (untimed): nobody has hashed it yet."""
        for old in work.glob("fresh-*.bin"):
            old.unlink()
        copy = work / f"fresh-{next(copies)}.bin"
        shutil.copyfile(src, copy)  # (the data, not the xattr of its remembered digest)
        return copy

    contenders = {"socat": lambda: run_socat(src, out / "socat.bin"),
                  FLOOR: lambda: run_floor(src, out / "floor.bin")}
    pids: dict[str, int] = {}
    for label, server in servers.items():
        runs = _muxserver_runs(server, roots[label], src, out, fresh_copy)
        contenders.update({f"{label} {what}": run for what, run in runs.items()})
        pids.update({f"{label} {what}": server.proc.pid for what in runs})
    if ftp is not None:
        ftp_port = ftp[1]
        ftp_root = work / "ftproot"
        contenders["pyftpdlib+curl put"] = lambda: fresh(ftp_root / "ftp.bin") or timed(
            lambda: _run(["curl", "-s", "-T", str(src), f"ftp://127.0.0.1:{ftp_port}/ftp.bin"]))
        contenders["pyftpdlib+curl get"] = lambda: fresh(out / "ftp.bin") or timed(
            lambda: _run(["curl", "-s", "-o", str(out / "ftp.bin"),
                          f"ftp://127.0.0.1:{ftp_port}/ftp.bin"]))
        pids.update({name: ftp[0].pid for name in contenders if name.startswith("pyftpdlib")})
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    #: each run's CPU by side and kind: (client user, client system, server user,
    #: server system); socat and the floor are all "client" (every process a child)
    parts: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in contenders}

    def one_run(name: str, run) -> float:
        """A run's wall time; its CPU time goes to ``cpu`` and ``parts``. Every run
        starts with a file's worth of memory touched just before it (untimed): a fresh
        row's untimed copy took the pages touched earlier, and its writer, left with
        pages the host must back again, spent about twice the system time of any other
        row's writer (docs/PERFORMANCE.md, "Each run's writer")."""
        touch_memory(work, size)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        served = cpu_split(pids[name]) if name in pids else (0.0, 0.0)
        wall = run()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        now = cpu_split(pids[name]) if name in pids else (0.0, 0.0)
        split = (after.ru_utime - children.ru_utime, after.ru_stime - children.ru_stime,
                 now[0] - served[0], now[1] - served[1])
        parts[name].append(split)
        cpu[name].append(sum(split))
        return wall

    try:
        if shutil.which("socat") is None:
            contenders.pop("socat")
            contenders.pop(FLOOR)
        for run in contenders.values():  # warm-up: page cache, guest memory, hash xattrs
            run()
        timings = alternate(contenders, args.runs, one_run)
    finally:
        for server in servers.values():
            server.stop()
        if ftp is not None:
            ftp[0].terminate()
            ftp[0].wait()
    results = {name: summary(samples) for name, samples in timings.items()}
    base = results.get("socat")
    for name, stat in results.items():
        stat["mib_per_s"] = args.size_mib / stat["median"]
        stat["ratio_to_socat"] = stat["median"] / base["median"] if base else None
        per_gib = 1024 / args.size_mib
        stat["cpu_s_per_gib"] = statistics.median(cpu[name]) * per_gib
        # (each part's own median: they need not come from the same run)
        stat["parts_s_per_gib"] = [statistics.median(run[i] for run in parts[name]) * per_gib
                                   for i in range(4)]
    user = {name: [run[0] + run[2] for run in runs] for name, runs in parts.items()}
    # Against the floor, round by round: the median of each round's own ratio (the host's
    # slow spells last seconds, and then weigh on both sides of one ratio; see many()).
    for name, stat in results.items():
        stat["cpu_to_floor"] = (statistics.median(paired_ratios(cpu, name, FLOOR))
                                if FLOOR in cpu else None)
        stat["user_to_floor"] = (statistics.median(paired_ratios(user, name, FLOOR))
                                 if FLOOR in cpu else None)
        stat["has_server"] = name in pids  # (socat's and the floor's processes: all ours)
    skipped = [] if ftp is not None else ["pyftpdlib+curl (pip install pyftpdlib; curl)"]
    if base is None:
        skipped.append("socat (apt-get install socat)")
    return {"size_mib": args.size_mib, "results": results, "skipped": skipped}


def _muxserver_runs(server, root: Path, src: Path, out: Path,
                    fresh_copy: Callable[[], Path]) -> dict[str, Callable[[], float]]:
    """The timed muxserver transfers against one server, each after its untimed set-up.

    Each put writes a file whose previous copy was deleted just before, untimed: the
    analogue of socat's truncate-then-write (see docs/PERFORMANCE.md on overwrites)."""
    cli = [sys.executable, "-m", "muxserver"]
    port_args = ["--port", str(server.port), "-q"]

    def put(path: Path) -> float:
        fresh(root / "bulk.bin")
        return timed(lambda: _run([*cli, "put", str(path), "--as", "bulk.bin", *port_args]))

    def get(name: str) -> float:
        fresh(out / name)
        return timed(lambda: _run([*cli, "get", name, "-o", str(out), *port_args]))

    def get_fresh() -> float:
        """The file again in the server's root, under a new inode (untimed): the server
        has not hashed it, so a get of it hashes it while sending it (a trailer)."""
        fresh(root / "fresh-get.bin")
        shutil.copyfile(src, root / "fresh-get.bin")
        return get("fresh-get.bin")

    return {"put": lambda: put(src), "put, fresh file": lambda: put(fresh_copy()),
            "get": lambda: get("bulk.bin"), "get, fresh file": get_fresh}


def fresh(path: Path) -> None:
    """Delete the previous copy (returns None, so ``fresh(p) or timed(...)`` reads well)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def have_pyftpdlib() -> bool:
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        return False
    return shutil.which("curl") is not None


def start_pyftpdlib(work: Path) -> tuple[subprocess.Popen, int]:
    root = work / "ftproot"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p",
                             str(port), "-w", "-d", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ftp(port)
    return proc, port


def _wait_ftp(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pyftpdlib did not start")


# ------------------------------------------------------------------- many clients


def many(args: argparse.Namespace, work: Path) -> dict:
    """The many-clients load with --workers 1 and --workers 2, --log-level warning, the
    bare server (scripts/bare_server.py: the same storage guarantees and nothing else,
    the floor), the flat server (scripts/flat_server.py: the floor plus muxserver's
    per-request checks, without its layers) and a baseline checkout if given,
    alternating round by round; medians. With --compiled, also the compiled build
    (scripts/compiled_build.py, made first) beside the bare server run on the same
    compiled modules (its frame decoder is one of them)."""
    # (workers 1 runs next to bare, and to the baseline, in every round: the host's slow
    # spells last seconds, and a pair that shares one is compared fairly)
    settings: dict[str, dict] = {}
    if args.baseline:
        settings["baseline"] = {"workers": 1, "code": Path(args.baseline).resolve(),
                                "digest": args.baseline_digest or args.digest}
    settings.update({"workers 1": {"workers": 1}, "bare": {"floor": "bare_server.py"},
                     "flat": {"floor": "flat_server.py"},
                     "workers 2": {"workers": 2},
                     "warning log": {"workers": 1, "extra": ["--log-level", "warning"]}})
    if args.compiled:
        print("building the compiled copy...", file=sys.stderr, flush=True)
        copy = compiled_build.build(work / "compiled")
        settings.update({"compiled": {"workers": 1, "code": copy},
                         "bare, compiled": {"floor": "bare_server.py", "code": copy}})
    rounds = itertools.count()
    touch_memory(work, 2 << 30)  # (a run writes 1 GiB: 1,000 x 16 files of 64 KiB)

    def one_run(name: str, setting: dict) -> dict:
        run_dir = work / f"run{next(rounds)}"
        run_dir.mkdir()
        try:
            return many_clients(args, run_dir, **setting)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    runs = alternate(settings, args.many_rounds, one_run)
    results = {}
    for name, samples in runs.items():
        results[name] = {
            "files_per_s": statistics.median(r["files_per_s"] for r in samples),
            "p50_ms": statistics.median(r["p50_ms"] for r in samples),
            "p99_ms": statistics.median(r["p99_ms"] for r in samples),
            "p99_seen_ms": statistics.median(r["p99_seen_ms"] for r in samples),
            "errors": sum(r["errors"] for r in samples),
            "checked": sum(r["checked"] for r in samples),
            "server_cpu": statistics.median(r["server_cpu"] for r in samples),
            "server_cpu_runs": [r["server_cpu"] for r in samples],  # (round by round)
            "server_user_runs": [r["server_user"] for r in samples],
            "files_per_s_runs": [r["files_per_s"] for r in samples],
            "p99_ms_runs": [r["p99_ms"] for r in samples],
            **{f"{key}_runs": [r[key] for r in samples]
               for key in ("put_cpu", "get_cpu", "put_p99_ms", "get_p99_ms", "put_aside_ms",
                           "get_aside_ms")},
            "generator_cpu": statistics.median(r["generator_cpu"] for r in samples),
            "rounds": {name: {stat: statistics.median(r["rounds"][name][stat] for r in samples)
                              for stat in ("p50_ms", "p99_ms")}
                       for name in samples[0].get("rounds", {})},
            "runs": len(samples)}
    ours, theirs = args.digest, args.baseline_digest or args.digest
    return {"description": runs["workers 1"][0]["description"], "results": results,
            "digests": f"{ours} against {theirs}" if ours != theirs else ours}


# ------------------------------------------------------------------------ console


def console(args: argparse.Namespace, work: Path) -> dict:
    src = work / "console.bin"
    make_file(src, args.size_mib << 20)
    return {"size_mib": args.size_mib, **console_cost(src, args.runs, work)}


# -------------------------------------------------------------------------- report


def check_targets(report: dict) -> list[tuple[str, bool, str]]:
    checks = []
    bulk_report = report.get("bulk")
    if bulk_report and FLOOR in bulk_report["results"]:
        results = bulk_report["results"]
        for name, stat in results.items():
            if name.startswith("muxserver "):
                checks.append((f"bulk {name[10:]}: CPU <= {CPU_TO_FLOOR}x the floor's "
                               f"({stat['ratio_to_socat']:.2f}x socat's wall time)",
                               stat["cpu_to_floor"] <= CPU_TO_FLOOR,
                               f"{stat['cpu_to_floor']:.2f}x"))
    if bulk_report and "socat" in bulk_report["results"]:
        results = bulk_report["results"]
        fresh = results["muxserver put, fresh file"]["ratio_to_socat"]
        checks.append(("bulk put of a fresh file <= 1.25x socat's time", fresh <= 1.25,
                       f"{fresh:.2f}x"))
        for direction in ("put", "get"):
            ratio = results[f"muxserver {direction}"]["ratio_to_socat"]
            checks.append((f"bulk {direction} <= 1.0x socat's time", ratio <= 1.0,
                           f"{ratio:.2f}x"))
            peer = results.get(f"pyftpdlib+curl {direction}")
            if peer:
                ours = results[f"muxserver {direction}"]["median"]
                checks.append((f"bulk {direction} faster than pyftpdlib+curl",
                               ours < peer["median"], f"{ours:.3f} s vs {peer['median']:.3f} s"))
    many_report = report.get("many")
    if many_report:
        one = many_report["results"]["workers 1"]
        errors = sum(r["errors"] for r in many_report["results"].values())
        checks.append(("many clients: 0 errors", errors == 0, str(errors)))
        checks.append(("many clients: p99 < 150 ms (workers 1)", one["p99_ms"] < 150,
                       f"{one['p99_ms']:.0f} ms"))
        bare = many_report["results"].get("bare")
        if bare:  # (the floor of a request: the same guarantees and nothing else)
            checks.extend(floor_checks(one, bare))
        compiled = many_report["results"].get("compiled")
        if compiled:  # (the same targets, the build and its floor both compiled)
            floor = many_report["results"]["bare, compiled"]
            checks.extend((f"{name} (compiled build)", ok, value)
                          for name, ok, value in floor_checks(compiled, floor))
        baseline = many_report["results"].get("baseline")
        if baseline:
            ratio = paired_ratio(one, baseline, "files_per_s")
            digests = many_report["digests"]
            checks.append((f"many clients: files/s >= 1.5x the baseline ({digests})",
                           ratio >= 1.5, f"{ratio:.2f}x"))
    idle = report.get("idle")
    if idle:
        checks.append((f"idle crowd: {idle['connections']} held", idle["held"],
                       str(idle["connections"])))
        checks.append(("idle crowd: < 4 KiB RSS per connection",
                       idle["rss_per_connection"] < 4096,
                       f"{idle['rss_per_connection']:.0f} B"))
        checks.append(("idle crowd: stat p99 < 50 ms", idle["stat_p99_ms"] < 50,
                       f"{idle['stat_p99_ms']:.1f} ms"))
    con = report.get("console")
    if con:
        checks.append(("console costs < 5 % (median of paired ratios)",
                       con["paired_ratio"] <= 1.05, f"{con['paired_ratio']:.3f}x"))
    return checks


def print_report(report: dict, args: argparse.Namespace) -> None:
    print(f"machine: {report['machine']}")
    if "bulk" in report:
        b = report["bulk"]
        print(f"\nBulk: one {b['size_mib']} MiB file, {report['runs']} runs each, alternating")
        print(f"{'contender':<27}{'median s':>10}{'min s':>8}{'max s':>8}{'MiB/s':>8}"
              f"{'vs socat':>10}{'CPU s/GiB':>11}{'vs floor':>10}")
        for name, s in b["results"].items():
            ratio = f"{s['ratio_to_socat']:.2f}x" if s["ratio_to_socat"] else "-"
            floor = f"{s['cpu_to_floor']:.2f}x" if s.get("cpu_to_floor") is not None else "-"
            print(f"{name:<27}{s['median']:>10.3f}{s['min']:>8.3f}{s['max']:>8.3f}"
                  f"{s['mib_per_s']:>8.0f}{ratio:>10}{s['cpu_s_per_gib']:>11.2f}{floor:>10}")
        print("  (CPU: client and server together, user + system, median of the runs; the "
              "floor: socat's copy and one BLAKE3 pass at each end, measured in the same "
              "run; 'vs floor': the median of each round's own ratio; every run "
              "starts with a file's worth of memory touched just before it, untimed)")
        print("\nWhere the CPU went, s/GiB (medians): the code runs in user time; the "
              "host's spells (fresh\npages for the file being written) land in system "
              "time, on whichever side writes it")
        print(f"{'contender':<27}{'client user':>12}{'system':>8}{'server user':>13}"
              f"{'system':>8}{'user vs floor':>15}")
        for name, s in b["results"].items():
            c_user, c_sys, s_user, s_sys = s["parts_s_per_gib"]
            served = (f"{s_user:>13.2f}{s_sys:>8.2f}" if s["has_server"]
                      else f"{'-':>13}{'-':>8}")
            floor = f"{s['user_to_floor']:.2f}x" if s.get("user_to_floor") is not None else "-"
            print(f"{name:<27}{c_user:>12.2f}{c_sys:>8.2f}{served}{floor:>15}")
        for name, s in b["results"].items():
            theirs = b["results"].get(name.replace("muxserver ", "baseline ", 1))
            if name.startswith("muxserver ") and theirs:
                print(f"  {name[10:]}: baseline / muxserver {theirs['median'] / s['median']:.2f}x"
                      f" wall, {theirs['cpu_s_per_gib'] / s['cpu_s_per_gib']:.2f}x CPU "
                      "(above 1: this checkout is faster)")
        for skipped in b["skipped"]:
            print(f"  skipped: {skipped}")
    if "many" in report:
        m = report["many"]
        print(f"\nMany clients: {m['description']}; median of "
              f"{next(iter(m['results'].values()))['runs']} alternating runs each")
        print(f"{'server':<15}{'files/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 seen':>10}"
              f"{'errors':>8}{'server CPU s':>14}{'(min-max)':>12}{'generator CPU s':>17}")
        for name, r in m["results"].items():
            spread = f"{min(r['server_cpu_runs']):.2f}-{max(r['server_cpu_runs']):.2f}"
            print(f"{name:<15}{r['files_per_s']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                  f"{r['p99_seen_ms']:>10.1f}{r['errors']:>8}{r['server_cpu']:>14.2f}"
                  f"{spread:>12}{r['generator_cpu']:>17.2f}")
        print("  (2 GiB of /dev/shm were written and deleted first: this VM backs a page the "
              "first time it is touched)")
        print("  (latency: from the request's first byte sent to the kernel's receive time "
              "of the reply's last byte; 'seen': to when the generator got round to it)")
        one, two = m["results"]["workers 1"], m["results"]["workers 2"]
        print(f"  workers 2 / workers 1: {two['files_per_s'] / one['files_per_s']:.2f}x "
              f"files/s (2 cores, one of them busy with the load generator)")
        bare = m["results"].get("bare")
        if bare:
            print(f"  workers 1 / bare, the median of each round's ratio (the two run side "
                  f"by side): {against(one, bare)} (bare: the same storage guarantees, none "
                  "of the rest; see scripts/bare_server.py)")
            print(f"    by phase: {by_phase(one, bare)}")
            flat = m["results"].get("flat")
            if flat:
                print(f"  flat / bare: {against(flat, bare)} (flat: muxserver's per-request "
                      "checks called in one flat path; see scripts/flat_server.py)")
        if args.by_round:
            print("  latency by round, workers 1 (the k-th request of every connection; "
                  "medians of the runs):")
            rounds = one["rounds"]
            for k in range(1, 17):
                put, get = rounds.get(f"put {k}"), rounds.get(f"get {k}")
                if put and get:
                    print(f"    {k:>2}  put p50 {put['p50_ms']:6.1f} p99 {put['p99_ms']:6.1f}   "
                          f"get p50 {get['p50_ms']:6.1f} p99 {get['p99_ms']:6.1f}  ms")
        if "compiled" in m["results"]:
            print(f"  compiled / bare, compiled: "
                  f"{against(m['results']['compiled'], m['results']['bare, compiled'])} (both "
                  "on the compiled modules: setup.py, scripts/compiled_build.py); compiled / "
                  f"workers 1: {paired_ratio(m['results']['compiled'], one, 'server_cpu'):.2f}x "
                  "server CPU")
            print(f"    by phase: "
                  f"{by_phase(m['results']['compiled'], m['results']['bare, compiled'])}")
        if "baseline" in m["results"]:
            baseline = m["results"]["baseline"]
            print(f"  workers 1 / baseline, the median of each round's ratio: "
                  f"{paired_ratio(one, baseline, 'files_per_s'):.2f}x files/s, "
                  f"{paired_ratio(one, baseline, 'server_cpu'):.2f}x server CPU, "
                  f"{paired_ratio(one, baseline, 'server_user'):.2f}x in user time "
                  f"(digests: {m['digests']})")
    for key, title in (("small", "Small files"),):
        if key in report:
            r = report[key]
            print(f"\n{title}: {r['description']}")
            print(f"  total {r['seconds']:.2f} s, {r['files_per_s']:.0f} files/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}, "
                  f"hashes checked {r['checked']}")
            if "server_cpu" in r:
                print(f"  CPU: server {r['server_cpu']:.2f} s, load generator "
                      f"{r['generator_cpu']:.2f} s (2 cores)")
    if "idle" in report:
        r = report["idle"]
        print(f"\nIdle crowd: {r['connections']} idle connections held: {r['held']}")
        print(f"  server RSS {r['rss_before'] / 2**20:.1f} -> {r['rss_after'] / 2**20:.1f} MiB"
              f" = {r['rss_per_connection']:.0f} B per connection; stat on a fresh "
              f"connection p50 {r['stat_p50_ms']:.1f} ms, p99 {r['stat_p99_ms']:.1f} ms")
    if "console" in report:
        print()
        print_console_cost(report["console"], report["runs"])
    print("\nTargets:")
    for name, ok, value in report["targets"]:
        print(f"  [{'ok' if ok else 'MISSED'}] {name}: {value}")
    print(targets_line(report["targets"]))


def paired_ratio(ours: dict, theirs: dict, key: str) -> float:
    """The median of ours / theirs round by round (benchlib.paired_ratios): two
    contenders that ran side by side met the same host, and a slow spell of the host
    (seconds long, seen to double a run's CPU here) then weighs on both sides of one
    ratio instead of on one median."""
    runs = {"ours": ours[f"{key}_runs"], "theirs": theirs[f"{key}_runs"]}
    return statistics.median(paired_ratios(runs, "ours", "theirs"))


def against(ours: dict, floor: dict) -> str:
    """A many-clients contender against a floor that ran beside it, round by round."""
    return (f"{paired_ratio(ours, floor, 'files_per_s'):.2f}x files/s, "
            f"{paired_ratio(ours, floor, 'server_cpu'):.2f}x server CPU "
            f"({paired_ratio(ours, floor, 'server_user'):.2f}x of it in user time, where the "
            f"Python runs), {paired_ratio(ours, floor, 'p99_ms'):.2f}x p99")


def by_phase(ours: dict, floor: dict) -> str:
    """``against``, the puts and the gets apart (each round's ratio, their median), and
    the part of a connection's cycle that is not the request's latency (the load
    generator's: medians, ours and the floor's). A closed loop's latency is its cycle
    less that part, so a latency ratio is above the cycle's (the CPU's) ratio."""
    return "; ".join(
        f"{phase}s {paired_ratio(ours, floor, f'{phase}_cpu'):.2f}x server CPU, "
        f"{paired_ratio(ours, floor, f'{phase}_p99_ms'):.2f}x p99 (the generator's part of "
        f"a cycle {statistics.median(ours[f'{phase}_aside_ms_runs']):.0f} ms, "
        f"{statistics.median(floor[f'{phase}_aside_ms_runs']):.0f} ms)"
        for phase in ("put", "get"))


def floor_checks(ours: dict, bare: dict) -> list[tuple[str, bool, str]]:
    """The many-clients targets against the bare server that ran beside ``ours``."""
    checks = []
    for what, key, most in (("server CPU per request", "server_cpu", 1.3), ("p99", "p99_ms", 1.3)):
        ratio = paired_ratio(ours, bare, key)
        checks.append((f"many clients: {what} <= {most}x the bare server's", ratio <= most,
                       f"{ratio:.2f}x"))
    ratio = paired_ratio(ours, bare, "files_per_s")
    checks.append(("many clients: files/s >= 0.75x the bare server's", ratio >= 0.75,
                   f"{ratio:.2f}x"))
    return checks


def targets_line(targets: list[tuple[str, bool, str]]) -> str:
    """The whole verdict in one line: how many targets hold, and which are missed."""
    missed = [name for name, ok, _ in targets if not ok]
    held = len(targets) - len(missed)
    if not missed:
        return f"targets: all {held} hold"
    return f"targets: {held} of {len(targets)} hold; missed: " + "; ".join(missed)


def cache_bytecode(work: Path) -> None:
    """Let every Python this benchmark starts keep its compiled modules (in ``work``): an
    installed client has them, so a client that compiles muxserver's modules at every
    start (PYTHONDONTWRITEBYTECODE, set on some machines) would be charged about 0.03 s
    of CPU per transfer that no user pays. The warm-up runs write them."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "bytecode")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs per contender")
    parser.add_argument("--size-mib", type=int, default=1024, help="bulk file size")
    parser.add_argument("--clients", type=int, default=1000, help="many-clients connections")
    parser.add_argument("--file-kib", type=int, default=64,
                        help="many clients: the size of each file (small files show the "
                             "server's own cost per request, large ones its system calls')")
    parser.add_argument("--idle", type=int, default=10000, help="idle-crowd connections")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--many-rounds", type=int, default=3,
                        help="alternating rounds of the many-clients load per server setting")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another checkout of muxserver (an older commit, say) to run "
                             "the bulk transfers and the many-clients load against too, "
                             "alternating; its protocol may need --digest sha256")
    parser.add_argument("--compiled", action="store_true",
                        help="many clients: also the compiled build (setup.py; built first, "
                             "about a minute, needs mypy and a C compiler) beside the bare "
                             "server on the same compiled modules")
    parser.add_argument("--digest", choices=("blake3", "sha256"), default="blake3",
                        help="the digest the load generator's requests use (default: "
                             "blake3, as the muxserver client)")
    parser.add_argument("--by-round", action="store_true",
                        help="many clients: also print the latency of each round (the k-th "
                             "put or get of every connection) with --workers 1")
    parser.add_argument("--baseline-digest", choices=("blake3", "sha256"),
                        help="the digest of the requests to the --baseline checkout "
                             "(default: --digest's); sha256 compares with a checkout from "
                             "before BLAKE3 as each was shipped")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    report: dict = {"machine": f"{os.cpu_count()} cores, {platform.machine()}, "
                               f"Linux {platform.release()}, Python {platform.python_version()}",
                    "runs": args.runs}
    need = max(bulk_files(args) if "bulk" in chosen else 0,
               3 if "console" in chosen else 0) * (args.size_mib << 20) + GiB
    work = scratch_dir("muxserver-bench-", need)
    cache_bytecode(work)
    try:
        for name in chosen:
            scenario_dir = work / name
            scenario_dir.mkdir()
            print(f"running {name}...", file=sys.stderr, flush=True)
            runner = {"bulk": bulk, "many": many, "small": small_files,
                      "idle": idle_crowd, "console": console}[name]
            report[name] = runner(args, scenario_dir)
            shutil.rmtree(scenario_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["targets"] = check_targets(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args)
    return 0 if all(ok for _name, ok, _value in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
