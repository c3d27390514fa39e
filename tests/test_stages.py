"""scripts/stages: each stage fails exactly the scenarios its design cannot pass.

The table below is the lesson of the stages (docs/TUTORIAL.md, "The stages"): it is
what ``python scripts/stages/check.py`` prints, and this test keeps the two the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import load_stage_checker, run_whole

STAGES = Path(__file__).parent.parent / "scripts" / "stages"

P, F = True, False
#: The stages' table: each stage is the one before with one idea added (its docstring
#: says which), so each fails the rows of the ideas it still lacks (13 is muxserver,
#: 14 is stage 12 in asyncio).
#                       1  2  3  4  5  6  7  8  9  10 11 12 13 14
EXPECTED = {
    "one byte per send":  (F, P, P, P, P, P, P, P, P, P, P, P, P, P),
    "pipelined burst":    (F, P, P, P, P, P, P, P, P, P, P, P, P, P),
    "half a request":     (F, F, F, P, F, P, P, P, P, P, P, P, P, P),
    "slow reader":        (F, F, F, P, F, F, P, P, P, P, P, P, P, P),
    "memory bound":       (F, P, P, P, P, P, F, F, F, P, P, P, P, P),
    "half close":         (P, P, P, P, P, P, F, F, P, P, P, P, P, P),
    "reset":              (F, F, P, P, P, P, P, P, P, P, P, P, P, P),
    "idle timeout":       (F, F, F, F, F, F, F, F, F, F, P, P, P, P),
    "no busy loop":       (P, P, P, P, P, P, F, P, P, P, P, P, P, P),
    "two clients":        (F, F, F, P, P, P, P, P, P, P, P, P, P, P),
    "out of descriptors": (F, F, F, F, F, F, F, F, F, F, F, P, P, P),
}
STAGE_NAMES = ["1 blocking", "2 framing", "3 errors", "4 threads", "5 select", "6 decoder",
               "7 non-blocking", "8 interest", "9 half close", "10 backpressure",
               "11 deadlines", "12 back-off", "13 muxserver", "14 asyncio"]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="check.py reads /proc")


def burn_both_cores() -> list[subprocess.Popen]:
    """Two processes that keep both cores of the machine busy (a learner's machine while
    something else runs): a verdict must not depend on how fast the checker runs."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]


@pytest.mark.timeout(600)
def test_each_stage_fails_the_rows_its_design_cannot_pass_even_on_a_busy_machine():
    burners = burn_both_cores()
    try:
        result = run_whole([sys.executable, str(STAGES / "check.py"), "--json", "--lang",
                            "en"], timeout=570)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert result.returncode == 1, result.stderr  # (rows fail: the early stages')
    results = json.loads(result.stdout)
    stages = list(results)
    assert stages == STAGE_NAMES
    seen = {scenario: tuple(results[stage][scenario][0] for stage in stages)
            for scenario in EXPECTED}
    reasons = "\n".join(f"{stage} / {scenario}: {reason}"
                        for stage in stages for scenario, (_, reason) in results[stage].items())
    assert seen == EXPECTED, reasons
    assert all(reason for stage in stages for _, reason in results[stage].values())


def test_the_table_names_the_pitfall_of_each_failure():
    # the one-line reasons a learner reads: the ones the tutorials quote
    result = run_whole([sys.executable, str(STAGES / "check.py"), "--stage", "1", "--lang", "en",
                        "--scenario", "pipelined burst", "--scenario", "reset"], timeout=110)
    assert "FAIL  pipelined burst: the server read every byte" in result.stdout
    assert "FAIL  reset: the server died: ConnectionResetError" in result.stdout


@pytest.mark.timeout(120)
def test_the_exit_status_says_whether_every_row_passed_and_spanish_names_are_taken():
    def run(*args: str) -> subprocess.CompletedProcess:
        return run_whole([sys.executable, str(STAGES / "check.py"), *args], timeout=110)

    passing = run("--stage", "5", "--scenario", "ráfaga encadenada", "--lang", "es")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "pasa  ráfaga encadenada: tres peticiones encadenadas" in passing.stdout
    failing = run("--stage", "1", "--scenario", "pipelined burst")
    assert failing.returncode == 1 and "FAIL  pipelined burst" in failing.stdout


SPINNING_SERVER = """
import selectors, socket, sys
from pathlib import Path
sys.path.insert(0, {stages!r})
from wire import PREFIX, Files, command_line, listen_nonblocking, parse_header, parse_prefix

def read_request(data):
    end = PREFIX.size + parse_prefix(data[:PREFIX.size])
    return parse_header(data[PREFIX.size:end]), data[end:]

args = command_line("a loop that polls: read interest only, but a zero timeout")
files, (server, selector) = Files(args.root), listen_nonblocking(args.port)
while True:
    for key, _ in selector.select(timeout=0):
        if key.fileobj is server:
            sock, _ = server.accept()
            selector.register(sock, selectors.EVENT_READ)
        elif data := key.fileobj.recv(65536):  # (one recv, one small request: enough here)
            key.fileobj.sendall(files.answer(*read_request(data)))
        else:
            selector.unregister(key.fileobj)
            key.fileobj.close()
"""


@pytest.mark.timeout(120)
def test_the_busy_loop_reason_is_what_the_kernel_shows_not_a_guess(tmp_path):
    """Stage 7 asks epoll for EPOLLOUT on an idle connection; this server asks for
    reading only and polls with a zero timeout: each is told its own cause."""
    script = tmp_path / "spinning.py"
    script.write_text(SPINNING_SERVER.format(stages=str(STAGES)))
    spinning = run_whole(
        [sys.executable, str(STAGES / "check.py"), "--scenario", "no busy loop", "--server",
         f"{sys.executable} {script} --port {{port}} --root {{root}}"], timeout=110)
    assert "FAIL  no busy loop" in spinning.stdout, spinning.stdout + spinning.stderr
    assert "for reading only" in spinning.stdout and "EPOLLOUT" not in spinning.stdout
    stage7 = run_whole([sys.executable, str(STAGES / "check.py"), "--stage", "7",
                        "--scenario", "no busy loop"], timeout=110)
    assert "EPOLLOUT is in its interest" in stage7.stdout, stage7.stdout


EOF_IGNORING_SERVER = """
import selectors, sys
sys.path.insert(0, {stages!r})
from decoder import FrameDecoder
from wire import Files, command_line, listen_nonblocking

args = command_line("a loop that ignores the end of a stream")
files, (server, selector) = Files(args.root), listen_nonblocking(args.port)
while True:
    for key, _ in selector.select():
        if key.fileobj is server:
            sock, _ = server.accept()
            selector.register(sock, selectors.EVENT_READ, FrameDecoder())
            continue
        data = key.fileobj.recv(65536)   # b"" at the end: ignored, so readable forever
        key.data.feed(data)
        while (request := key.data.next_request()) is not None:
            key.fileobj.sendall(files.answer(*request))
"""


@pytest.mark.timeout(120)
def test_a_server_that_ignores_the_end_of_a_stream_is_seen_spinning(tmp_path):
    """No stage ignores recv() returning b"", but a learner's server may: the half close
    row then sees it spin (CPU, with nothing owed), where it would otherwise wait forever
    for a close that never comes."""
    script = tmp_path / "eof_ignored.py"
    script.write_text(EOF_IGNORING_SERVER.format(stages=str(STAGES)))
    result = run_whole(
        [sys.executable, str(STAGES / "check.py"), "--scenario", "half close", "--lang", "en",
         "--server", f"{sys.executable} {script} --port {{port}} --root {{root}}"],
        timeout=110)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  half close: replied, then neither slept nor closed" in result.stdout
    assert "(lesson 6)" in result.stdout


@pytest.mark.timeout(120)
def test_a_server_command_without_the_idle_placeholder_is_not_said_to_have_had_it():
    # Started without {idle}, a server runs with its own timeout: the verdict must not
    # claim it was given one second.
    result = run_whole(
        [sys.executable, str(STAGES / "check.py"), "--scenario", "idle timeout", "--lang", "en",
         "--server", f"{sys.executable} {STAGES / 'stage04_threads.py'} --port {{port}} "
                     "--root {root}"], timeout=110)
    assert "note: the command has no {idle}" in result.stdout, result.stdout + result.stderr
    assert "FAIL  idle timeout" in result.stdout
    assert "its command has no {idle}" in result.stdout
    assert "started with --idle-timeout" not in result.stdout


def test_each_stage_is_the_one_before_with_one_idea():
    """Stage N's docstring says its one idea and builds on stage N-1, and its code (the
    docstring aside) differs from stage N-1's by a screenful at most: ``diff`` between
    two neighbours shows the idea and little else."""
    import difflib

    def code(path: Path) -> list[str]:
        text = path.read_text()
        return (text[:text.index('"""')] + text.split('"""', 2)[2]).splitlines()

    files = sorted(STAGES.glob("stage[01][0-9]_*.py"))[:12]  # (14, asyncio, rewrites 12)
    assert [int(path.name[5:7]) for path in files] == list(range(1, 13))
    for before, after in zip(files, files[1:]):
        number = int(after.name[5:7])
        doc = after.read_text().split('"""')[1]
        assert doc.startswith(f"Stage {number}: ") and f"Stage {number - 1}" in doc
        assert "The one idea: " in doc, after.name
        changed = [line for line in difflib.unified_diff(code(before), code(after), n=0)
                   if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert len(changed) <= 90, f"{before.name} -> {after.name}: {len(changed)} lines"


def test_every_stage_is_small_and_bilingual():
    for path in sorted(STAGES.glob("stage*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 150, path.name
        assert "(es)" in text, f"{path.name} has no Spanish comments"



def test_the_tutorial_says_what_each_stage_fixes_and_loses_as_the_table_does():
    check = load_stage_checker()
    results = {stage: {row: (cells[i], "") for row, cells in EXPECTED.items()}
               for i, stage in enumerate(STAGE_NAMES)}
    lines = [f"  {stage}: " + "; ".join(
        part for part in (("fixes " + ", ".join(fixed)) if fixed else "",
                          ("loses " + ", ".join(lost)) if lost else "") if part)
        for stage, fixed, lost in check.what_each_stage_changes(results)]
    text = (Path(__file__).parent.parent / "docs" / "TUTORIAL.md").read_text()
    block = text[text.index("from one stage to the next:\n"):].split("```")[0]
    assert block.strip().splitlines()[1:] == [line.strip() and line for line in lines]
