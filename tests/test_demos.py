"""The demo scripts run, and print the lesson each one promises in its docstring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent.parent / "scripts"

DEMOS = {
    "demo_one_byte.py": ["the length prefix is 3 of 8 bytes, waiting",
                         "the header is 1 of"],
    "demo_burst.py": ["bytes left over belong to the next request and are kept",
                      "replies arrived in this order of ids: [0, 1, 2, 3, 4, 5, 100,"],
    "demo_slow_reader.py": ["backpressure:", "interest read -> write: output is still queued",
                            "the whole body arrived: 8000000 bytes"],
    "demo_reset.py": ["unregistered, then closed: reset by peer",
                      "files in the root, hidden ones included: none"],
    "demo_half_close.py": ["recv returned 0: the peer finished sending (half close)",
                           "reply 2: ok=True body=b'still answered\\n'"],
    "demo_blocking_server.py": ["blocking server: client B waited", "muxserver:       client B"],
    "demo_busy_loop.py": ["always-on EVENT_WRITE", "muxserver"],
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", sorted(DEMOS))
def test_demo_runs_and_shows_its_lesson(script):
    args = ["--seconds", "0.5"] if script == "demo_busy_loop.py" else []
    result = subprocess.run([sys.executable, str(SCRIPTS / script), *args],
                            capture_output=True, text=True, timeout=80, cwd=SCRIPTS)
    assert result.returncode == 0, result.stderr
    for expected in DEMOS[script]:
        assert expected in result.stdout, (expected, result.stdout[-3000:])
    assert "Traceback" not in result.stderr


def test_the_blocking_server_makes_the_second_client_wait():
    result = subprocess.run([sys.executable, str(SCRIPTS / "demo_blocking_server.py")],
                            capture_output=True, text=True, timeout=60, cwd=SCRIPTS)
    blocking, mux = (float(line.split("waited")[1].split()[0])
                     for line in result.stdout.splitlines())
    assert blocking > 0.5 > mux


def test_every_demo_script_says_what_to_watch():
    for path in SCRIPTS.glob("demo_*.py"):
        assert "What to watch" in path.read_text(), path.name
