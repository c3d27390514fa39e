"""--step: the loop stops after every select() and shows what it is about to do.

A debugger for the event loop, for learners. After each wake-up it prints which
sockets select() returned (descriptor, who is at the other end, readable or writable)
and every connection's state: what its decoder waits for, the bytes it holds that
were received but not handled yet, the bytes queued to send, and the interest the
selector watches it for; and beside that, what the kernel holds for the same socket
(bytes received that no recv has taken yet, bytes sent that the peer has not
acknowledged). Then it waits for one key: Enter (one more turn), ``c`` (run on
without stopping) or ``q`` (stop the server gracefully; Ctrl-C at the prompt stops it
at once, since the loop's own handler sees that signal too, as a second stop).
Keys typed while the loop ran are dropped: each turn is answered by a key pressed
after it was shown.

Stopping the loop is the point: while the prompt waits, no socket is served, which is
exactly what a blocking call in a real handler would do to every client.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import sys
import termios
import threading
import tty
from typing import TYPE_CHECKING, Callable

from .observe import Observer

if TYPE_CHECKING:
    from .server import Server

#: <linux/sockios.h>: bytes in a socket's send queue not yet acknowledged (the same
#: number as TIOCOUTQ, which Python's termios module has).
SIOCOUTQ = termios.TIOCOUTQ

TEXTS = {
    "en": {"turn": "── turn {count}: select() returned {ready} ready",
           "turn_one": "── turn {count}: select() returned 1 ready",
           "ready": "  ready: fd {fd:<4} {label:<10} {peer:<24} {mask}",
           "none": "  (no socket ready: a timer is due)",
           "conns": "  connections:",
           "conn": "    {label:<4} fd {fd:<4} {peer:<22} {state:<16} unhandled in: {inbuf:<9} "
                   "queued out: {out:<11} interest: {interest}",
           "kernel": "{pad}the kernel holds: {unread} received, not read yet · {unacked} "
                     "sent, not acknowledged yet",
           "empty": "    (none)",
           "prompt": "[Enter] next turn · c: continue without stopping · q: stop the server > ",
           "R": "R", "W": "W", "nothing": "-"},
    "es": {"turn": "── vuelta {count}: select() devolvió {ready} listos",
           "turn_one": "── vuelta {count}: select() devolvió 1 listo",
           "ready": "  listo: fd {fd:<4} {label:<10} {peer:<24} {mask}",
           "none": "  (ningún socket listo: vence un temporizador)",
           "conns": "  conexiones:",
           "conn": "    {label:<4} fd {fd:<4} {peer:<22} {state:<16} entrada sin procesar: "
                   "{inbuf:<9} salida en cola: {out:<11} interés: {interest}",
           "kernel": "{pad}el núcleo guarda: {unread} recibidos y aún sin leer · {unacked} "
                     "enviados y aún sin confirmar",
           "empty": "    (ninguna)",
           "prompt": "[Intro] otra vuelta · c: seguir sin parar · q: detener el servidor > ",
           "R": "R", "W": "W", "nothing": "-"},
}


#: The connection states (``state_label``) and handler labels, in Spanish.
STATES_ES = {
    "new connection": "conexión nueva", "idle": "ociosa", "reading prefix": "leyendo prefijo",
    "reading header": "leyendo cabecera", "reading request": "leyendo petición",
    "receiving body": "recibiendo cuerpo", "skipping body": "saltando cuerpo",
    "sending body": "enviando cuerpo", "sending reply": "enviando respuesta",
    "verifying": "verificando", "hashing": "calculando hash", "listing": "listando",
    "refusing": "rechazando", "TLS handshake": "negociación TLS",
    "closing: sending": "cerrando: enviando", "closing: draining": "cerrando: vaciando",
    "listener": "escucha", "waker": "despertador",
}


class Stepper(Observer):
    """--step, as an observer of the loop's wake-ups (observe.py)."""

    def __init__(self, server: "Server", lang: str = "en",
                 ask: Callable[[str], str] | None = None,
                 write: Callable[[str], None] = print) -> None:
        self.server = server
        self.texts = TEXTS[lang]
        self.words = STATES_ES if lang == "es" else {}
        self.ask = ask or ask_one_key
        self.write = write
        self.stepping = True

    def wakeup(self, events: list[tuple[selectors.SelectorKey, int]], count: int) -> None:
        if not self.stepping:
            return
        for line in self.describe(events):
            self.write(line)
        answer = self.prompt()
        if answer.startswith("c"):
            self.stepping = False
        elif answer.startswith("q"):
            self.stepping = False
            self.server.stop_gracefully()

    def prompt(self) -> str:
        """The learner's answer. Ctrl-C at the prompt is "q": the loop's own SIGINT
        handler only wakes the loop, and the loop is what is waiting here."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
        try:
            return self.ask(self.texts["prompt"]).strip().lower()
        except EOFError:  # no terminal any more: run on
            return "c"
        except KeyboardInterrupt:
            return "q"
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def describe(self, events: list[tuple[selectors.SelectorKey, int]]) -> list[str]:
        t, server = self.texts, self.server
        turn = t["turn_one"] if len(events) == 1 else t["turn"]
        lines = [turn.format(count=server.loop.wakeups, ready=len(events))]
        by_fd = {channel.fd: channel for channel in server.channels.values()}
        for key, mask in events:
            channel = by_fd.get(key.fd)
            lines.append(t["ready"].format(fd=key.fd, label=self.say(key.data.label),
                                           peer=channel.peer if channel else "",
                                           mask=self.mask(mask)))
        if not events:
            lines.append(t["none"])
        lines.append(t["conns"])
        for channel in server.channels.values():
            protocol = channel.protocol
            lines.append(t["conn"].format(
                label=channel.label, fd=channel.fd, peer=channel.peer,
                state=self.say(protocol.state_label), inbuf=f"{protocol.recv_buffered} B",
                out=f"{channel.out.total} B", interest=self.mask(channel.events)))
            queues = kernel_queues(channel.fd)
            if queues is not None:
                lines.append(t["kernel"].format(pad=" " * 14, unread=f"{queues[0]} B",
                                                unacked=f"{queues[1]} B"))
        if not server.channels:
            lines.append(t["empty"])
        return lines

    def say(self, label: str) -> str:
        """A state or a label in the stepper's language ("HTTP idle": "HTTP ociosa")."""
        prefix = "HTTP " if label.startswith("HTTP ") else ""
        rest = label[len(prefix):]
        return prefix + self.words.get(rest, rest)

    def mask(self, events: int) -> str:
        t = self.texts
        letters = [t[letter] for bit, letter in ((selectors.EVENT_READ, "R"),
                                                 (selectors.EVENT_WRITE, "W")) if events & bit]
        return "+".join(letters) or t["nothing"]


def kernel_queues(fd: int) -> tuple[int, int] | None:
    """What the kernel holds for a socket, beside what the program holds: (bytes received
    and not read yet by recv, bytes sent and not yet acknowledged by the peer), from the
    FIONREAD and SIOCOUTQ ioctls; None where they cannot be asked (a closed socket)."""
    try:
        unread = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        unacked = fcntl.ioctl(fd, SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return (int.from_bytes(unread, sys.byteorder, signed=True),
            int.from_bytes(unacked, sys.byteorder, signed=True))


def ask_one_key(prompt: str) -> str:
    """The answer at the prompt: one key, no Enter needed, and never one typed before
    the prompt appeared (keys pressed while the loop ran are dropped, not replayed as
    answers to turns nobody saw). Without a terminal: a line, as input() reads it."""
    if not sys.stdin.isatty():
        return input(prompt)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    try:
        tty.setcbreak(fd)  # (keys one at a time; Ctrl-C still interrupts)
        termios.tcflush(fd, termios.TCIFLUSH)  # what was typed ahead: dropped
        key = os.read(fd, 1).decode(errors="replace")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    if not key:
        raise EOFError
    sys.stdout.write("\n")
    return "" if key in "\r\n" else key
