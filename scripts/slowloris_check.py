#!/usr/bin/env python3
"""Slowloris check: dribbling clients of every kind are closed at the header timeout,
while a normal client keeps being served promptly.

Starts two servers (plain, and TLS with a throw-away certificate from ``trustme``),
opens ``--clients`` dribbling connections spread over four kinds, and keeps each one
dribbling: one more byte every ``--interval`` seconds, never finishing its header:

* native:    inside a native frame's prefix and header;
* http:      inside an HTTP request head;
* sniffer:   one letter, then more letters: the server cannot even tell the protocol;
* tls:       inside a TLS ClientHello (the handshake never ends).

Meanwhile a normal client asks for a listing (native) and a page (HTTP) in turn, and
the script records how long each answer took. It passes when every dribbler was
closed by the server at the header timeout (not before, not much after), and no normal
request took longer than ``--max-latency`` seconds.

    python scripts/slowloris_check.py [--clients 150] [--header-timeout 3]

Figures depend on the machine (a shared VM here: say so next to them).
Exit status 0 when the check passes.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muxserver import protocol  # noqa: E402
from muxserver.client import Client  # noqa: E402

KINDS = ("native", "http", "sniffer", "tls")
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def start_server(root: Path, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "muxserver", "serve", "--port", "0",
                             "--root", str(root), "--no-console", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    for line in proc.stdout:
        match = LISTENING.search(line)
        if match:
            return proc, int(match.group(2))
    raise SystemExit("FAIL: a server did not start")


def client_hello() -> bytes:
    """The first bytes a real TLS client sends (a ClientHello), made by ssl itself."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class Dribbler:
    def __init__(self, kind: str, port: int, script: bytes) -> None:
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.script = script  # the bytes it dribbles; never all of them
        self.sent = 0
        self.opened = time.monotonic()
        self.first_byte = 0.0
        self.closed_at = 0.0

    def dribble(self) -> None:
        if self.sent < len(self.script) - 1:
            try:
                self.sock.send(self.script[self.sent:self.sent + 1])
            except OSError:
                return
            if not self.sent:
                self.first_byte = time.monotonic()
            self.sent += 1

    def on_readable(self) -> bool:
        """True once the server has closed the connection."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if data:
            return False  # the server's goodbye (a timeout frame or a 408), then EOF
        self.closed_at = time.monotonic()
        return True


def scripts(tls_hello: bytes) -> dict[str, bytes]:
    return {
        "native": protocol.encode_list(1, "") * 2,
        "http": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + b"x" * 200 + b"\r\n\r\n",
        "sniffer": b"GETGETGETGETGETG",
        "tls": tls_hello,
    }


def normal_requests(port: int) -> float:
    """One native listing and one HTTP page, each on a new connection; the slower time."""
    worst = 0.0
    started = time.monotonic()
    with Client("127.0.0.1", port, timeout=30) as client:
        client.list()
    worst = max(worst, time.monotonic() - started)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    return max(worst, time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--header-timeout", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between two bytes of a dribbler")
    parser.add_argument("--max-latency", type=float, default=1.0)
    args = parser.parse_args()
    try:
        import trustme
    except ImportError:
        raise SystemExit("needs trustme (pip install -e '.[test]')") from None

    work = Path(tempfile.mkdtemp(prefix="slowloris-"))
    (work / "root").mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    timeout = ["--header-timeout", str(args.header_timeout)]
    plain, plain_port = start_server(work / "root", *timeout)
    secure, tls_port = start_server(work / "root", *timeout, "--tls-cert",
                                    str(work / "cert.pem"), "--tls-key", str(work / "key.pem"))
    selector = selectors.DefaultSelector()
    dribblers: list[Dribbler] = []
    latencies: list[float] = []
    try:
        by_kind = scripts(client_hello())
        for i in range(args.clients):
            kind = KINDS[i % len(KINDS)]
            dribbler = Dribbler(kind, tls_port if kind == "tls" else plain_port, by_kind[kind])
            dribbler.dribble()
            selector.register(dribbler.sock, selectors.EVENT_READ, dribbler)
            dribblers.append(dribbler)
        open_left = len(dribblers)
        next_drip = next_probe = time.monotonic()
        give_up = time.monotonic() + args.header_timeout * 3 + 10
        while open_left and time.monotonic() < give_up:
            now = time.monotonic()
            if now >= next_drip:
                for dribbler in dribblers:
                    if not dribbler.closed_at:
                        dribbler.dribble()
                next_drip = now + args.interval
            if now >= next_probe:
                latencies.append(normal_requests(plain_port))
                next_probe = time.monotonic() + 0.2
            for key, _mask in selector.select(timeout=0.05):
                if key.data.on_readable():
                    selector.unregister(key.fileobj)
                    open_left -= 1
    finally:
        for dribbler in dribblers:
            dribbler.sock.close()
        for proc in (plain, secure):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    return report(args, dribblers, latencies)


def report(args: argparse.Namespace, dribblers: list[Dribbler],
           latencies: list[float]) -> int:
    ok = True
    print(f"{len(dribblers)} dribbling clients, one byte every {args.interval:g} s; "
          f"header timeout {args.header_timeout:g} s (shared, noisy VM: figures vary)")
    for kind in KINDS:
        mine = [d for d in dribblers if d.kind == kind]
        still_open = [d for d in mine if not d.closed_at]
        lived = [d.closed_at - d.first_byte for d in mine if d.closed_at]
        if still_open or not lived:
            print(f"  {kind:8} {len(still_open)} of {len(mine)} never closed")
            ok = False
            continue
        early = [t for t in lived if t < args.header_timeout - 0.05]
        late = [t for t in lived if t > args.header_timeout + 0.5]
        print(f"  {kind:8} {len(mine):4} closed after {min(lived):.2f} to {max(lived):.2f} s "
              f"from their first byte (median {statistics.median(lived):.2f} s)")
        ok = ok and not early and not late
    worst = max(latencies) if latencies else float("inf")
    print(f"  normal client: {len(latencies)} rounds (native list + HTTP GET), median "
          f"{statistics.median(latencies) * 1000:.1f} ms, worst {worst * 1000:.1f} ms")
    ok = ok and worst <= args.max_latency
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
