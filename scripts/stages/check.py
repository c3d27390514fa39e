#!/usr/bin/env python3
"""Run the same scenarios against every stage and print which pitfalls each one hits.

    python scripts/stages/check.py                  # every stage, every scenario
    python scripts/stages/check.py --stage 5 --stage 13
    python scripts/stages/check.py --server "python my_server.py --port {port} --root {root}"

Each scenario starts a fresh server (stage 13 is muxserver itself), plays one kind of
client against it and says pass or FAIL with the reason in one line. No scenario
waits a fixed time for its verdict: the checker watches the server from outside, as
Linux shows it in /proc:

  - ``/proc/net/tcp``: for each connection, the bytes the server has not read yet
    (its receive queue) and the bytes it sent that are still in flight;
  - ``/proc/PID/task/*/stat`` and ``wchan``: whether every thread of the server is
    asleep, and in which call (recv, send, select, accept).

A server asleep while a request sits unread in its receive queue, or asleep with
nothing in flight while a reply is owed, will never answer: that is the verdict, seen
the moment it is true. Only the idle-timeout row must wait (4 seconds) for something
that does not happen, and the out-of-descriptors row gives a server that backs off up to
10 seconds to accept again. Every scenario but idle timeout starts its server with a
long idle timeout: a checker left unscheduled on a busy machine is not a slow client to
be closed. Linux only.
(es) Ejecuta los mismos escenarios contra cada etapa e imprime en qué trampas cae
cada una. Ningún escenario espera un tiempo fijo: el comprobador observa el servidor
desde fuera, en /proc (colas de recepción y envío, y en qué llamada duerme cada hilo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import select
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from muxserver import protocol  # noqa: E402  (the frames; stages 1-12 speak a subset)
from muxserver.trace import group_digits  # noqa: E402

MiB = 1024 * 1024
LANG = "en"  # --lang: the language of the table and of the reasons


def t(english: str, spanish: str) -> str:
    return spanish if LANG == "es" else english


def num(count: int) -> str:
    """200,000 in English, 200.000 in Spanish."""
    return group_digits(count, LANG)


def dec(value: float) -> str:
    """0.5 in English, 0,5 in Spanish (one decimal)."""
    text = f"{value:.1f}"
    return text.replace(".", ",") if LANG == "es" else text


#: How the table names the scenarios and the stages in Spanish.
SPANISH = {
    "one byte per send": "un byte por send", "pipelined burst": "ráfaga encadenada",
    "slow reader": "lector lento", "memory bound": "memoria acotada",
    "half close": "cierre parcial", "reset": "RST", "idle timeout": "plazo de inactividad",
    "no busy loop": "sin bucle ocupado", "two clients": "dos clientes",
    "out of descriptors": "sin descriptores",
    "half a request": "media petición",
    "1 blocking": "1 bloqueante", "2 framing": "2 delimitación", "3 errors": "3 errores",
    "4 threads": "4 hilos", "5 select": "5 select", "6 decoder": "6 decodificador",
    "7 non-blocking": "7 no bloqueante", "8 interest": "8 interés",
    "9 half close": "9 cierre parcial", "10 backpressure": "10 contrapresión",
    "11 deadlines": "11 plazos", "12 back-off": "12 pausa", "13 muxserver": "13 muxserver",
    "14 asyncio": "14 asyncio",
    "yours": "el tuyo",
}
SMALL = b"small file for the stages\n" * 4
POLL = 0.02          # seconds between two looks at /proc
SURE = 3             # a stuck server is seen stuck this many looks in a row
SPIN_LIMIT = 5.0     # CPU seconds a server may burn without a byte of a reply it owes
STARTUP = 30.0       # seconds a server may take to print "listening on HOST:PORT"
IDLE_TIMEOUT = 1.0   # the idle timeout of the "idle timeout" scenario's server
#: ... and of every other scenario's: a busy machine may leave the checker's own client
#: unscheduled for seconds, and a server that then closed it would be right to, so the
#: only scenario that tests the timeout is the only one that runs with a short one.
RELAXED_TIMEOUT = 600.0

#: Each stage is the one before with one idea added (its file's docstring says which);
#: 13 is muxserver itself, 14 is stage 12 written for asyncio.
STAGES: dict[str, list[str]] = {
    f"{number} {name}": [sys.executable, str(HERE / f"stage{number:02d}_{file}.py")]
    for number, name, file in [
        (1, "blocking", "blocking"), (2, "framing", "framing"), (3, "errors", "errors"),
        (4, "threads", "threads"), (5, "select", "select"), (6, "decoder", "decoder"),
        (7, "non-blocking", "nonblocking"), (8, "interest", "interest"),
        (9, "half close", "half_close"), (10, "backpressure", "backpressure"),
        (11, "deadlines", "deadlines"), (12, "back-off", "backoff")]}
STAGES["13 muxserver"] = [sys.executable, "-m", "muxserver", "serve", "--no-console",
                          "--log-level", "error"]
STAGES["14 asyncio"] = [sys.executable, str(HERE / "stage14_asyncio.py")]
COMMON_ARGS = "--port 0 --root {root} --idle-timeout {idle}"
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit)(: |$)")
EPOLLOUT = 0x004  # <sys/epoll.h>: the event mask bit of "tell me when I may write"


class Verdict(Exception):
    """Raised with the reason the moment a scenario knows its answer."""

    def __init__(self, passed: bool, reason: str, lesson: int | None = None) -> None:
        super().__init__(reason)
        self.passed, self.reason, self.lesson = passed, reason, lesson


def passed(reason: str) -> Verdict:
    return Verdict(True, reason)


def failed(reason: str, lesson: int | None = None) -> Verdict:
    """A FAIL; ``lesson``: the pitfall's lesson when it is not the scenario's own (a
    request lost in any scenario is lesson 5's pitfall)."""
    return Verdict(False, reason, lesson)


# --- the server, watched from outside ---------------------------------------------------

#: System calls a sleeping thread may be in (x86-64 and arm64 numbers) -> what a learner
#: wrote. Other machines fall back to the kernel function in /proc/PID/task/TID/wchan.
SYSCALLS = {
    "x86_64": {7: "poll()", 23: "select()", 232: "epoll_wait()", 270: "select()",
               271: "poll()", 281: "epoll_wait()", 441: "epoll_wait()", 43: "accept()",
               288: "accept()", 44: "send()", 46: "send()", 1: "send()", 45: "recv()",
               47: "recv()", 0: "recv()", 202: "a lock"},
    "aarch64": {72: "select()", 73: "poll()", 22: "epoll_wait()", 441: "epoll_wait()",
                202: "accept()", 242: "accept()", 206: "send()", 211: "send()", 64: "send()",
                207: "recv()", 212: "recv()", 63: "recv()", 98: "a lock"},
}.get(os.uname().machine, {})


class Server:
    """One server process on a free port, its stdout drained, its stderr kept."""

    def __init__(self, command: list[str], root: Path) -> None:
        self.errors = tempfile.TemporaryFile()
        # Started where the checker was (a --server command names its script as the
        # learner typed it), with this checkout importable (stage 13 is muxserver).
        path = os.pathsep.join(filter(None, [str(HERE.parent.parent),
                                             os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.errors,
                                     stdin=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1",
                                          "PYTHONPATH": path})
        self.port = 0
        self.idle_given = True  # (whether its command took the scenario's idle timeout)
        announced = threading.Event()
        threading.Thread(target=self._read_output, args=(announced,), daemon=True).start()
        if not announced.wait(STARTUP):  # (a server that never says where it listens)
            self.proc.kill()
            raise SystemExit(t(f"{shlex.join(command)} did not print 'listening on "
                               f"HOST:PORT' within {STARTUP:g} s",
                               f"{shlex.join(command)} no imprimió 'listening on "
                               f"HOST:PORT' en {STARTUP:g} s"))
        if not self.port:
            raise SystemExit(f"did not start: {shlex.join(command)}\n{self.last_error()}")

    def _read_output(self, announced: threading.Event) -> None:
        """Find the "listening on HOST:PORT" line, then drain the rest (a pipe nobody
        reads would block the server)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not self.port and line.startswith("listening on"):
                self.port = int(line.split(":")[-1].split()[0])
                announced.set()
        announced.set()  # (it exited: the caller says so)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.errors.close()

    def last_error(self) -> str:
        """The exception that ended it (a traceback's last line), else its last words: a
        dying process may print more after the traceback (libc's complaints)."""
        self.errors.seek(0)
        lines = [ln.strip() for ln in self.errors.read().decode(errors="replace").splitlines()]
        raised = [ln for ln in lines if EXCEPTION_LINE.match(ln)]
        return (raised or [ln for ln in lines if ln] or ["no message"])[-1]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise failed(t(f"the server died: {self.last_error()}",
                           f"el servidor murió: {self.last_error()}"))

    def asleep_in(self) -> str | None:
        """The call the server sleeps in if every thread sleeps, else None."""
        calls = []
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                stat = Path(f"/proc/{self.proc.pid}/task/{tid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "S":
                    return None
                calls.append(self._call(tid))
        except (FileNotFoundError, ProcessLookupError):
            return None  # exited between two reads: check_alive says so next
        return ", ".join(sorted(set(calls)))

    def _call(self, tid: str) -> str:
        task = Path(f"/proc/{self.proc.pid}/task/{tid}")
        try:
            number = int((task / "syscall").read_text().split()[0])
        except (OSError, ValueError):  # not allowed to read it, or "running"
            number = -1
        call = SYSCALLS.get(number) or (task / "wchan").read_text() or "the kernel"
        return t(call, {"a lock": "un cerrojo", "the kernel": "el núcleo"}.get(call, call))

    def died(self) -> Verdict | None:
        """After the connection broke: did the server die? It may be exiting still."""
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        return failed(t(f"the server died: {self.last_error()}",
                          f"el servidor murió: {self.last_error()}"))

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def socket_inodes(self) -> dict[int, int]:
        """{descriptor: socket inode} of the server's open sockets."""
        found = {}
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found[int(fd)] = int(target[8:-1])
        return found

    def epoll_interest(self) -> dict[int, int]:
        """{descriptor: event mask} registered in the server's epoll instances."""
        interest = {}
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                if os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                    continue
                info = Path(f"/proc/{self.proc.pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            for line in info.splitlines():  # "tfd:        5 events:       19 data: ..."
                words = line.split()
                if words[:1] == ["tfd:"] and "events:" in words:
                    interest[int(words[1])] = int(words[words.index("events:") + 1], 16)
        return interest

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def holds(self, peer_port: int) -> bool:
        """The server has not closed its end of the connection from ``peer_port`` yet
        (established, or CLOSE_WAIT: the peer closed, the server not yet)."""
        return any(cols[3] in ("01", "08") for cols in self._tcp_rows(peer_port))

    def inode_of(self, client: socket.socket) -> int:
        """The inode of the server's end of ``client``'s connection (/proc/net/tcp)."""
        return self._tcp_row(client)[2]

    def queues(self, client: socket.socket) -> tuple[int, int]:
        """(bytes in flight from the server, bytes the server has not read) for the
        server's end of ``client``'s connection, from /proc/net/tcp{,6}."""
        tx, rx, _inode = self._tcp_row(client)
        return tx, rx

    def _tcp_row(self, client: socket.socket) -> tuple[int, int, int]:
        """(send queue, receive queue, inode) of the server's end of the connection."""
        for cols in self._tcp_rows(client.getsockname()[1]):
            tx, rx = cols[4].split(":")
            return int(tx, 16), int(rx, 16), int(cols[9])
        return 0, 0, 0

    def _tcp_rows(self, peer_port: int) -> Iterator[list[str]]:
        """The /proc/net/tcp{,6} rows (split) of the server's end of the connections
        from ``peer_port``."""
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, remote = int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16)
                if local == self.port and remote == peer_port:
                    yield cols


class Watch:
    """Looks at a server, one look per call, until it has slept SURE looks in a row."""

    def __init__(self, server: Server) -> None:
        self.server, self.looks = server, 0

    def asleep(self, also: bool = True) -> str | None:
        """The call it sleeps in once it is surely asleep (and ``also`` held each time)."""
        call = self.server.asleep_in() if also else None
        self.looks = self.looks + 1 if call else 0
        return call if self.looks >= SURE else None


# --- a client that reads replies without blocking ---------------------------------------

@dataclass
class Client:
    sock: socket.socket
    decoder: protocol.FrameDecoder = field(default_factory=protocol.FrameDecoder)
    replies: list[tuple[dict, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    fields: dict = field(default_factory=dict)
    received: int = 0
    closed: bool = False

    @classmethod
    def connect(cls, server: Server) -> Client:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def read_available(self) -> bool:
        """Whatever has arrived, decoded; True if anything came."""
        got = False
        while not self.closed and select.select([self.sock], [], [], 0)[0]:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionError:
                data = b""
            got = True
            self.received += len(data)
            self.decoder.receive_data(data)
            self.closed = not data
            self._decode()
        return got

    def _decode(self) -> None:
        while True:
            event = self.decoder.next_event()
            if isinstance(event, protocol.FrameHeader):
                self.fields, self.body = event.fields, bytearray()
            elif isinstance(event, protocol.BodyData):
                self.body += event.data
            elif isinstance(event, protocol.FrameEnd):
                self.replies.append((self.fields, bytes(self.body)))
            else:
                return

    def reset(self) -> None:
        """Close with RST instead of FIN: SO_LINGER on, with a zero timeout."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def await_replies(server: Server, client: Client, count: int) -> None:
    """Until ``client`` has ``count`` replies; a Verdict (failed) when it never will."""
    watch, spent = Watch(server), server.cpu_seconds()
    while len(client.replies) < count:
        server.check_alive()
        if client.read_available():
            watch.looks, spent = 0, server.cpu_seconds()
            continue
        if server.cpu_seconds() - spent > SPIN_LIMIT:  # CPU, not time: never a slow machine's
            owed = count - len(client.replies)
            raise failed(t(f"the server used {SPIN_LIMIT:g} s of CPU and sent not a byte of "
                           f"what it owes ({owed} {'reply' if owed == 1 else 'replies'}): "
                           "it spins",
                           f"el servidor gastó {dec(SPIN_LIMIT)} s de CPU sin enviar un byte de "
                           f"lo que debe ({owed} "
                           f"{'respuesta' if owed == 1 else 'respuestas'}): da vueltas en "
                           "vano"))
        if client.closed:
            raise server.died() or failed(t(
                f"the server closed the connection after {len(client.replies)} of {count} "
                f"replies ({num(client.received)} bytes)",
                f"el servidor cerró la conexión tras {len(client.replies)} de {count} "
                f"respuestas ({num(client.received)} bytes)"))
        tx, rx = server.queues(client.sock)
        call = watch.asleep(also=not tx)  # (nothing on its way to us either)
        if call:
            if rx:
                raise failed(t(f"{rx} bytes of the request wait unread while the server "
                               f"sleeps in {call}",
                               f"{rx} bytes de la petición esperan sin leer mientras el "
                               f"servidor duerme en {call}"))
            missing = count - len(client.replies)
            raise failed(t(f"the server read every byte and sleeps in {call}, but "
                           f"{missing} of {count} replies never came: those requests were lost",
                           f"el servidor leyó todos los bytes y duerme en {call}, pero "
                           f"{missing} de {count} respuestas nunca llegaron: esas peticiones "
                           "se perdieron"), lesson=5)
        time.sleep(POLL)


def wait_until_read(server: Server, client: Client) -> None:
    """Until the server has read every byte ``client`` sent (its receive queue empty)."""
    watch = Watch(server)
    while server.queues(client.sock)[1]:
        server.check_alive()
        call = watch.asleep()
        if call:
            raise failed(t(f"the request waits unread while the server sleeps in {call}",
                           f"la petición espera sin leer mientras el servidor duerme en {call}"))
        time.sleep(POLL)


# --- the scenarios ----------------------------------------------------------------------

def put(rid: int, name: str, body: bytes) -> bytes:
    return protocol.encode_put(rid, name, len(body), hashlib.sha256(body).hexdigest(),
                               overwrite=True) + body


def check_put_get(client: Client, root: Path, name: str, body: bytes, first: int = 0) -> None:
    (put_reply, _), (get_reply, data) = client.replies[first:first + 2]
    if not put_reply.get("ok") or not get_reply.get("ok"):
        raise failed(t("error replies: ", "respuestas de error: ")
                     + f"{put_reply.get('error')}, {get_reply.get('error')}")
    if data != SMALL or (root / name).read_bytes() != body:
        raise failed(t("a reply or the stored file has the wrong bytes",
                       "una respuesta o el archivo guardado tiene bytes equivocados"))


def one_byte(server: Server, root: Path, tag: str) -> None:
    """Requests sent one byte per send(): every recv() sees a piece."""
    body = os.urandom(300)
    stream = put(1, f"{tag}.bin", body) + protocol.encode_get(2, "small.txt")
    client = Client.connect(server)
    for i in range(len(stream)):
        client.sock.send(stream[i:i + 1])
        wait_until_read(server, client)   # the server has seen this byte alone
        client.read_available()
        if client.closed:
            raise server.died() or failed(t(
                f"the server closed the connection after byte {i + 1} of {len(stream)}",
                f"el servidor cerró la conexión tras el byte {i + 1} de {len(stream)}"))
    await_replies(server, client, 2)
    check_put_get(client, root, f"{tag}.bin", body)
    raise passed(t(f"{len(stream)} one-byte sends made two whole requests",
                   f"{len(stream)} envíos de un byte formaron dos peticiones enteras"))


def burst(server: Server, root: Path, tag: str) -> None:
    """Three requests in one send(): one recv() holds them all."""
    body = os.urandom(300)
    client = Client.connect(server)
    client.sock.sendall(put(1, f"{tag}.bin", body) + protocol.encode_get(2, "small.txt")
                        + protocol.encode_get(3, "small.txt"))
    await_replies(server, client, 3)
    check_put_get(client, root, f"{tag}.bin", body)
    if [f.get("id") for f, _ in client.replies] != [1, 2, 3]:
        raise failed(t("the replies came out of order", "las respuestas llegaron desordenadas"))
    raise passed(t("three pipelined requests, three replies in order",
                   "tres peticiones encadenadas, tres respuestas en orden"))


def half_request(server: Server, root: Path, tag: str) -> None:
    """One client sends most of a put and stops; another sends a whole get. Is the second
    served while the first request waits for its last bytes, and is the first one then
    finished when they come?"""
    body = os.urandom(300)
    stream = put(1, f"{tag}.bin", body)
    stalled = Client.connect(server)
    stalled.sock.sendall(stream[:-150])   # the prefix, the header, half of the body
    wait_until_read(server, stalled)
    other = Client.connect(server)
    other.sock.sendall(protocol.encode_get(1, "small.txt"))
    await_replies(server, other, 1)
    if other.replies[0][1] != SMALL:
        raise failed(t("the reply is not the file", "la respuesta no es el archivo"))
    stalled.sock.sendall(stream[-150:] + protocol.encode_get(2, "small.txt"))
    await_replies(server, stalled, 2)
    check_put_get(stalled, root, f"{tag}.bin", body)
    raise passed(t("served another client while a request waited half-sent, then finished "
                   "that request",
                   "atendió a otro cliente mientras una petición esperaba a medio enviar, y "
                   "después terminó esa petición"))


def slow_reader(server: Server, root: Path, tag: str) -> None:
    """A client asks for 64 MiB and reads nothing; another client must still be served."""
    reader = Client.connect(server)
    reader.sock.sendall(b"".join(protocol.encode_get(i, "big.bin") for i in range(4)))
    while not select.select([reader.sock], [], [], POLL)[0]:
        server.check_alive()  # until the server has begun to answer it
    other = Client.connect(server)
    body = os.urandom(300)
    other.sock.sendall(put(1, f"{tag}.bin", body) + protocol.encode_get(2, "small.txt"))
    await_replies(server, other, 2)
    check_put_get(other, root, f"{tag}.bin", body)
    raise passed(t("served another client while one did not read",
                   "atendió a otro cliente mientras uno no leía"))


def memory(server: Server, root: Path, tag: str) -> None:
    """64 gets of 1 MiB from a client that reads nothing: what does the server keep? And
    once the client reads, does every reply come (a server may not drop requests to stay
    small)?"""
    start = server.rss()
    reader = Client.connect(server)
    reader.sock.sendall(b"".join(protocol.encode_get(i, "mid.bin") for i in range(64)))
    watch = Watch(server)
    while True:
        server.check_alive()
        grown = server.rss() - start
        if grown > 24 * MiB:
            raise failed(t(f"holds {grown / MiB:.0f} MiB more for a client that reads "
                           "nothing (no backpressure)",
                           f"retiene {grown / MiB:.0f} MiB más para un cliente que no lee nada "
                           "(sin contrapresión)"))
        call = watch.asleep()
        if call:
            break  # it stopped taking requests: now read, and every reply must come
        time.sleep(POLL)
    await_replies(server, reader, 64)
    if any(body != (root / "mid.bin").read_bytes() for _, body in reader.replies):
        raise failed(t("a reply's body is not the file", "el cuerpo de una respuesta no es el "
                       "archivo"))
    raise passed(t(f"stopped taking requests at {grown / MiB:.0f} MiB more (asleep in "
                   f"{call}), then gave all 64 replies",
                   f"dejó de aceptar peticiones con {grown / MiB:.0f} MiB más (dormido en "
                   f"{call}), y después dio las 64 respuestas"))


def half_close(server: Server, root: Path, tag: str) -> None:
    """A get of 16 MiB, then shutdown(SHUT_WR): recv() == b"" while the reply is owed."""
    client = Client.connect(server)
    client.sock.sendall(protocol.encode_get(1, "big.bin"))
    client.sock.shutdown(socket.SHUT_WR)
    try:
        await_replies(server, client, 1)
    except Verdict:
        if not client.closed or not client.received:
            raise
        raise failed(t(f"closed with the reply still owed ({num(client.received)} of "
                       f"{num(16 * MiB)} bytes came): recv() == b'' taken for 'gone'",
                       f"cerró con la respuesta aún pendiente (llegaron "
                       f"{num(client.received)} de {num(16 * MiB)} bytes): recv() == b'' "
                       "tomado por 'se fue'")) from None
    if client.replies[0][1] != (root / "big.bin").read_bytes():
        raise failed(t("the reply's body is not the file",
                       "el cuerpo de la respuesta no es el archivo"))
    watch, start = Watch(server), server.cpu_seconds()
    while not client.closed:
        client.read_available()
        server.check_alive()
        if server.cpu_seconds() - start > 1.0:  # (all it owes went out: nothing to do)
            raise failed(t("replied, then neither slept nor closed: recv() returns b'' at "
                           "once, every time, and the loop keeps reading (the end of the "
                           "stream ignored: it spins)",
                           "respondió, y después ni durmió ni cerró: recv() devuelve b'' al "
                           "instante, cada vez, y el bucle sigue leyendo (el fin del flujo "
                           "ignorado: da vueltas en vano)"))
        if watch.asleep(also=not client.closed and not server.queues(client.sock)[0]):
            raise failed(t("replied, but never closed the half-closed connection",
                           "respondió, pero nunca cerró la conexión tras su cierre parcial "
                           "(half-close)"))
        time.sleep(POLL)
    raise passed(t("the whole reply came after the half close, then the close",
                   "la respuesta entera llegó tras el cierre parcial, y después el cierre"))


def reset(server: Server, root: Path, tag: str) -> None:
    """One client resets mid-request, another mid-reply; a third must be served."""
    first = Client.connect(server)
    first.sock.sendall(put(1, f"{tag}-cut.bin", os.urandom(4096))[:200])
    wait_until_read(server, first)
    first.reset()
    second = Client.connect(server)
    second.sock.sendall(protocol.encode_get(1, "big.bin"))
    while not select.select([second.sock], [], [], POLL)[0]:
        server.check_alive()
    second.reset()   # the server's next send() meets ECONNRESET or EPIPE
    third = Client.connect(server)
    body = os.urandom(300)
    third.sock.sendall(put(1, f"{tag}.bin", body) + protocol.encode_get(2, "small.txt"))
    await_replies(server, third, 2)
    check_put_get(third, root, f"{tag}.bin", body)
    raise passed(t("two resets ended two connections, not the server",
                   "dos RST terminaron dos conexiones, no el servidor"))


def idle(server: Server, root: Path, tag: str, patience: float = 4.0) -> None:
    """A client connects, makes one request, then sends nothing: is it ever closed?"""
    client = Client.connect(server)
    client.sock.sendall(protocol.encode_get(1, "small.txt"))
    await_replies(server, client, 1)
    deadline = time.monotonic() + patience
    while not client.closed:
        server.check_alive()
        if time.monotonic() > deadline:
            how = (t(f"no timeout; started with --idle-timeout {IDLE_TIMEOUT:g}",
                     f"sin plazo; arrancado con --idle-timeout {IDLE_TIMEOUT:g}")
                   if server.idle_given else
                   t("its command has no {idle}, so it runs with a timeout of its own, if any",
                     "su orden no lleva {idle}, así que usa un plazo propio, si lo tiene"))
            raise failed(t(f"an idle client still holds its slot after {patience:g} s ({how})",
                           f"un cliente ocioso sigue ocupando su plaza tras {patience:g} s "
                           f"({how})"))
        client.read_available()
        time.sleep(POLL)
    raise passed(t("closed the idle connection after its timeout",
                   "cerró la conexión ociosa al vencer su plazo"))


def busy(server: Server, root: Path, tag: str) -> None:
    """With one idle client connected, does the server sleep or spin?"""
    client = Client.connect(server)
    client.sock.sendall(protocol.encode_get(1, "small.txt"))
    await_replies(server, client, 1)
    start, began, watch = server.cpu_seconds(), time.monotonic(), Watch(server)
    while True:
        server.check_alive()
        used = server.cpu_seconds() - start
        if used >= 0.5:
            took = time.monotonic() - began
            raise failed(t(f"{dec(used)} s of CPU in {dec(took)} s with nothing to do, never "
                           f"asleep: {why_awake(server, client)}",
                           f"{dec(used)} s de CPU en {dec(took)} s sin nada que hacer, sin "
                           f"dormir nunca: {why_awake(server, client)}"))
        call = watch.asleep()
        if call:
            raise passed(t(f"sleeps in {call} while nothing happens",
                           f"duerme en {call} mientras no pasa nada"))
        time.sleep(POLL)


def why_awake(server: Server, client: Client) -> str:
    """What the kernel shows of a loop that never sleeps, for the reason line: the event
    mask the server gave epoll for ``client``'s connection (/proc/PID/fdinfo of its epoll
    descriptor), when it uses epoll; else that its select() or poll() returns at once."""
    sockets = server.socket_inodes()
    mine = server.inode_of(client.sock)
    masks = []
    for fd, interest in server.epoll_interest().items():
        if sockets.get(fd) == mine:
            masks.append(interest)
    if masks and any(mask & EPOLLOUT for mask in masks):
        return t("it asks epoll for write readiness on a connection with nothing to send "
                 "(EPOLLOUT is in its interest), and an idle socket is always writable",
                 "pide a epoll que avise cuando se pueda escribir en una conexión sin nada "
                 "que enviar (EPOLLOUT en su interés), y un socket ocioso siempre admite "
                 "escritura")
    if masks:
        return t("epoll watches the connection for reading only, so its wait must be "
                 "returning by itself: a zero timeout",
                 "epoll vigila la conexión solo para leer, así que su espera vuelve sola: "
                 "un plazo de cero")
    return t("its select() or poll() returns at once every time",
             "su select() o poll() vuelve al instante cada vez")


def two_clients(server: Server, root: Path, tag: str) -> None:
    """One client connects and sends nothing yet; another sends one whole request (one,
    in one send: this row is about serving two clients, not about framing)."""
    quiet = Client.connect(server)
    other = Client.connect(server)
    other.sock.sendall(protocol.encode_get(1, "small.txt"))
    await_replies(server, other, 1)
    reply, data = other.replies[0]
    if not reply.get("ok") or data != SMALL:
        raise failed(t("the reply is not the file", "la respuesta no es el archivo"))
    quiet.sock.close()
    raise passed(t("served the second client while the first had sent nothing yet",
                   "atendió al segundo cliente mientras el primero aún no había enviado nada"))


def out_of_descriptors(server: Server, root: Path, tag: str, patience: float = 10.0) -> None:
    """The process runs out of descriptors: accept() fails with EMFILE while clients
    wait in the listen queue. The server must neither die nor spin, and must serve
    again once descriptors are free (its soft limit, lowered and then restored from
    outside with prlimit(2))."""
    first = Client.connect(server)
    first.sock.sendall(protocol.encode_get(1, "small.txt"))
    await_replies(server, first, 1)
    port = first.sock.getsockname()[1]
    first.sock.close()
    wait_until_closed(server, port)
    limit = resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE,
                     (server.open_descriptors(), limit[1]))  # not one more: accept fails
    waiting = [Client.connect(server) for _ in range(4)]
    try:
        for i, client in enumerate(waiting):
            client.sock.sendall(protocol.encode_get(i + 1, "small.txt"))
        start, watch = server.cpu_seconds(), Watch(server)
        while not watch.asleep():  # (asleep: it stopped trying; a spinning one never is)
            server.check_alive()
            if server.cpu_seconds() - start > 1.0:
                raise failed(t("accept() fails with EMFILE and the server calls it again "
                               "and again: it spins (a readable listener it cannot empty)",
                               "accept() falla con EMFILE y el servidor lo vuelve a llamar "
                               "una y otra vez: da vueltas en vano (una escucha legible que "
                               "no puede vaciar)"))
            time.sleep(POLL)
    finally:
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, limit)
    for client in waiting:
        client.sock.close()
    # A server may wait a while before it accepts again (muxserver and asyncio back off
    # for a second): asleep with a client waiting is a FAIL only after ``patience``.
    late = Client.connect(server)
    late.sock.sendall(protocol.encode_get(9, "small.txt"))
    deadline = time.monotonic() + patience
    while True:
        try:
            await_replies(server, late, 1)
            break
        except Verdict as verdict:
            if "died" in verdict.reason or "murió" in verdict.reason or (
                    time.monotonic() > deadline):
                raise
    raise passed(t("survived accept() failing with EMFILE, slept, and served again once "
                   "descriptors were free",
                   "sobrevivió a accept() fallando con EMFILE, durmió, y volvió a atender "
                   "cuando hubo descriptores libres"))


def wait_until_closed(server: Server, peer_port: int) -> None:
    """Until the server has closed its end of the connection from ``peer_port``, so
    its descriptor is free (or it sleeps keeping it: then it stays taken)."""
    watch = Watch(server)
    while server.holds(peer_port):
        server.check_alive()
        if watch.asleep():
            return  # (it keeps the connection: nothing more to wait for)
        time.sleep(POLL)


SCENARIOS: dict[str, Callable[[Server, Path, str], None]] = {
    "one byte per send": one_byte,
    "pipelined burst": burst,
    "half a request": half_request,
    "slow reader": slow_reader,
    "memory bound": memory,
    "half close": half_close,
    "reset": reset,
    "idle timeout": idle,
    "no busy loop": busy,
    "two clients": two_clients,
    "out of descriptors": out_of_descriptors,
}
#: The tutorial's lesson each scenario's pitfall is the subject of: every FAIL cites it
#: (docs/TUTORIAL.md; the exercises and the stage sources use the same numbers).
LESSONS = {"one byte per send": 4, "pipelined burst": 5, "half a request": 4,
           "slow reader": 3, "memory bound": 8,
           "half close": 6, "reset": 9, "idle timeout": 11, "no busy loop": 7,
           "two clients": 1, "out of descriptors": 13}
#: --scenario takes a scenario's Spanish name too, as the Spanish table prints it.
ENGLISH = {SPANISH[name]: name for name in SCENARIOS}


def make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="muxserver-stages-"))
    (root / "small.txt").write_bytes(SMALL)
    (root / "mid.bin").write_bytes(os.urandom(MiB))
    (root / "big.bin").write_bytes(os.urandom(16 * MiB))
    return root


def run_one(template: list[str], scenario: str, root: Path, tag: str) -> tuple[bool, str]:
    idle = IDLE_TIMEOUT if scenario == "idle timeout" else RELAXED_TIMEOUT
    command = [arg.replace("{idle}", f"{idle:g}") for arg in template]
    server = Server(command, root)
    server.idle_given = any("{idle}" in arg for arg in template)
    def cite(number: int) -> str:
        return t(f" (lesson {number})", f" (lección {number})")

    lesson = cite(LESSONS[scenario])
    try:
        SCENARIOS[scenario](server, root, tag)
        return False, t("the scenario gave no verdict", "el escenario no dio veredicto")
    except Verdict as verdict:
        if verdict.passed:
            return True, verdict.reason
        return False, verdict.reason + (cite(verdict.lesson) if verdict.lesson else lesson)
    except OSError as error:  # the client side met the server's end of things
        verdict = server.died()
        return False, (verdict.reason if verdict else t(
            "the connection failed: ", "la conexión falló: ") + str(error)) + lesson
    finally:
        server.stop()


def check(stages: dict[str, list[str]], scenarios: list[str]) -> dict[str, dict[str, tuple]]:
    """{stage: {scenario: (passed, reason)}}; ``{root}`` in a command is the served
    directory, made afresh for this check."""
    root = make_root()

    def run_stage(s: int, template: list[str]) -> dict[str, tuple]:
        command = [arg.replace("{root}", str(root)) for arg in template]
        return {scenario: run_one(command, scenario, root, f"s{s}-{n}")
                for n, scenario in enumerate(scenarios)}

    try:  # the stages side by side (each its own servers and ports; verdicts never time)
        with ThreadPoolExecutor(max_workers=len(stages)) as pool:
            futures = {stage: pool.submit(run_stage, s, template)
                       for s, (stage, template) in enumerate(stages.items())}
            return {stage: future.result() for stage, future in futures.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def print_table(results: dict[str, dict[str, tuple]]) -> None:
    def name(key: str) -> str:
        return t(key, SPANISH.get(key, key))

    def verdict(ok: bool) -> str:
        return t("pass", "pasa") if ok else t("FAIL", "FALLA")

    def number(stage: str) -> str:
        return name(stage).split()[0]   # (the columns: "1" ... "14"; the legend names them)

    stages = list(results)
    scenarios = list(next(iter(results.values())))
    width = max(len(name(s)) for s in scenarios) + 2
    column = max(len(t("FAIL", "FALLA")), *(len(number(s)) for s in stages)) + 1
    print("".ljust(width) + "".join(number(s).ljust(column) for s in stages).rstrip())
    for scenario in scenarios:
        cells = (verdict(results[stage][scenario][0]) for stage in stages)
        print((name(scenario).ljust(width) + "".join(c.ljust(column) for c in cells)).rstrip())
    if any(name(s) != number(s) for s in stages):
        # (a stage's name never split across two lines: its spaces are no-break ones)
        legend = t("stages: ", "etapas: ") + ", ".join(name(s).replace(" ", "\xa0")
                                                      for s in stages)
        lines = textwrap.wrap(legend, width=88, subsequent_indent="  ")
        print("\n" + "\n".join(lines).replace("\xa0", " "))
    changes = what_each_stage_changes(results)
    if changes:
        print(t("\nfrom one stage to the next:", "\nde una etapa a la siguiente:"))
        for stage, fixed, broke in changes:
            parts = []
            if fixed:
                parts.append(t("fixes ", "arregla ") + ", ".join(name(s) for s in fixed))
            if broke:
                parts.append(t("loses ", "pierde ") + ", ".join(name(s) for s in broke))
            print(f"  {name(stage)}: " + "; ".join(parts))
    for stage in stages:
        print(t(f"\nstage {name(stage)}:", f"\netapa {name(stage)}:"))
        for scenario, (ok, reason) in results[stage].items():
            print(f"  {verdict(ok)}  {name(scenario)}: {reason}")


def what_each_stage_changes(results: dict[str, dict[str, tuple]]
                            ) -> list[tuple[str, list[str], list[str]]]:
    """For each stage after the first, the rows it passes that the stage before failed
    (what its idea fixes) and the rows it fails that the stage before passed (what it
    gave up: stage 7's non-blocking sends lose what the blocking sendall gave for free).
    Stages with no change left out."""
    stages, changes = list(results), []
    for before, stage in zip(stages, stages[1:]):
        fixed = [s for s, (ok, _) in results[stage].items() if ok and not results[before][s][0]]
        broke = [s for s, (ok, _) in results[stage].items() if not ok and results[before][s][0]]
        if fixed or broke:
            changes.append((stage, fixed, broke))
    return changes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--stage", action="append", metavar="N",
                   help="only this stage (its number, e.g. 3); may be repeated")
    p.add_argument("--scenario", action="append", choices=[*SCENARIOS, *ENGLISH],
                   metavar="NAME", help="only this scenario (its English or Spanish name); "
                                        "may be repeated")
    p.add_argument("--server", metavar="COMMAND",
                   help="check your own server instead; {port} and {root} are filled in, "
                        "and {idle}: the idle timeout to start it with")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--lang", choices=("en", "es"), default=None,
                   help="language of the table (default: from the locale, else en)")
    args = p.parse_args()
    global LANG
    from muxserver.trace import default_language
    LANG = args.lang or default_language()
    if sys.platform != "linux":
        raise SystemExit("check.py watches the server through Linux's /proc")
    if args.server:
        stages = {"yours": shlex.split(args.server.replace("{port}", "0"))}
        if "{idle}" not in args.server and not args.json:
            print(t("note: the command has no {idle}; the 'idle timeout' row runs your server "
                    "with its own timeout (add --idle-timeout {idle} to give it 1 s)",
                    "nota: la orden no lleva {idle}; la fila «plazo de inactividad» arranca tu "
                    "servidor con su propio plazo (añade --idle-timeout {idle} para darle 1 s)"))
    else:
        chosen = {k: v for k, v in STAGES.items()
                  if not args.stage or k.split()[0] in args.stage}
        extra = shlex.split(COMMON_ARGS)
        stages = {k: v + extra for k, v in chosen.items()}
    results = check(stages, [ENGLISH.get(name, name) for name in args.scenario or SCENARIOS])
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)
    return 0 if all(ok for rows in results.values() for ok, _ in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
