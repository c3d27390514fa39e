"""The demo scripts run, and print the lesson each one promises in its docstring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


SCRIPTS = Path(__file__).parent.parent / "scripts"

# Every demo also runs, in both languages, in tests/test_tutorial.py, which checks the
# lines the tutorials quote from it.


def test_the_blocking_server_makes_the_second_client_wait():
    result = subprocess.run([sys.executable, str(SCRIPTS / "demo_blocking_server.py")],
                            capture_output=True, text=True, timeout=60, cwd=SCRIPTS)
    blocking, mux = (float(line.split("waited")[1].split()[0])
                     for line in result.stdout.splitlines())
    assert blocking > 0.5 > mux


def test_every_demo_script_says_what_to_watch():
    for path in SCRIPTS.glob("demo_*.py"):
        assert "What to watch" in path.read_text(), path.name
