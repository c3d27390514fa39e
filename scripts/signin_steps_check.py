#!/usr/bin/env python3
"""How long the event loop is held while passwords are checked.

Starts ``python -m muxserver`` (this checkout's, or ``--repo``'s) with a user file of
four users, sends ``--rounds`` rounds of sign-ins at once over HTTP Basic (for each
user a wrong password and the right one, each on its own connection), stops the
server and prints its own account of the longest loop step and the steps over 20 ms.
Each Argon2id check takes about 30 ms of CPU: in the loop, a step would hold it that
long per password; in the helper thread, no step should.

    python scripts/signin_steps_check.py [--rounds 2] [--repo CHECKOUT] [--runs 3]

Wall time on a busy machine moves these figures; compare checkouts in one run.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USERS = ("u1", "u2", "u3", "u4")


def one_run(repo: Path, rounds: int) -> str:
    with tempfile.TemporaryDirectory() as work:
        root, users = Path(work) / "root", Path(work) / "users"
        root.mkdir()
        for user in USERS:
            subprocess.run([sys.executable, "-m", "muxserver", "user", "add", user, "--file",
                            str(users)], input=f"pw-{user}\n", text=True, cwd=repo,
                           check=True, capture_output=True)
        server = subprocess.Popen(
            [sys.executable, "-m", "muxserver", "serve", "--root", str(root), "--port", "0",
             "--no-console", "--token-file", str(users), "--address-auth-failures", "1000"],
            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            port = 0
            for line in server.stdout:
                match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if match:
                    port = int(match.group(1))
                    break
            threads = [threading.Thread(target=sign_in, args=(port, user, password))
                       for round_ in range(rounds) for user in USERS
                       for password in (f"wrong-{round_}", f"pw-{user}")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0]
        found = re.search(r"longest loop step .*", output)
        return found.group(0) if found else "(no summary: " + output[-300:] + ")"


def sign_in(port: int, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/?format=json", headers={"Authorization": "Basic " + auth})
        connection.getresponse().read()
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repo", type=Path, help="another checkout to compare, alternating")
    args = parser.parse_args()
    for run in range(args.runs):
        for name, repo in (("this", REPO), ("other", args.repo)):
            if repo is not None:
                print(f"run {run + 1} {name:<5} {one_run(repo.resolve(), args.rounds)}",
                      flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
