"""scripts/exercises: the checker passes the solution, and names the pitfall of each
classic wrong answer (made here from the solution by changing one thing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_whole

EXERCISES = Path(__file__).parent.parent / "scripts" / "exercises"
SOLUTION = (EXERCISES / "solution.py").read_text()


def check(answer: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_whole([sys.executable, str(EXERCISES / "check.py"), str(answer), "--lang",
                      "en", *extra], timeout=280)


@pytest.mark.timeout(300)
def test_the_solution_passes_everything_including_as_a_whole_server():
    result = check(EXERCISES / "solution.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("pass  your server") == 6
    assert "FAIL" not in result.stdout


def test_the_skeleton_is_not_written_yet():
    result = check(EXERCISES / "skeleton.py")
    assert result.returncode == 1
    assert result.stdout.count("not written yet") == 3


WRONG = {
    "leftovers dropped": (
        "            del self.buffer[:length]                  # what follows is the next request",
        "            self.buffer.clear()  #",
        "exercise 1, the decoder: recv size", "lesson 5"),
    "prefix taken whole": (
        "                if len(self.buffer) < PREFIX.size:        # even the prefix comes in pieces\n"
        "                    return done\n", "",
        "exercise 1, the decoder: recv size", "lesson 4"),
    "sendall": (
        "    while outbox:\n        try:\n            sent = sock.send(outbox)",
        "    while outbox:\n        try:\n            sock.sendall(outbox); sent = len(outbox)",
        "exercise 2, flush:", "lesson 3"),
    "send's count ignored": (
        "        del outbox[:sent]\n", "        del outbox[:]\n",
        "exercise 2, flush:", "lesson 3"),
    "write interest always on": (
        "    if outbox_bytes:\n        events |= selectors.EVENT_WRITE",
        "    if True:\n        events |= selectors.EVENT_WRITE",
        "exercise 3, interest:", "lesson 7"),
    "reading while paused": (
        "    if not paused and not peer_done:", "    if not peer_done:",
        "exercise 3, interest:", "lesson 8"),
    "reading after b''": (
        "    if not paused and not peer_done:", "    if not paused:",
        "exercise 3, interest:", "lesson 6"),
}


@pytest.mark.parametrize("mistake", list(WRONG))
def test_a_wrong_answer_is_told_its_pitfall(mistake, tmp_path):
    old, new, where, pitfall = WRONG[mistake]
    assert old in SOLUTION, mistake
    answer = tmp_path / "answer.py"
    answer.write_text(SOLUTION.replace(old, new))
    result = check(answer, "--quick")
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and where in failed[0] and pitfall in failed[0], result.stdout
