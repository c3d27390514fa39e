#!/usr/bin/env python3
"""Real-terminal check of --step, in tmux: the loop waits for Enter after every select().

Starts ``python -m muxserver serve --step`` inside a detached tmux session, connects a
client that asks for a file, and presses Enter in the pane turn by turn:

  1. turn 1 shows the listener ready (R) and no connection yet; the client, although
     connected (the kernel accepted it), has no reply: the loop is stopped;
  2. turn 2 shows #1 ready with its request unread, in the kernel (FIONREAD); a second
     Enter typed at turn 1 was dropped, not taken as turn 2's answer; after one more
     Enter the reply goes out;
  3. Ctrl-C (or ``q``, one key, no Enter: --stop-key q) at the prompt stops the server
     (``c`` would let the loop run on instead).

What to watch: run it with --show to print each captured screen.

    python scripts/step_tmux_check.py [--show] [--lang es]

Needs tmux (apt-get install tmux). Exit status 0 when the check passes.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from muxserver import protocol  # noqa: E402

BODY = b"stepped through the loop\n"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_for_text(session: str, pattern: str, timeout: float = 30.0) -> str:
    """The screen once ``pattern`` is on it (polling the pane: a screen has no events)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session)
        if re.search(pattern, screen):
            return screen
        time.sleep(0.05)
    raise SystemExit(f"FAIL: {pattern!r} never appeared on screen:\n"
                     + tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--show", action="store_true", help="print the captured screens")
    p.add_argument("--lang", choices=("en", "es"), default="en")
    p.add_argument("--stop-key", choices=("ctrl-c", "q"), default="ctrl-c",
                   help="how to stop the server at the last prompt")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed (apt-get install tmux)")
    turn = {"en": "turn", "es": "vuelta"}[args.lang]
    listener = {"en": "listener", "es": "escucha"}[args.lang]
    kernel = {"en": r"the kernel holds: [1-9]\d* B received, not read yet",
              "es": r"el núcleo guarda: [1-9]\d* B recibidos y aún sin leer"}[args.lang]
    root = tempfile.mkdtemp(prefix="muxserver-step-")
    with open(os.path.join(root, "a.txt"), "wb") as f:
        f.write(BODY)
    session = f"muxstep{os.getpid()}"
    command = (f"{sys.executable} -m muxserver serve --root {root} --port 0 --step "
               f"--lang {args.lang}; sleep 30")
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "60", "-c", os.getcwd(),
         command)
    client = None
    try:
        screen = wait_for_text(session, r"listening on 127\.0\.0\.1:\d+")
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", screen)[1])
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(protocol.encode_get(1, "a.txt"))
        screen = wait_for_text(session, rf"{turn} 1: .*\n.*fd \d+ +{listener} +R")
        show(args, ("turn 1: the listener is ready; the loop waits",
                    "vuelta 1: la escucha está lista; el bucle espera"), screen)
        if select.select([client], [], [], 0)[0]:
            raise SystemExit("FAIL: the client got a reply while the loop was stopped")
        tmux("send-keys", "-t", session, "Enter", "Enter")  # (the second: typed ahead)
        screen = wait_for_text(session, rf"{turn} 2: .*\n.*fd \d+ +#1 +127\.0\.0\.1:\d+ +R")
        show(args, ("turn 2: #1 is readable: its request waits in the socket",
                    "vuelta 2: #1 es legible: su petición espera en el socket"), screen)
        if not re.search(kernel, screen):
            raise SystemExit("FAIL: turn 2 does not show the request's bytes waiting in the "
                             f"kernel:\n{screen}")
        if select.select([client], [], [], 0)[0]:
            raise SystemExit("FAIL: the key typed ahead answered turn 2: the client got its "
                             "reply before anybody saw that turn")
        tmux("send-keys", "-t", session, "Enter")
        replies = read_reply(client)
        if replies != BODY:
            raise SystemExit(f"FAIL: the reply's body was {replies!r}")
        client.close()
        screen = wait_for_text(session, rf"{turn} 3: ")
        show(args, ("turn 3: #1 readable again: its end of stream",
                    "vuelta 3: #1 legible otra vez: su fin de flujo"), screen)
        # At the prompt, Ctrl-C stops the server, and so does q alone, with no Enter.
        tmux("send-keys", "-t", session, "C-c" if args.stop_key == "ctrl-c" else "q")
        screen = wait_for_text(session, r"muxserver: (stopped after|detenido tras)")
        show(args, (f"{args.stop_key} at the prompt: the server stopped",
                    f"{args.stop_key} en el indicador: el servidor se detuvo"), screen)
    finally:
        if client is not None:
            client.close()
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    print("PASS: --step stopped the loop after each select() and showed the ready sockets "
          "and the connection's state")
    return 0


def read_reply(sock: socket.socket) -> bytes:
    decoder, body = protocol.FrameDecoder(), bytearray()
    while True:
        event = decoder.next_event()
        if event is protocol.NEED_DATA:
            decoder.receive_data(sock.recv(65536))
        elif isinstance(event, protocol.BodyData):
            body += event.data
        elif isinstance(event, (protocol.FrameEnd, protocol.PeerClosed)):
            return bytes(body)


def show(args: argparse.Namespace, titles: tuple[str, str], screen: str) -> None:
    """Print a captured screen under its title (English, Spanish) in --lang's language."""
    if args.show:
        print(f"=== {titles[args.lang == 'es']}\n{screen.rstrip()}\n")


if __name__ == "__main__":
    sys.exit(main())
