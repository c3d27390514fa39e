"""Shared by the demo scripts: a traced muxserver to watch, and a little client output.

Every demo starts its own ``python -m muxserver --trace`` on a free port with a
throw-away root, and prints the server's narration (``server |``) interleaved with what
the demo's client does (``client |``). With ``--port`` a demo talks to a server you
started yourself instead (``python -m muxserver --trace``), and you watch its narration
in the other shell.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muxserver.protocol import (BodyData, FrameDecoder, FrameEnd, FrameHeader,  # noqa: E402
                                NEED_DATA, PeerClosed)


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=doc)
    p.add_argument("--port", type=int, help="use a server already running on this port")
    p.add_argument("--lang", choices=("en", "es"), default=None,
                   help="language of the narration (default: the locale's)")
    p.add_argument("--trace-bytes", action="store_true", help="also show hex dumps")
    real_parse = p.parse_args

    def parse_args(*a, **kw):  # also remember the language for say()
        global LANG
        args = real_parse(*a, **kw)
        from muxserver.trace import default_language
        LANG = args.lang or default_language()
        args.lang = LANG
        return args

    p.parse_args = parse_args
    return p


LANG = "en"  # set by parser() from --lang or the locale
_OUTPUT = threading.Lock()  # the echo thread and the client print whole lines, one at a time


def emit(line: str) -> None:
    with _OUTPUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def num(count: int) -> str:
    """A count as the narration's language writes it: 200,000 or 200.000."""
    from muxserver.trace import group_digits
    return group_digits(count, LANG)


def say(english: str, spanish: str | None = None) -> None:
    """One line of what the demo's client does, in the narration's language."""
    text = spanish if LANG == "es" and spanish else english
    emit(f"client | {text}")


@contextlib.contextmanager
def traced_server(args: argparse.Namespace, *extra: str,
                  narrate: bool = True) -> Iterator[tuple[str, int, Path]]:
    """A muxserver with --trace, its narration echoed as it comes (``narrate=False``:
    without --trace, for a demo whose server would narrate too much to read)."""
    if args.port:
        yield "127.0.0.1", args.port, Path(".")
        return
    root = Path(tempfile.mkdtemp(prefix="muxserver-demo-"))
    trace = ["--trace-bytes" if args.trace_bytes else "--trace"] if narrate else []
    cmd = [sys.executable, "-m", "muxserver", "serve", "--port", "0", "--root", str(root),
           "--no-console", *trace, *extra]
    if args.lang:
        cmd += ["--lang", args.lang]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    port = None
    pending = b""
    while port is None:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise SystemExit("the server did not start")
        pending += chunk
        for line in pending.decode(errors="replace").splitlines():
            if line.startswith("listening on"):
                port = int(line.split(":")[1].split()[0])
    global _NARRATOR
    _NARRATOR = Narration(proc)
    try:
        yield "127.0.0.1", port, root
    finally:
        settle()
        _NARRATOR = None
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(root, ignore_errors=True)


class Narration:
    """The traced server's output, echoed line by line by a thread that says when it has
    printed everything the server wrote so far."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.fd = proc, proc.stdout.fileno()
        self.waiting = threading.Event()  # the echo thread waits for more (all printed)
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self) -> None:
        pending = b""
        while True:
            self.waiting.set()
            chunk = os.read(self.fd, 65536)
            self.waiting.clear()
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if line.startswith(("[", "  ")):  # narration and hex dumps, not log lines
                    emit(f"server | {line.rstrip()}")

    def all_printed(self) -> bool:
        """The server sleeps (every thread), nothing of its output is in the pipe, and
        the echo thread has printed what it read: the narration of the past is out."""
        unread = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        return (self.waiting.is_set() and not int.from_bytes(unread, sys.byteorder)
                and server_asleep(self.proc.pid))


_NARRATOR: Narration | None = None


def server_asleep(pid: int) -> bool:
    """Every thread of the process ``pid`` asleep (state S in /proc)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] != "S":
                return False
    except OSError:
        return True  # (gone: it prints nothing more)
    return True


def settle(timeout: float = 10.0) -> None:
    """Until the server's narration of what has happened so far is printed, so that a
    client line that follows is never printed before the server lines that led to it.
    That is when the server sleeps with its output all echoed (seen twice in a row: a
    real state of the kernel's, not a guess at how long printing takes)."""
    narrator = _NARRATOR
    if narrator is None:  # (--port: the narration is in the other shell)
        return
    deadline, seen = time.monotonic() + timeout, 0
    while seen < 2 and time.monotonic() < deadline:
        seen = seen + 1 if narrator.all_printed() else 0
        time.sleep(0.005)


def read_replies(sock, count: int) -> list[tuple[dict, bytes]]:
    """``count`` whole reply frames from a blocking socket (one decoder: leftovers kept)."""
    decoder = FrameDecoder()
    replies: list[tuple[dict, bytes]] = []
    fields, body = {}, bytearray()
    while len(replies) < count:
        event = decoder.next_event()
        if event is NEED_DATA:
            decoder.receive_data(sock.recv(65536))
        elif isinstance(event, FrameHeader):
            fields, body = event.fields, bytearray()
        elif isinstance(event, BodyData):
            body += event.data
        elif isinstance(event, FrameEnd):
            replies.append((fields, bytes(body)))
        elif isinstance(event, PeerClosed):
            raise ConnectionError("the server closed the connection")
    return replies
