"""Helpers shared by the benchmark scripts: servers in subprocesses (optionally on a
pseudo-terminal, so the live console runs), big files in /dev/shm, and statistics.

Benchmarks compare contenders side by side in one run, alternating A, B, A, B, and
report medians and ratios: the machines are shared and noisy, so only a ratio measured
under the same conditions means anything.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LISTENING = re.compile(rb"listening on (\S+):(\d+)")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
GiB = 1 << 30


def scratch_dir(prefix: str, need_bytes: int) -> Path:
    """A temporary directory in /dev/shm (RAM) when it has room, else in /tmp.

    /dev/shm's files live in memory, so its room is also what memory is left: a tmpfs
    as large as the machine's RAM says it has room long after the processes have none,
    and filling it wakes the kernel's out-of-memory killer."""
    for base in ("/dev/shm", tempfile.gettempdir()):
        if not os.path.isdir(base):
            continue
        room = shutil.disk_usage(base).free
        if base == "/dev/shm":
            room = min(room, memory_available())
        if room > need_bytes:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    raise SystemExit(f"no file system with {need_bytes / GiB:.1f} GiB free "
                     f"(and, for /dev/shm, as much memory available)")


def memory_available() -> int:
    """What the kernel could give processes now without swapping (MemAvailable)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def make_file(path: Path, size: int) -> None:
    """A file of pseudo-random bytes (incompressible, cheap to make)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left, i = size, 0
        while left:
            chunk = (block[i % 997:] + block[:i % 997])[:left]
            f.write(chunk)
            left -= len(chunk)
            i += 1


@dataclasses.dataclass
class Spawned:
    proc: subprocess.Popen
    host: str
    port: int
    master_fd: int | None = None
    reader: threading.Thread | None = None
    output: list[str] | None = None  # (keep_output: every line it printed, once stopped)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.master_fd is not None:
            os.close(self.master_fd)
            self.master_fd = None
        if self.output is not None and self.reader is not None:
            self.reader.join(timeout=20)  # (its last lines: the summary at its stop)


def spawn_muxserver(root: Path, *args: str, terminal: bool = False,
                    size: tuple[int, int] = (120, 40), code: Path | None = None,
                    keep_output: bool = False) -> Spawned:
    """Start ``python -m muxserver`` on port 0; with ``terminal`` its stdout is a pty;
    ``code``: another checkout of muxserver to run (a baseline to compare with);
    ``keep_output``: its log lines and its summary at the stop are kept (``output``)."""
    cmd = [sys.executable, "-m", "muxserver", "serve", "--port", "0", "--root", str(root),
           *args]
    if not terminal:
        env = {**os.environ, "PYTHONPATH": str(code)} if code is not None else None
        return _spawn_piped(cmd + ["--no-console"], cwd=code or REPO, env=env,
                            keep_output=keep_output)
    master, slave = os.openpty()
    cols, rows = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(cmd, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
                            cwd=REPO, env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    pending = bytearray()

    def read_line() -> bytes:
        while b"\n" not in pending:
            pending.extend(os.read(master, 4096))
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        return line

    host, port = _read_address(read_line)
    reader = threading.Thread(target=_drain, args=(master,), daemon=True)
    reader.start()  # a terminal nobody reads fills up, and the server would block on it
    return Spawned(proc, host, port, master, reader)


def spawn_floor_server(root: Path, script: str = "bare_server.py",
                       code: Path | None = None) -> Spawned:
    """Start a floor the many-clients load is compared with: scripts/bare_server.py, or
    scripts/flat_server.py (the same plus muxserver's per-request checks). ``code``:
    another checkout to run it from, with that checkout's muxserver modules (a compiled
    copy, scripts/compiled_build.py)."""
    base = code or REPO
    return _spawn_piped([sys.executable, str(base / "scripts" / script),
                         "--root", str(root)], cwd=base, env=None)


def _spawn_piped(cmd: list[str], cwd: Path, env: dict | None,
                 keep_output: bool = False) -> Spawned:
    """A server whose stdout we read up to its "listening on" line, then drain (and
    keep, with its stderr, if ``keep_output``): one whose output nobody reads blocks."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=cwd, env=env,
                            stderr=subprocess.STDOUT if keep_output else subprocess.DEVNULL)
    host, port = _read_address(lambda: proc.stdout.readline())
    if not keep_output:
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
        return Spawned(proc, host, port)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(
        line.decode("utf-8", "replace") for line in proc.stdout), daemon=True)
    reader.start()
    return Spawned(proc, host, port, reader=reader, output=output)


def free_port() -> int:
    """A port of this machine free now (for a program that cannot be given port 0)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until a port of this machine is in LISTEN state, without connecting (socat
    -u would take a probe connection for the transfer itself)."""
    needle = f":{port:04X} 00000000:0000 0A"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            if needle in table.read():
                return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on port {port}")


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass  # the pty closed: the server is gone


def _read_address(read_line) -> tuple[str, int]:
    for _ in range(20):
        match = LISTENING.search(ANSI.sub(b"", read_line()))
        if match:
            return match.group(1).decode(), int(match.group(2))
    raise SystemExit("the server did not print its address")


def alternate(contenders: dict, runs: int, one_run) -> dict[str, list[float]]:
    """Run ``one_run(name, contender)`` for each contender in turn, ``runs`` rounds."""
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for round_no in range(runs):
        order = list(contenders.items())
        if round_no % 2:
            order.reverse()  # A B, B A, A B...: no contender always goes first
        for name, contender in order:
            timings[name].append(one_run(name, contender))
    return timings


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "runs": len(samples)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU time a process has used so far (from /proc)."""
    _parent, user, system = _proc_stat(pid)
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def _proc_stat(pid: int | str) -> tuple[int, int, int]:
    """A process's parent, and its user and system time in clock ticks (/proc/PID/stat;
    the name in parentheses may hold spaces, so the fields are counted after it)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]), int(fields[12])


def rss(pid: int) -> int:
    """A process's resident memory in bytes (VmRSS), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process and its children (a supervisor and its
    workers). The server's own code runs in user time; the host's slow spells (fresh
    pages for the files it writes) land mostly in system time, so user time shows a
    change of the code more steadily."""
    user = system = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent, ticks_user, ticks_system = _proc_stat(entry)
        except OSError:
            continue  # gone meanwhile
        if entry == str(pid) or parent == pid:
            user += ticks_user
            system += ticks_system
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def paired_ratios(timings: dict[str, list[float]], a: str, b: str) -> list[float]:
    """``a / b`` for each round of :func:`alternate`. The two runs of a round follow
    each other, so their ratio cancels the slow drifts of a shared machine (memory
    state, neighbours) that move both; the median of these ratios is the steadier
    estimate of what ``a`` costs over ``b``."""
    return [x / y for x, y in zip(timings[a], timings[b])]


def console_cost(src: Path, runs: int, work: Path) -> dict:
    """Upload ``src`` alternately to a server drawing its live console on a pty and to
    one with --no-console; wall time and server CPU of each, and their ratios."""
    from muxserver.client import Client

    servers = {}
    cpu: dict[str, list[float]] = {"console": [], "no-console": []}
    try:
        for name, terminal in (("console", True), ("no-console", False)):
            root = work / f"root-{name}"
            root.mkdir()
            servers[name] = (spawn_muxserver(root, terminal=terminal), root)

        def one_run(name: str, entry) -> float:
            server, root = entry
            before = cpu_seconds(server.proc.pid)
            with Client(server.host, server.port) as client:
                seconds = timed(lambda: client.put_file(src, "upload.bin"))
            cpu[name].append(cpu_seconds(server.proc.pid) - before)
            os.unlink(root / "upload.bin")
            return seconds

        for name, entry in servers.items():
            one_run(name, entry)  # warm-up: page cache, guest memory
            cpu[name].clear()
        timings = alternate(servers, runs, one_run)
    finally:
        for server, _root in servers.values():
            server.stop()
    wall = {name: summary(samples) for name, samples in timings.items()}
    cpu_stats = {name: summary(samples) for name, samples in cpu.items()}
    return {"wall": wall, "server_cpu": cpu_stats,
            "ratio": wall["console"]["median"] / wall["no-console"]["median"],
            "paired_ratio": statistics.median(paired_ratios(timings, "console", "no-console")),
            "cpu_ratio": cpu_stats["console"]["median"] / cpu_stats["no-console"]["median"],
            "redraw_ms": 1000 * console_redraw_seconds()}


def console_redraw_seconds(redraws: int = 200) -> float:
    """CPU time of one redraw of the live console (snapshot → rich → terminal codes),
    measured in this process with one transfer on screen, 120×40 characters."""
    from rich.console import Console
    from rich.live import Live

    from muxserver.console import ConsoleView
    from muxserver.server import ConnectionInfo, Snapshot

    now = time.monotonic()
    transfer = ConnectionInfo(1, "127.0.0.1:50000", "receiving", "put", "upload.bin",
                              300 << 20, GiB, now - 0.3, 300 << 20, 0, 0, 0, now)
    snap = Snapshot("127.0.0.1:9009", "/srv", 10.0, 100, 5, [transfer], 3, 0, GiB, 0)
    view = ConsoleView()
    with open(os.devnull, "w") as sink:
        console = Console(file=sink, force_terminal=True, width=120, height=40,
                          color_system="truecolor")
        live = Live(console=console, auto_refresh=False, redirect_stdout=False,
                    redirect_stderr=False)
        live.start()
        started = time.process_time()
        for _ in range(redraws):
            live.update(view.render(snap, max_rows=30, width=120), refresh=True)
        spent = time.process_time() - started
        live.stop()
    return spent / redraws


def print_console_cost(r: dict, runs: int) -> None:
    print(f"Console cost: {r['size_mib']} MiB uploads, {runs} runs each, alternating")
    print(f"  {'server':<11} {'median s':>9} {'min s':>7} {'max s':>7} {'server CPU s':>13}")
    for name, s in r["wall"].items():
        print(f"  {name:<11} {s['median']:9.3f} {s['min']:7.3f} {s['max']:7.3f} "
              f"{r['server_cpu'][name]['median']:13.3f}")
    print(f"  console / no-console: time {r['paired_ratio']:.3f} (median of paired ratios; "
          f"ratio of medians {r['ratio']:.3f}), server CPU {r['cpu_ratio']:.3f}")
    print(f"  one redraw costs {r['redraw_ms']:.2f} ms of CPU: "
          f"{r['redraw_ms'] * 4 / 10:.2f} % of a core at 4 redraws a second")
