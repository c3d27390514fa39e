#!/usr/bin/env python3
"""Two muxservers on one root behind HAProxy: uploads go on when one of them dies.

What an operator who outgrows one machine builds (docs/OPERATIONS.md, "More than one
machine"), on one machine: two servers serving one root (a shared file system's
stand-in) and one user file, HAProxy in TCP mode in front of them (so the native
protocol, HTTP and TLS all pass through it) with health checks. Through HAProxy:

1. native puts and gets (each a new connection, so both servers take some), curl PUT
   and GET, all byte-identical;
2. a tus upload whose server is killed (SIGKILL) in the middle of a piece: the client
   asks again where it stands, HAProxy sends it to the other server, which takes over
   the dead one's partial file once its claim lapses (twice --stall-timeout) and
   finishes the upload, byte-identical;
3. after the kill, a native put: stored whole by the server left; no name holds a
   piece of an upload.

Prints each step and PASS or FAIL. Needs haproxy (Debian: apt-get install haproxy) and
curl.

    python scripts/cluster_check.py [--mib 64] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, Spawned, free_port, spawn_muxserver, wait_listening  # noqa: E402

TOKEN = "cluster-check-token-0123456789"
PIECE = 8 * 1024 * 1024


def start_server(root: Path, users: Path) -> Spawned:
    return spawn_muxserver(root, "--token-file", str(users), "--allow-overwrite",
                           "--stall-timeout", "2", "--log-level", "warning")


def receiving(server: Spawned, at_least: int) -> bool:
    """Whether a connection of ``server`` has brought it ``at_least`` bytes (the
    upload's, not a health check's: those bring none)."""
    out = subprocess.run(["ss", "-tniH", "state", "established", f"( sport = :{server.port} )"],
                         capture_output=True, text=True).stdout
    return any(int(n) >= at_least for n in re.findall(r"bytes_received:(\d+)", out))


def start_haproxy(work: Path, servers: list[Spawned]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = work / "haproxy.cfg"
    config.write_text("\n".join([
        "global", "    maxconn 1000",
        "defaults", "    mode tcp", "    timeout connect 2s", "    timeout client 120s",
        "    timeout server 120s", "    retries 3", "    option redispatch",
        "frontend muxserver", f"    bind 127.0.0.1:{port}", "    default_backend servers",
        "backend servers", "    balance roundrobin", "    option tcp-check",
        *(f"    server s{i} 127.0.0.1:{s.port} check inter 300ms fall 2 rise 1"
          for i, s in enumerate(servers)), ""]))
    proc = subprocess.Popen(["haproxy", "-f", str(config), "-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return proc, port


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "muxserver", *args], cwd=REPO,
                          capture_output=True, text=True,
                          env={**os.environ, "MUXSERVER_TOKEN": TOKEN})


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tus(port: int, method: str, path: str, headers: dict[str, str],
        body: bytes = b"") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(method, path, body, {"Tus-Resumable": "1.0.0",
                                            "Authorization": f"Bearer {TOKEN}", **headers})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="the big upload's size")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    for tool in ("haproxy", "curl", "ss"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(dir=args.dir))
    root, users = work / "root", work / "users"
    root.mkdir()
    users.write_text(f"token ci {TOKEN}\n")
    servers: list[Spawned] = []
    haproxy = None
    ok = True

    def check(what: str, good: bool) -> None:
        nonlocal ok
        ok = ok and good
        print(f"  [{'ok' if good else 'FAIL'}] {what}", flush=True)

    try:
        servers = [start_server(root, users)]  # (the first makes the server secret)
        servers.append(start_server(root, users))
        haproxy, port = start_haproxy(work, servers)
        print(f"two servers on {root} (ports {servers[0].port}, {servers[1].port}), "
              f"HAProxy on {port}", flush=True)

        print("1. through HAProxy, both servers in turn:")
        small = work / "small.bin"
        small.write_bytes(os.urandom(3_000_000))
        stored = [cli("put", str(small), "--as", f"n{i}.bin", "--port", str(port), "-q")
                  for i in range(6)]
        check("6 native puts", all(r.returncode == 0 for r in stored))
        back = work / "back"
        back.mkdir()
        got = [cli("get", f"n{i}.bin", "-o", str(back), "--port", str(port), "-q")
               for i in range(6)]
        check("6 native gets, byte-identical", all(r.returncode == 0 for r in got) and all(
            sha256(back / f"n{i}.bin") == sha256(small) for i in range(6)))
        auth = ["-H", f"Authorization: Bearer {TOKEN}", "-s", "-f"]
        put = subprocess.run(["curl", *auth, "-T", str(small),
                              f"http://127.0.0.1:{port}/curl.bin"], capture_output=True)
        get = subprocess.run(["curl", *auth, "-o", str(back / "curl.bin"),
                              f"http://127.0.0.1:{port}/curl.bin"], capture_output=True)
        check("curl PUT and GET, byte-identical", put.returncode == 0 and get.returncode == 0
              and sha256(back / "curl.bin") == sha256(small))

        print("2. a tus upload whose server is killed in the middle of a piece:")
        big = work / "big.bin"
        data = os.urandom(args.mib << 20)
        big.write_bytes(data)
        meta = "filename " + base64.b64encode(b"big.bin").decode()
        created = tus(port, "POST", "/.tus/", {"Upload-Length": str(len(data)),
                                                "Upload-Metadata": meta})
        location = created.getheader("Location") or ""
        check("the upload begins", created.status == 201 and bool(location))
        path = "/" + location.split("/", 3)[-1] if "://" in location else location
        first = tus(port, "PATCH", path, {"Upload-Offset": "0",
                                          "Content-Type": "application/offset+octet-stream"},
                    data[:PIECE])
        check("its first piece is held", first.status == 204)
        # The second piece: half of it sent, then its server (the one holding a
        # connection) is killed.
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                f"Authorization: Bearer {TOKEN}\r\nUpload-Offset: {PIECE}\r\n"
                f"Content-Type: application/offset+octet-stream\r\n"
                f"Content-Length: {PIECE}\r\n\r\n").encode()
        sock.sendall(head + data[PIECE:PIECE + PIECE // 2])
        deadline = time.monotonic() + 30
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = next((s for s in servers if receiving(s, PIECE // 4)), None)
        if victim is None:
            raise SystemExit("no server holds the upload's connection")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        sock.close()
        print(f"  killed the server on port {victim.port} mid-piece", flush=True)
        started = time.monotonic()
        while True:  # (a tus client asks where it stands; 423: wait, the claim lapses)
            status = tus(port, "HEAD", path, {})
            if status.status != 423 or time.monotonic() - started > 60:
                break
            time.sleep(0.5)
        offset = int(status.getheader("Upload-Offset") or -1)
        check(f"the other server takes over after {time.monotonic() - started:.1f} s, "
              f"at {offset} bytes", status.status == 200 and PIECE <= offset < len(data))
        while 0 <= offset < len(data):
            piece = data[offset:offset + PIECE]
            sent = tus(port, "PATCH", path, {"Upload-Offset": str(offset), "Content-Type":
                                             "application/offset+octet-stream"}, piece)
            if sent.status != 204:
                break
            offset += len(piece)
        check("the upload is finished through it, byte-identical",
              offset == len(data) and (root / "big.bin").exists()
              and sha256(root / "big.bin") == hashlib.sha256(data).hexdigest())

        print("3. after the kill, through HAProxy:")
        again = cli("put", str(big), "--as", "again.bin", "--port", str(port), "-q")
        check("a native put is stored whole by the server left", again.returncode == 0
              and sha256(root / "again.bin") == sha256(big))
        names = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        check("no name holds a piece of an upload", names == sorted(
            [f"n{i}.bin" for i in range(6)] + ["curl.bin", "big.bin", "again.bin"]))
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait()
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
