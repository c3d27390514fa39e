"""The README's "first ten minutes" work as written: every command runs, in order, and
prints what the README says it prints.

The commands run in a shell, with a home directory of their own, on files like the
README's. Three things are changed, for a test's sake only: servers listen on port 0
and on 127.0.0.1 (never beyond the loopback), and the example address 192.168.1.5 and
the example token become the real ones. Printed lines are compared with numbers,
digests and the home directory abstracted away.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
EXAMPLE_TOKEN = "yZ3q0kXjv2r9WmN4Qe7sT1aPc8LuHd6FgBo5Ki-RwE0"
LISTENING = re.compile(r"listening on (\S+):(\d+)")

pytestmark = pytest.mark.timeout(120)


def steps() -> list[tuple[str, list[str]]]:
    """(command, the lines the README shows it printing), in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The first ten minutes"):]
    section = section[:section.index("\n## ", 5)]
    found: list[tuple[str, list[str]]] = []
    for block in BLOCK.findall(section):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line)
    return found


def normalise(line: str, walk: "Walkthrough") -> str:
    line = line.replace(str(walk.home), "/home/ada").replace("127.0.0.1", "192.168.1.5")
    line = line.replace(str(walk.work / "back"), "/tmp/back").replace(walk.token, "TOKEN")
    line = line.replace(EXAMPLE_TOKEN, "TOKEN")
    line = re.sub(r"share=\S+", "share=LINK", line)  # (a link differs every time)
    line = re.sub(r"\b[0-9a-f]{12,}\b", "H", line)
    line = re.sub(r"\d[\d,.]*", "N", line)
    return re.sub(r"\s+", " ", line.strip())


class Walkthrough:
    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.work = tmp / "work"
        self.home.mkdir()
        (self.work / "photos").mkdir(parents=True)
        (self.work / "notes.txt").write_text("lunch at noon, ok\n")  # 19 bytes, as shown
        (self.work / "photos" / "cat.jpg").write_bytes(os.urandom(48_230))
        (self.work / "photos" / "dog.jpg").write_bytes(os.urandom(1_229))
        self.env = {"HOME": str(self.home), "PATH": os.environ["PATH"],
                    "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.server: subprocess.Popen | None = None
        self.port = 0
        self.banner = ""
        self.token = EXAMPLE_TOKEN

    def adapt(self, command: str) -> str:
        command = command.replace("python -m muxserver", f"{sys.executable} -m muxserver")
        command = command.replace("--host 0.0.0.0", "--host 127.0.0.1")
        command = command.replace("192.168.1.5", "127.0.0.1")
        command = command.replace("/tmp/back", str(self.work / "back"))
        return command.replace(EXAMPLE_TOKEN, self.token)

    def serve(self, command: str) -> None:
        self.stop()
        self.server = subprocess.Popen(self.adapt(command) + " --port 0 --no-console",
                                       shell=True, cwd=self.work, env=self.env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        lines = []
        for line in self.server.stdout:
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                self.banner = "".join(lines)
                return
        raise AssertionError(f"the server of `{command}` did not start: {lines}")

    def run(self, command: str) -> str:
        adapted = self.adapt(command)
        if "-m muxserver" in adapted and " token" not in adapted and " user " not in adapted:
            adapted += f" --port {self.port}"
        result = subprocess.run(adapted, shell=True, cwd=self.work, env=self.env,
                                capture_output=True, text=True, timeout=60,
                                input="a password for the README\n")  # (user add reads it)
        assert result.returncode == 0, f"`{command}` failed: {result.stderr}"
        if " token" in adapted:
            self.token = result.stdout.strip()
        return result.stdout + result.stderr

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=20)


def test_the_first_ten_minutes_work_as_written(tmp_path):
    walk = Walkthrough(tmp_path)
    try:
        for command, shown in steps():
            if command.startswith("openssl") and shutil.which("openssl") is None:
                pytest.skip("the TLS step needs openssl")
            if "python -m muxserver --root" in command:
                walk.serve(command)
                if "--token-file" in command:  # the banner says what the others need
                    assert "--token-file" in walk.banner and walk.token not in walk.banner
                continue
            printed = {normalise(line, walk) for line in walk.run(command).splitlines()}
            missing = [line for line in shown if normalise(line, walk) not in printed]
            assert not missing, f"`{command}` did not print: {missing}"
        assert (walk.home / "shared" / "photos" / "dog.jpg").exists()
        assert (walk.work / "back" / "notes.txt").read_text() == "lunch at noon, ok\n"
    finally:
        walk.stop()
