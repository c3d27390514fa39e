"""The tutorials tell the truth: every listed command prints the listed trace lines.

Each ```console block with a `$ python scripts/...` command is followed by a ```text
block; every line of that block must appear in the command's real output. Numbers
(ports, byte counts, wake-up counters) are compared as "a number", since they vary.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import load_stage_checker, run_whole

REPO = Path(__file__).parent.parent
PAIR = re.compile(r"```console\n\$ (?P<cmd>[^\n]+)\n```\s*\n```text\n(?P<lines>.*?)```", re.S)


def normalise(line: str) -> str:
    """Numbers become N and runs of spaces one space: a figure's width (" 99.0" or
    "100.0", padded to line up) depends on the machine, the words do not."""
    return re.sub(r"\s+", " ", re.sub(r"\d[\d,.]*", "N", line.strip()))


def examples(doc: str) -> list[tuple[str, list[str]]]:
    return [(cmd, lines) for _, cmd, lines in placed_examples(doc)]


def placed_examples(doc: str) -> list[tuple[int, str, list[str]]]:
    """Each command whose output the text quotes: (where it is, the command, the lines)."""
    text = (REPO / "docs" / doc).read_text()
    return [(m.start(), m["cmd"], m["lines"].strip().splitlines())
            for m in PAIR.finditer(text)]


TUTORIALS = ("TUTORIAL.md", "TUTORIAL.es.md")
#: (the tutorials' commands run in their order, in one test each: see below)
CASES = [(doc, cmd, lines) for doc in ("EXERCISES.md", "EXERCISES.es.md")
         for cmd, lines in examples(doc)]


def test_both_tutorials_show_the_same_lessons():
    # (the Spanish text names the checker's scenarios in Spanish, as its table does)
    to_english = load_stage_checker().ENGLISH

    def words(command: str) -> list[str]:
        argv = shlex.split(command.replace(" --lang es", ""))
        return [to_english.get(word, word) if before == "--scenario" else word
                for before, word in zip(["", *argv], argv)]

    english = [words(cmd) for cmd, _ in examples("TUTORIAL.md")]
    spanish = [words(cmd) for cmd, _ in examples("TUTORIAL.es.md")]
    assert english == spanish and len(english) >= 10
    assert all("--lang es" in cmd for cmd, _ in examples("TUTORIAL.es.md"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("doc, command, lines", CASES,
                         ids=[f"{d}:{c.split()[1]}" for d, c, _ in CASES])
def test_the_listed_command_prints_the_listed_lines(doc, command, lines, tmp_path):
    # As a reader runs it: from the repository's root, in a fresh HOME and scratch /tmp
    # (each of these commands starts its own servers on free ports: none needs another)
    (tmp_path / "tmp").mkdir()
    run_listed(doc, command, lines, {"HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")})


def run_listed(doc: str, command: str, lines: list[str], env: dict[str, str]) -> None:
    """Run a listed command; it must print every listed line, and exit as they say."""
    argv = shlex.split(command)
    assert argv[0] == "python"
    if "demo_busy_loop.py" in command:
        argv += ["--seconds", "0.5"]
    result = run_whole([sys.executable, *argv[1:]], timeout=100, cwd=REPO,
                       env={**os.environ, **env})
    # The stage checker exits 1 when a row fails, as the listed lines then show.
    fails = "stages/check.py" in command and any(
        line.split()[:1] in (["FAIL"], ["FALLA"]) for line in lines)
    assert result.returncode == (1 if fails else 0) or "skeleton.py" in command, result.stderr
    printed = {normalise(line) for line in result.stdout.splitlines()}
    missing = [line for line in lines if normalise(line) not in printed]
    assert not missing, f"{doc}: `{command}` did not print:\n" + "\n".join(missing)


TABLE_ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<cells>((pass|FAIL|pasa|FALLA)\s*){14})$")


@pytest.mark.parametrize("doc", ["TUTORIAL.md", "TUTORIAL.es.md"])
def test_the_stage_table_is_the_one_the_checker_prints(doc):
    # check.py itself prints it in tests/test_stages.py, which pins EXPECTED
    from .test_stages import EXPECTED
    rows = [TABLE_ROW.match(line) for line in (REPO / "docs" / doc).read_text().splitlines()]
    seen = [tuple(cell in ("pass", "pasa") for cell in m["cells"].split()) for m in rows if m]
    assert seen == list(EXPECTED.values())


@pytest.mark.parametrize("doc", ["TUTORIAL.md", "TUTORIAL.es.md"])
def test_every_script_the_tutorial_names_exists(doc):
    text = (REPO / "docs" / doc).read_text()
    scripts = set(re.findall(r"python (scripts/[\w/]+\.py)", text))
    assert len(scripts) > 15
    missing = [path for path in scripts if not (REPO / path).is_file()]
    assert not missing


# ---------------------------------------------------------------- the shell sessions

SERVER_WORDS = ("scripts/stages/stage", "scripts/exercises/server.py")
CLIENT_COMMANDS = {"put", "get", "ls", "stat", "rm", "mv", "mkdir", "token"}


def sessions(doc: str) -> list[tuple[int, list[str]]]:
    """The tutorial's indented command blocks, each with where it starts in the text: a
    server, then what to type beside it."""
    blocks: list[tuple[int, list[str]]] = []
    block: list[str] = []
    offset = start = 0
    for line in (REPO / "docs" / doc).read_text().splitlines(keepends=True) + [""]:
        stripped = line.strip()
        if line.startswith("    ") and stripped.startswith("python "):
            if not block:
                start = offset
            block.append(stripped)
        elif block:
            blocks.append((start, block))
            block = []
        offset += len(line)
    return blocks


def starts_a_server(command: str) -> bool:
    argv = shlex.split(command, comments=True)
    if any(word in command for word in SERVER_WORDS):
        return True
    if argv[1:3] != ["-m", "muxserver"]:
        return False
    command = next((a for a in argv[3:] if a in CLIENT_COMMANDS | {"serve"}), "serve")
    return command == "serve"


SESSIONS = [(doc, block) for doc in TUTORIALS
            for _, block in sessions(doc) if starts_a_server(block[0])]


def steps(doc: str) -> list[tuple[str, list[str]]]:
    """Everything the tutorial has a reader run, in its order: ("listed", [command,
    *the lines it prints]) for a command whose output the text quotes, ("session",
    block) for a server and the commands typed beside it."""
    found = [(start, "listed", [cmd, *lines]) for start, cmd, lines in placed_examples(doc)]
    found += [(start, "session", block) for start, block in sessions(doc)
              if starts_a_server(block[0])]
    return [(kind, step) for _, kind, step in sorted(found, key=lambda f: f[0])]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("doc", TUTORIALS)
def test_the_tutorial_runs_in_order_in_one_fresh_home(doc, tmp_path):
    """A reader's run: every command the tutorial gives, in the document's order, in one
    fresh HOME and one scratch /tmp, nothing made beforehand (no root directory, no
    file), so each meets what the ones before it left. A command whose output the text
    quotes prints those lines. A server block's server starts as written (on a free
    port instead of 9009), every command after it runs against it and succeeds, and
    the server stops cleanly."""
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(scratch)}
    for kind, step in steps(doc):
        if kind == "listed":
            run_listed(doc, step[0], step[1:], env)
        else:
            run_session(step, scratch, env)


def run_session(block: list[str], tmp_path: Path, env: dict[str, str]) -> None:
    def local(command: str) -> list[str]:
        argv = shlex.split(command.replace("/tmp/", f"{tmp_path}/"), comments=True)
        return [sys.executable, *argv[1:]]

    server_argv = local(block[0])
    if "--port" in server_argv:
        server_argv[server_argv.index("--port") + 1] = "0"
    else:
        server_argv += ["--port", "0"]
    proc = subprocess.Popen(server_argv, cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("c\n")  # --step: run on without stopping
        proc.stdin.flush()
        port = None
        for line in proc.stdout:
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = match.group(1)
                break
        assert port, f"`{block[0]}` did not start"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep it drained
        client_env = {**os.environ, **env, "MUXSERVER_PORT": port}
        for command in block[1:]:
            argv = [a.replace("9009", port) for a in local(command)]
            result = subprocess.run(argv, cwd=REPO, env=client_env, capture_output=True,
                                    text=True, timeout=60)
            assert result.returncode == 0, f"`{command}`: {result.stdout}{result.stderr}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode in (0, -15), f"`{block[0]}` exited with {proc.returncode}"


def test_the_sessions_cover_the_tutorials_servers():
    assert len(SESSIONS) >= 12  # six blocks in each language
