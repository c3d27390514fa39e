"""Every core: ``--workers N`` processes, each a whole server with its own event loop.

This is the nginx model, and the Socket HOWTO's two answers to "many clients" at once:
*processes*, to use every core, and *select* (here, ``selectors``) inside each, for
many connections per process.

* The supervisor (the process you started) reserves the port (a socket bound with
  SO_REUSEPORT but not listening, so it never takes a connection), makes the memory
  the workers share (shared.py: the connection count and the wrong-token book) and
  forks the workers. Worker 0 sweeps what an interrupted server left in the root
  before the others start (they must not sweep a temporary file a sibling is writing).
* Each worker listens on the same address with its own SO_REUSEPORT socket; the kernel
  spreads new connections over the listening sockets by a hash of the client's address
  and port. A connection lives and ends in the worker that accepted it: no connection,
  file descriptor or request ever moves between processes.
* Each worker tells the supervisor, over a pipe of its own, that it is ready, then
  (while a console shows them) a snapshot of its connections four times a second and
  its log lines, and at the end its totals. The supervisor's own event loop reads the
  pipes, draws one console for all workers and prints one summary.
* A worker that dies (a bug, the OOM killer) is started again, as nginx's master
  does: the supervisor reaps it, says how it ended, empties its slot of the shared
  connection count (the kernel closed its connections), and forks a successor with the
  same index beside the others (it does not sweep the root: its siblings are writing
  there). At once the first time; a worker that dies again within
  ``worker_restart_calm`` seconds of its start (limits.py) waits 1, 2, 4... seconds, at
  most RESTART_MAX_DELAY, so a worker that cannot start does not spin. What the dead one had done stays in the totals: each
  worker tells the supervisor its counts whenever they changed in a loop turn.
* Signals (Ctrl-C, SIGTERM) reach the supervisor only: the workers run in a process
  group of their own, so a Ctrl-C on the terminal is not delivered to each of them as
  well. The supervisor passes every signal on to every worker as SIGTERM: the first
  stops them gracefully, a second stops them now. A worker whose supervisor dies is
  sent SIGTERM by the kernel (Linux's PR_SET_PDEATHSIG).

What stays per worker: its partial-file budget (each keeps ``1/N`` of it, so together
they keep to the whole), the remembered digests in memory (those on disk, in extended
attributes, are shared by nature), and the connection ids (worker ``i`` numbers its
connections ``i + 1``, ``i + 1 + N``, ..., so they never collide in the console).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from typing import Any, Callable

from .logformat import LineFormatter
from .loop import EVENT_READ, EventLoop, Timer
from .server import (
    Server,
    ServerConfig,
    Snapshot,
    format_address,
    freeze_startup_objects,
    listening_family,
    on_a_terminal,
)
from .locks import LockTable
from .shared import SharedState

log = logging.getLogger("muxserver")

SNAPSHOT_INTERVAL = 0.25  # seconds between a worker's snapshots (the console's redraws)
RESTART_MAX_DELAY = 30.0  # seconds: the longest wait before starting a worker again
_LENGTH = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class WorkerTotals:
    """What a worker did, sent once as it exits."""

    transfers_done: int = 0
    transfers_failed: int = 0
    longest_step: float = 0.0
    longest_step_what: str = ""
    slow_steps: int = 0


def worker_count(text: str) -> int:
    """``--workers``: a number from 1, or ``auto`` (one per core)."""
    if text == "auto":
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--workers takes a number or auto, not {text!r}") from None
    if count < 1:
        raise ValueError("--workers takes a number from 1")
    return count


# ------------------------------------------------------------------------- a worker


class _Messages:
    """The worker's end of its pipe: length-prefixed pickles. Never blocks the loop: a
    snapshot or log line that does not fit the pipe right now is dropped (the next one
    follows a quarter of a second later)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, message: tuple[Any, ...], *, must: bool = False) -> None:
        """Send ``message``; with ``must`` (ready, done: once each), wait for room."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _LENGTH.pack(len(data)) + data
        try:
            sent = 0 if must else os.write(self.fd, frame)
            if sent < len(frame):  # (a frame cut short would garble the rest: finish it)
                os.set_blocking(self.fd, True)
                try:
                    while sent < len(frame):
                        sent += os.write(self.fd, frame[sent:])
                finally:
                    os.set_blocking(self.fd, False)
        except BlockingIOError:
            pass  # no room for this snapshot or line: the next one follows soon
        except OSError:
            pass  # the supervisor is gone: PR_SET_PDEATHSIG stops us soon


class _ToSupervisor(logging.Handler):
    """Log records of a worker, sent to the supervisor's console."""

    def __init__(self, messages: _Messages, index: int) -> None:
        super().__init__()
        self.messages, self.tag = messages, f"w{index + 1} "

    def emit(self, record: logging.LogRecord) -> None:
        try:  # (a record may carry a loop turn's lines: each gets the tag)
            text = "\n".join(self.tag + line for line in record.getMessage().split("\n"))
        except (TypeError, ValueError):  # a record whose arguments do not fit its format
            self.handleError(record)
            return
        self.messages.send(("log", record.created, record.levelno, text))


def _run_worker(index: int, count: int, config: ServerConfig, shared: SharedState,
                fd: int, console: bool, sweep: bool) -> int:
    """The body of worker ``index`` (in the forked child); returns its exit status."""
    os.setpgid(0, 0)  # (terminal signals go to the supervisor, which passes them on)
    _die_with_parent()
    signal.set_wakeup_fd(-1)  # (a restarted worker inherits the supervisor's: let go)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    messages = _Messages(fd)
    root_logger = logging.getLogger()
    for handler in list(root_logger.handlers):
        if console:  # (the supervisor's console shows them)
            root_logger.removeHandler(handler)
        else:  # each line says which worker wrote it
            handler.setFormatter(LineFormatter(f"w{index + 1} "))
    if console:
        root_logger.addHandler(_ToSupervisor(messages, index))
    server = Server(config, shared=shared, worker=index, workers=count)
    server.start(sweep=sweep, reuse_port=True)
    server.loop.add_signal_handler(signal.SIGTERM, server.stop_gracefully)
    server.loop.add_signal_handler(signal.SIGHUP, server.reload_accounts)
    if console:
        def report() -> None:
            messages.send(("snapshot", server.snapshot()))
            server.loop.call_later(SNAPSHOT_INTERVAL, report)
        report()
    stats, told = server.stats, [(0, 0)]

    def tally() -> None:
        """Before the loop sleeps: the counts, if they changed (the supervisor keeps them
        in its totals should this worker die; a tally that finds the pipe full is
        dropped, and the next one carries the newer counts)."""
        counts = (stats.transfers_done, stats.transfers_failed)
        if counts != told[0]:
            told[0] = counts
            messages.send(("tally", *counts))

    server.loop.add_before_sleep(tally)
    messages.send(("ready",), must=True)
    freeze_startup_objects()
    try:
        server.serve_forever(handle_signals=False)
    finally:
        loop, stats = server.loop, server.stats
        messages.send(("done", WorkerTotals(
            stats.transfers_done, stats.transfers_failed, loop.longest_step,
            loop.longest_step_what, loop.slow_steps)), must=True)
    return 0


def _die_with_parent() -> None:
    """Ask the kernel to send us SIGTERM when the supervisor dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: a worker outlives a killed supervisor until it is stopped
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor died before prctl


# ---------------------------------------------------------------------- the supervisor


class _Pipe:
    """The supervisor's end of one worker's pipe, as a loop handler."""

    label = "worker pipe"

    def __init__(self, supervisor: "Supervisor", index: int, fd: int) -> None:
        self.supervisor, self.index, self.fd = supervisor, index, fd
        self.buffer = bytearray()
        self.closed = False
        self.events = 0  # (what the loop watches it for: see loop.Handler)
        os.set_blocking(fd, False)

    def on_interest_changed(self, old: int, new: int) -> None:
        pass

    def fail(self, exc: Exception) -> None:
        log.error("worker %d: unreadable report: %s", self.index + 1, exc)
        self.close()

    def on_events(self, mask: int) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not data:  # the worker exited (or crashed)
            self.close()
            return
        self.buffer += data
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + length:
                break
            message = pickle.loads(self.buffer[_LENGTH.size:_LENGTH.size + length])
            del self.buffer[:_LENGTH.size + length]
            self.supervisor.received(self.index, message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.supervisor.loop.set_interest(self.fd, self, 0)
            os.close(self.fd)
            self.supervisor.pipe_closed(self)


class Supervisor:
    """Starts the workers, relays signals, merges what they report."""

    def __init__(self, config: ServerConfig, count: int, *, console: bool) -> None:
        self.config, self.count, self.console = config, count, console
        self.loop = EventLoop(scratch_size=4096)
        self.shared = SharedState(count)
        self.pids: dict[int, int] = {}  # worker index -> pid
        self.pipes: dict[int, _Pipe] = {}
        self.ready: set[int] = set()
        self.snapshots: dict[int, Snapshot] = {}
        self.totals: dict[int, WorkerTotals] = {}
        self.started = time.monotonic()
        self.address: tuple[str, int] | None = None
        self.root_path = os.path.realpath(config.root)
        self._stop_at: float | None = None
        self.on_log: Callable[[float, int, str], None] | None = None
        self.worker_config = config  # (with the port every worker listens on, once known)
        self.born: dict[int, float] = {}  # worker index -> when its process started
        self.restart_delay: dict[int, float] = {}  # its next wait, if it dies young
        self.restarts: dict[int, Timer] = {}  # workers waiting to be started again
        self.tallies: dict[int, tuple[int, int]] = {}  # (done, failed) of each live worker
        self.earlier: dict[int, tuple[int, int]] = {}  # the same, of its dead predecessors
        #: their wake-ups, timer wake-ups, bytes in and out (the console's counts only rise)
        self.earlier_io: tuple[int, ...] = (0, 0, 0, 0)

    # -- starting

    def start(self) -> tuple[str, int]:
        """Reserve the port, start worker 0 (it sweeps), then the others; return the
        address once every worker listens. OSError or ValueError if one cannot start."""
        reserved = _reserve_port(self.config.host, self.config.port)
        self.shared.locks = LockTable.made_anew()  # (before the workers: they all open it)
        try:
            host, port = reserved.getsockname()[:2]
            self.address = (host, port)
            config = self.worker_config = dataclasses.replace(self.config, port=port)
            self._fork(0, config, sweep=True)
            self._wait_until(lambda: 0 in self.ready)
            for index in range(1, self.count):
                self._fork(index, config, sweep=False)
            self._wait_until(lambda: len(self.ready) == self.count)
        except BaseException:
            self.stop_workers(signal.SIGKILL)
            self.remove_locks()
            raise
        finally:
            reserved.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(signum, self.pass_on_stop)
        # (SIGHUP: a terminal that went away stops them all; else every worker reads the
        # user file again: server.Server.handle_signals)
        self.loop.add_signal_handler(signal.SIGHUP, self.pass_on_stop if on_a_terminal()
                                     else lambda: self.stop_workers(signal.SIGHUP))
        return self.address

    def _fork(self, index: int, config: ServerConfig, *, sweep: bool) -> None:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            status = 1
            try:
                status = _run_worker(index, self.count, config, self.shared, write_fd,
                                     self.console, sweep)
            except BaseException as exc:  # (reported by the supervisor as "exited")
                print(f"muxserver: worker {index + 1}: {exc}", file=sys.stderr, flush=True)
            finally:
                os._exit(status)
        os.close(write_fd)
        self.pids[index] = pid
        self.born[index] = time.monotonic()
        pipe = self.pipes[index] = _Pipe(self, index, read_fd)
        self.loop.set_interest(read_fd, pipe, EVENT_READ)

    def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if any(pipe.closed for pipe in self.pipes.values()):
                raise OSError("a worker exited before it was ready "
                              "(its reason is above)")
            self.loop.run_once(max_wait=1.0)

    # -- running

    def run(self) -> None:
        """Until every worker has exited (and none is waiting to start again)."""
        while self.restarts or any(not pipe.closed for pipe in self.pipes.values()):
            self.loop.run_once()
        for pid in self.pids.values():
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.remove_locks()
        self.loop.close()

    def remove_locks(self) -> None:
        """The locks end with the server (locks.py)."""
        if self.shared.locks is not None:
            self.shared.locks.remove()
            self.shared.locks = None

    def received(self, index: int, message: tuple[Any, ...]) -> None:
        """A message from worker ``index``: ("ready",), ("snapshot", Snapshot),
        ("log", created, level, text), ("tally", done, failed) or ("done", WorkerTotals)."""
        kind = message[0]
        if kind == "ready":
            if index in self.ready:  # (a worker started again)
                log.info("worker %d is serving again (pid %d)", index + 1,
                         self.pids[index])
            self.ready.add(index)
        elif kind == "snapshot":
            self.snapshots[index] = message[1]
        elif kind == "log":
            _, created, level, text = message
            if self.on_log is not None:
                self.on_log(created, level, text)
        elif kind == "tally":
            self.tallies[index] = (message[1], message[2])
        elif kind == "done":
            self.totals[index] = message[1]

    def pipe_closed(self, pipe: _Pipe) -> None:
        """A worker's pipe reached its end: the worker exited. Unless the server is
        stopping (or still starting: start() reports that), start it again."""
        index = pipe.index
        if self.pipes.get(index) is not pipe:
            return  # an earlier pipe of a restarted worker
        last = self.snapshots.get(index)
        if index in self.totals:  # (it said goodbye: its last counts stay on the console,
            if last is not None:  # its connections go; no count may go down)
                self.snapshots[index] = dataclasses.replace(
                    last, connections=[], transfers_done=self.totals[index].transfers_done,
                    transfers_failed=self.totals[index].transfers_failed)
            return
        self.snapshots.pop(index, None)
        if last is not None:  # (what it moved stays counted: its successor starts at 0)
            self.earlier_io = tuple(a + b for a, b in zip(self.earlier_io, (
                last.wakeups, last.timeout_wakeups, last.bytes_in, last.bytes_out)))
        done, failed = self.tallies.pop(index, (0, 0))  # (what it did stays counted)
        before = self.earlier.get(index, (0, 0))
        self.earlier[index] = (before[0] + done, before[1] + failed)
        if not self.ready or self._stop_at is not None:
            return
        self._reap(index, self.pids[index], deadline=time.monotonic() + 10)

    def _reap(self, index: int, pid: int, deadline: float) -> None:
        """Collect the dead worker's exit status, then plan its restart. (Its pipe ends
        as its process exits, a moment before the kernel has the status: look again
        shortly, for at most ten seconds. Meanwhile the worker counts as one waiting to
        start again, so the supervisor does not take "no pipe open" for "all done".)"""
        self.restarts.pop(index, None)
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped, status = pid, 0  # (collected already)
        if not reaped and time.monotonic() < deadline:
            self.restarts[index] = self.loop.call_later(
                0.01, lambda: self._reap(index, pid, deadline))
            return
        served = time.monotonic() - self.born.get(index, 0.0)
        if served >= self.config.limits.worker_restart_calm:
            delay = 0.0  # it served a while: start it again at once
            self.restart_delay[index] = 1.0
        else:  # it died young: wait, longer each time (at once the very first time)
            delay = self.restart_delay.get(index, 0.0)
            self.restart_delay[index] = min(max(2 * delay, 1.0), RESTART_MAX_DELAY)
        log.error("worker %d (pid %d) exited unexpectedly (%s); the others go on, and it "
                  "starts again after %.0f s", index + 1, pid,
                  _how_it_ended(reaped, status), delay)
        self.restarts[index] = self.loop.call_later(delay, lambda: self._restart(index))

    def _restart(self, index: int) -> None:
        self.restarts.pop(index, None)
        if self._stop_at is not None:
            return
        self.shared.forget_worker(index)  # (its connections died with it)
        try:
            self._fork(index, self.worker_config, sweep=False)
        except OSError as exc:  # no memory or no processes left: try again later
            log.error("worker %d could not be started again: %s", index + 1, exc)
            self.restarts[index] = self.loop.call_later(RESTART_MAX_DELAY,
                                                        lambda: self._restart(index))

    def pass_on_stop(self) -> None:
        """Ctrl-C or SIGTERM: passed on to every worker (a second one: stop now)."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.config.limits.shutdown_grace
        for timer in self.restarts.values():  # (a worker waiting to start again: not now)
            timer.cancel()
        self.restarts.clear()
        self.stop_workers(signal.SIGTERM)

    def stop_workers(self, signum: int) -> None:
        for index, pid in self.pids.items():
            pipe = self.pipes.get(index)
            if pipe is None or not pipe.closed:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    # -- what observers see

    def snapshot(self) -> Snapshot:
        """All workers' snapshots as one (the console reads this as a server's)."""
        now = time.monotonic()
        parts = list(self.snapshots.values())
        address = self.address or ("", 0)
        wakeups, timeouts, bytes_in, bytes_out = self.earlier_io
        return Snapshot(
            address=f"{format_address(*address)} ({self.count} workers)",
            root=self.root_path, uptime=now - self.started,
            wakeups=wakeups + sum(p.wakeups for p in parts),
            timeout_wakeups=timeouts + sum(p.timeout_wakeups for p in parts),
            connections=[c for p in parts for c in p.connections],
            transfers_done=sum(p.transfers_done for p in parts)
            + sum(done for done, _ in self.earlier.values()),
            transfers_failed=sum(p.transfers_failed for p in parts)
            + sum(failed for _, failed in self.earlier.values()),
            bytes_in=bytes_in + sum(p.bytes_in for p in parts),
            bytes_out=bytes_out + sum(p.bytes_out for p in parts),
            stopping_in=self._stop_at - now if self._stop_at is not None else None)

    def totals_summary(self) -> dict[str, Any]:
        """What the line printed at the end says (cli_serve.stop_summary): the totals of all
        workers, and each worker's share."""
        totals = list(self.totals.values())
        slowest = max(totals, key=lambda t: t.longest_step, default=WorkerTotals())
        shares = {i: t.transfers_done for i, t in self.totals.items()}
        for i, (done, _failed) in self.earlier.items():  # (its dead predecessors')
            shares[i] = shares.get(i, 0) + done
        return {"done": sum(shares.values()),
                "failed": sum(t.transfers_failed for t in totals)
                + sum(failed for _, failed in self.earlier.values()),
                "longest": slowest.longest_step, "what": slowest.longest_step_what,
                "slow": sum(t.slow_steps for t in totals), "shares": shares}


def _how_it_ended(pid: int, status: int) -> str:
    """"killed by SIGKILL", "exit status 1"... from a waitpid status."""
    if not pid:
        return "no exit status yet"
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"killed by signal {signum}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to the address with SO_REUSEPORT, never listening: it holds the
    port (and learns it, for port 0) while the workers bind theirs beside it."""
    family, dual_stack = listening_family(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
