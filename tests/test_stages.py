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

from .conftest import run_whole

STAGES = Path(__file__).parent.parent / "scripts" / "stages"

P, F = True, False
#                      1 blocking 2 threads 3 select 4 buffers 5 interest 6 muxserver 7 asyncio
EXPECTED = {
    "one byte per send":  (P, P, F, P, P, P, P),
    "pipelined burst":    (P, P, F, P, P, P, P),
    "slow reader":        (F, P, F, P, P, P, P),
    "memory bound":       (P, P, F, F, P, P, P),
    "half close":         (P, P, P, F, P, P, P),
    "reset":              (P, P, F, P, P, P, P),
    "idle timeout":       (F, F, F, F, P, P, P),
    "no busy loop":       (P, P, P, F, P, P, P),
    "two clients":        (F, P, P, P, P, P, P),
    "out of descriptors": (F, F, F, F, F, P, P),
}

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
    assert len(stages) == 7 and stages[-1] == "7 asyncio"
    seen = {scenario: tuple(results[stage][scenario][0] for stage in stages)
            for scenario in EXPECTED}
    reasons = "\n".join(f"{stage} / {scenario}: {reason}"
                        for stage in stages for scenario, (_, reason) in results[stage].items())
    assert seen == EXPECTED, reasons
    assert all(reason for stage in stages for _, reason in results[stage].values())


def test_the_table_names_the_pitfall_of_each_failure():
    # the one-line reasons a learner reads: the ones the tutorials quote
    result = run_whole([sys.executable, str(STAGES / "check.py"), "--stage", "3", "--lang", "en",
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
    failing = run("--stage", "3", "--scenario", "pipelined burst")
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
    """Stage 4 asks epoll for EPOLLOUT on an idle connection; this server asks for
    reading only and polls with a zero timeout: each is told its own cause."""
    script = tmp_path / "spinning.py"
    script.write_text(SPINNING_SERVER.format(stages=str(STAGES)))
    spinning = run_whole(
        [sys.executable, str(STAGES / "check.py"), "--scenario", "no busy loop", "--server",
         f"{sys.executable} {script} --port {{port}} --root {{root}}"], timeout=110)
    assert "FAIL  no busy loop" in spinning.stdout, spinning.stdout + spinning.stderr
    assert "for reading only" in spinning.stdout and "EPOLLOUT" not in spinning.stdout
    stage4 = run_whole([sys.executable, str(STAGES / "check.py"), "--stage", "4",
                        "--scenario", "no busy loop"], timeout=110)
    assert "EPOLLOUT is in its interest" in stage4.stdout, stage4.stdout


def test_every_stage_is_small_and_bilingual():
    for path in sorted(STAGES.glob("stage*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 150, path.name
        assert "(es)" in text, f"{path.name} has no Spanish comments"



def test_the_tutorial_says_what_each_stage_fixes_and_loses_as_the_table_does():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stages_check", STAGES / "check.py")
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    sys.modules["stages_check"] = check  # (its dataclasses look themselves up there)
    try:
        spec.loader.exec_module(check)
    finally:
        del sys.modules["stages_check"]
    stages = ["1 blocking", "2 threads", "3 select", "4 buffers", "5 interest", "6 muxserver",
              "7 asyncio"]
    results = {stage: {row: (cells[i], "") for row, cells in EXPECTED.items()}
               for i, stage in enumerate(stages)}
    lines = [f"  {stage}: " + "; ".join(
        part for part in (("fixes " + ", ".join(fixed)) if fixed else "",
                          ("loses " + ", ".join(lost)) if lost else "") if part)
        for stage, fixed, lost in check.what_each_stage_changes(results)]
    text = (Path(__file__).parent.parent / "docs" / "TUTORIAL.md").read_text()
    block = text[text.index("from one stage to the next:\n"):].split("```")[0]
    assert block.strip().splitlines()[1:] == [line.strip() and line for line in lines]
