#!/usr/bin/env python3
"""Check your answers to the exercises, and name the pitfall a wrong one hits.

    python scripts/exercises/check.py my_answer.py [--lang es] [--quick]

1. Decoder: the same nine requests fed in pieces of every size from 1 to 4096 bytes
   (a prefix split in two, a header split anywhere, three requests in one piece...),
   then all at once; and a frame with a wrong magic number.
2. flush: a 2 MiB outbox sent through a socket whose buffers take a few KiB at a
   time, with the reader draining between calls: every byte must arrive exactly once,
   in order, and flush must return while the socket is full.
3. interest: every state a connection can be in.
4. Your three parts as a whole server (scripts/exercises/server.py) against the
   stage checker's clients: one byte per send, a pipelined burst, a half close, a
   slow reader's memory, and an idle server's wake-ups (no busy loop). --quick skips it.
(es) Comprueba tus respuestas y nombra el error que comete una respuesta equivocada.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from muxserver import protocol  # noqa: E402
from server import load  # noqa: E402  (this folder's server.py: one loader for both)

LANG = "en"
R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


def t(english: str, spanish: str) -> str:
    return spanish if LANG == "es" else english


class Wrong(Exception):
    """An answer failed; the message names the pitfall."""


# --- exercise 1 -----------------------------------------------------------------------

def requests() -> tuple[bytes, list[tuple[dict, bytes]]]:
    """A stream of nine requests and what a decoder must make of it."""
    bodies = [b"", b"x" * 300, b"", b"y" * 5000, b"", b"z", b"", b"w" * 70, b""]
    stream, expected = b"", []
    for i, body in enumerate(bodies):
        if body:
            header = {"id": i, "op": "put", "name": f"f{i}", "length": len(body)}
            frame = protocol.encode_frame({"id": i, "op": "put", "name": f"f{i}"},
                                          len(body)) + body
        else:
            header = {"id": i, "op": "get", "name": f"ñ{i}"}
            frame = protocol.encode_frame(header)
        stream += frame
        expected.append((header, body))
    return stream, expected


def feed_all(answer, stream: bytes, size: int) -> list:
    decoder, got = answer.Decoder(), []
    for start in range(0, len(stream), size):
        got += decoder.feed(stream[start:start + size])
    return got


def check_decoder(answer) -> str:
    stream, expected = requests()
    # All at once first: a decoder that drops leftovers loses requests there at once.
    for size in [len(stream), *range(1, 4097)]:
        try:
            got = feed_all(answer, stream, size)
        except NotImplementedError:
            raise Wrong(t("not written yet", "aún sin escribir")) from None
        except Exception as exc:  # noqa: BLE001 (any crash is the answer's)
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise Wrong(t(f"recv size {size}: {type(exc).__name__}: {exc} (line {where.lineno})"
                          f"; {_split_hint(size, exc)}",
                          f"tamaño de recv {size}: {type(exc).__name__}: {exc} (línea "
                          f"{where.lineno}); {_split_hint(size, exc)}")) from None
        if got != expected:
            raise Wrong(_what_went_wrong(size, got, expected))
    try:
        answer.Decoder().feed(b"GET / HTTP/1.1\r\n\r\n")
    except ValueError:
        pass
    else:
        raise Wrong(t("a frame with a wrong magic number was accepted: raise ValueError",
                      "se aceptó una trama con un número mágico equivocado: lanza ValueError"))
    return t(f"the same {len(expected)} requests from every recv size, 1 to 4096 bytes, "
             "and all at once", f"las mismas {len(expected)} peticiones con cada tamaño de "
             "recv, de 1 a 4096 bytes, y todas de golpe")


def _split_hint(size: int, exc: Exception) -> str:
    if size < 8 or isinstance(exc, struct.error):  # it read a prefix not there (yet)
        return t("lesson 4: even the 8-byte prefix arrives in pieces; keep the bytes and wait",
                 "lección 4: hasta el prefijo de 8 bytes llega a trozos; guarda los bytes y espera")
    return t("lesson 2: one recv is not one message",
             "lección 2: un recv no es un mensaje")


def _what_went_wrong(size: int, got: list, expected: list) -> str:
    ids = [h.get("id") for h, _ in got if isinstance(h, dict)]
    if len(got) < len(expected) and all(item in expected for item in got):
        return t(f"recv size {size}: only ids {ids} came out of 9: lesson 5, the bytes after "
                 "a request (the start of the next) were dropped",
                 f"tamaño de recv {size}: solo salieron los ids {ids} de 9: lección 5, se tiraron "
                 "los bytes que siguen a una petición (el comienzo de la siguiente)")
    if len(got) > len(expected):
        return t(f"recv size {size}: {len(got)} requests out of 9 sent: bytes were used twice",
                 f"tamaño de recv {size}: {len(got)} peticiones de 9 enviadas: bytes usados dos "
                 "veces")
    return t(f"recv size {size}: the requests came out wrong (ids {ids}): bodies or headers cut "
             "at the wrong place; lesson 2: one recv is not one message",
             f"tamaño de recv {size}: las peticiones salieron mal (ids {ids}): cuerpos o "
             "cabeceras cortados donde no era; lección 2: un recv no es un mensaje")


# --- exercise 2 -----------------------------------------------------------------------

class TookTooLong(Exception):
    pass


def check_flush(answer) -> str:
    data = hashlib.shake_256(b"flush").digest(2 * 1024 * 1024)
    outbox = bytearray(data)
    # A Unix socket pair with small buffers: every send takes a few KiB, and a read
    # makes room at once (TCP on loopback would add its delayed acknowledgements).
    sender, receiver = socket.socketpair()
    with sender, receiver:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender.setblocking(False)
        received, calls = bytearray(), 0
        while outbox and calls < 1_000_000:
            calls += 1
            before = len(outbox)
            try:
                with deadline(10):
                    answer.flush(sender, outbox)
            except NotImplementedError:
                raise Wrong(t("not written yet", "aún sin escribir")) from None
            except TookTooLong:
                raise Wrong(t("flush did not return while the socket was full: it spins "
                              "on BlockingIOError (return, and let select wait)",
                              "flush no volvió con el socket lleno: da vueltas sobre "
                              "BlockingIOError (vuelve y deja que select espere)")) from None
            except BlockingIOError:
                raise Wrong(t("BlockingIOError escaped flush. With sendall: lesson 3, it "
                              "raises part-way and cannot say how much went; use send "
                              "and its return value",
                              "BlockingIOError salió de flush. Con sendall: lección 3, lanza "
                              "a medias y no dice cuánto salió; usa send y lo que devuelve")
                            ) from None
            _drain(receiver, received)
            if received != data[:len(received)]:
                break  # already wrong: bytes twice or out of order (said below)
            if outbox and len(outbox) == before:
                # No progress: wait, as a loop would, until the reader has something
                # or the socket can take more (the kernel moves the bytes meanwhile).
                ready = select.select([receiver], [sender], [], 10)
                if not any(ready):
                    raise Wrong(t("flush made no progress on a socket that could take "
                                  "more", "flush no avanzó en un socket que admitía más"))
        sender.close()
        receiver.setblocking(True)
        while chunk := receiver.recv(1 << 20):
            received += chunk
    if received == data:
        return t(f"2 MiB arrived exactly once, in order, over {calls} calls",
                 f"2 MiB llegaron exactamente una vez, en orden, en {calls} llamadas")
    if received == data[:len(received)]:  # a true beginning, and no more: lost bytes
        raise Wrong(t(f"{len(data) - len(received):,} bytes lost: flush removed from the outbox "
                      "bytes that send() did not take (lesson 3: send's return value)",
                      f"se perdieron {len(data) - len(received):,} bytes: flush quitó de la "
                      "cola bytes que send() no tomó (lección 3: lo que devuelve send)"))
    raise Wrong(t("bytes arrived twice or out of order: flush sent again bytes that had "
                  "already gone (sendall raises part-way and cannot say how much went: pitfall "
                  "5), or removed a wrong count (lesson 3: send's return value)",
                  "llegaron bytes repetidos o desordenados: flush volvió a enviar bytes que ya "
                  "habían salido (sendall lanza a medias y no dice cuánto salió: lección 3), o "
                  "quitó una cantidad equivocada (lección 3: lo que devuelve send)"))


def _drain(sock: socket.socket, into: bytearray) -> None:
    sock.setblocking(False)
    try:
        while chunk := sock.recv(1 << 20):
            into += chunk
    except BlockingIOError:
        pass


class deadline:
    """Raise TookTooLong in this thread after ``seconds`` (a flush that never returns)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        def ring(_signum, _frame):
            raise TookTooLong
        self.previous = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


# --- exercise 3 -----------------------------------------------------------------------

CASES = [  # (outbox bytes, paused, peer_done), expected, pitfall when wrong
    ((0, False, False), R,
     ("with nothing to write, asking for EVENT_WRITE makes select() return at once, "
      "forever: lesson 7, the busy loop",
      "sin nada que escribir, pedir EVENT_WRITE hace que select() vuelva al instante, "
      "siempre: lección 7, el bucle ocupado")),
    ((500, False, False), R | W,
     ("output waits but EVENT_WRITE is not asked for (or reading stopped): the reply "
      "never leaves",
      "hay salida pendiente pero no se pide EVENT_WRITE (o se dejó de leer): la "
      "respuesta nunca sale")),
    ((500_000, True, False), W,
     ("still reading while paused: lesson 8, no backpressure (memory grows for a client "
      "that does not read)",
      "se sigue leyendo en pausa: lección 8, sin contrapresión (la memoria crece por un "
      "cliente que no lee)")),
    ((500, False, True), W,
     ("still reading after recv returned b'': select() reports the end of stream again "
      "and again (lesson 6: b'' means 'done sending'; send what is owed)",
      "se sigue leyendo después de que recv devolviera b'': select() avisa del fin del "
      "flujo una y otra vez (lección 6: b'' significa 'terminé de enviar'; envía lo debido)")),
    ((0, False, True), 0,
     ("nothing to read and nothing to send: ask for nothing (the server closes it)",
      "nada que leer ni que enviar: no pidas nada (el servidor la cierra)")),
    ((0, True, False), 0,
     ("paused with an empty outbox cannot happen, but ask for nothing to read while paused",
      "en pausa con la cola vacía no puede pasar, pero en pausa no se pide lectura")),
]


def check_interest(answer) -> str:
    for (outbox, paused, peer_done), expected, (english, spanish) in CASES:
        try:
            got = answer.interest(outbox, paused, peer_done)
        except NotImplementedError:
            raise Wrong(t("not written yet", "aún sin escribir")) from None
        if got != expected:
            raise Wrong(f"interest({outbox}, paused={paused}, peer_done={peer_done}) = {got}, "
                        + t(f"not {expected}: ", f"no {expected}: ") + t(english, spanish))
    return t(f"right in all {len(CASES)} states", f"correcto en los {len(CASES)} estados")


# --- the whole server -----------------------------------------------------------------

SCENARIOS = ["one byte per send", "pipelined burst", "half close", "memory bound",
             "no busy loop", "two clients"]


def check_server(path: str) -> list[tuple[bool, str]]:
    command = (f"{sys.executable} {HERE / 'server.py'} --answer {Path(path).resolve()} "
               "--port {port} --root {root} --idle-timeout {idle}")
    args = [sys.executable, str(HERE.parent / "stages" / "check.py"), "--server", command,
            "--json", "--lang", LANG]
    for scenario in SCENARIOS:
        args += ["--scenario", scenario]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if result.returncode not in (0, 1):  # (1: a row failed, and the rows say which)
        lines = result.stderr.strip().splitlines()
        return [(False, lines[-1] if lines else f"the checker stopped ({result.returncode})")]
    results = json.loads(result.stdout)["yours"]
    names = load(str(HERE.parent / "stages" / "check.py"), "stage_check").SPANISH
    return [(ok, f"{t(name, names.get(name, name))}: {reason}")
            for name, (ok, reason) in results.items()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("answer", help="your copy of scripts/exercises/skeleton.py")
    p.add_argument("--lang", choices=("en", "es"), default=None)
    p.add_argument("--quick", action="store_true", help="skip the whole-server run")
    args = p.parse_args()
    global LANG
    from muxserver.trace import default_language
    LANG = args.lang or default_language()
    answer = load(args.answer)
    exercises: list[tuple[str, Callable]] = [
        (t("exercise 1, the decoder", "ejercicio 1, el decodificador"), check_decoder),
        (t("exercise 2, flush", "ejercicio 2, flush"), check_flush),
        (t("exercise 3, interest", "ejercicio 3, el interés"), check_interest),
    ]
    failures = 0
    for title, check in exercises:
        try:
            print(f"{t('pass', 'pasa')}  {title}: {check(answer)}")
        except Wrong as wrong:
            failures += 1
            print(f"{t('FAIL', 'FALLA')}  {title}: {wrong}")
    if failures or args.quick:
        return 1 if failures else 0
    for ok, line in check_server(args.answer):
        failures += not ok
        print(f"{t('pass', 'pasa') if ok else t('FAIL', 'FALLA')}  "
              f"{t('your server', 'tu servidor')}, {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
