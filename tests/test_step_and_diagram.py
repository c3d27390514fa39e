"""--step stops the loop after each select(); --trace-json feeds scripts/trace_diagram.py."""

from __future__ import annotations

import hashlib
import html as markup
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from muxserver import protocol

from .conftest import FrameReader, recv_frame, run_cli, spawn_server, stop_process

SCRIPTS = Path(__file__).parent.parent / "scripts"


def read_until(stream, text: str) -> str:
    """Characters from ``stream`` up to and including ``text`` (the prompt has no
    newline, so this reads character by character)."""
    seen = ""
    while not seen.endswith(text):
        char = stream.read(1)
        if not char:
            raise AssertionError(f"the server ended before printing {text!r}:\n{seen}")
        seen += char
    return seen


@pytest.mark.timeout(60)
def test_step_waits_for_enter_after_each_select(root):
    (root / "a.txt").write_bytes(b"one turn at a time\n")
    proc = subprocess.Popen([sys.executable, "-m", "muxserver", "serve", "--port", "0",
                             "--root", str(root), "--step"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            bufsize=0, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        banner = read_until(proc.stdout, "(Ctrl-C to stop)")
        port = int(banner.split("listening on 127.0.0.1:")[-1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(protocol.encode_get(1, "a.txt"))
            turn = read_until(proc.stdout, "q: stop the server > ")
            assert "turn 1: select() returned 1 ready" in turn
            assert "listener" in turn and "(none)" in turn  # no connection accepted yet
            # The loop is stopped at the prompt: nothing can have been answered.
            assert not select.select([sock], [], [], 0)[0]
            proc.stdin.write("\n")
            turn = read_until(proc.stdout, "q: stop the server > ")
            assert "turn 2: select() returned 1 ready" in turn
            assert "#1" in turn and "interest: R" in turn
            proc.stdin.write("\n")  # this turn reads the request and sends the reply
            fields, body = recv_frame(sock)
            assert fields["ok"] and body == b"one turn at a time\n"
        read_until(proc.stdout, "q: stop the server > ")
        proc.stdin.write("q\n")  # stop the server from the prompt
        assert proc.wait(timeout=30) == 0
    finally:
        stop_process(proc)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lang, stop_key", [("en", "ctrl-c"), ("es", "q")])
def test_step_in_a_real_terminal(lang, stop_key):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    result = subprocess.run([sys.executable, str(SCRIPTS / "step_tmux_check.py"), "--lang", lang,
                             "--stop-key", stop_key],
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def wait_for_closes(path: Path, count: int) -> list[dict]:
    """The trace's records once it shows ``count`` closed connections (the server
    writes each event as it happens; the file is the signal)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        if sum(r["kind"] == "close" for r in records) >= count:
            return records
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} closes in {path}")


@pytest.mark.timeout(90)
def test_a_real_trace_of_a_put_and_a_get_becomes_a_diagram(root, tmp_path):
    trace = tmp_path / "trace.jsonl"
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3000))
    server = spawn_server(root, "--trace-json", str(trace))
    try:
        port = str(server.port)
        assert run_cli("put", str(source), "--port", port, "-q").returncode == 0
        assert run_cli("get", "up.bin", "--port", port, "-o", str(tmp_path / "got"),
                       "-q").returncode == 0
        # And a put and a get pipelined in one send(): one segment, so one recv holds
        # the put's body and the get after it (the client's own sends may or may not
        # coalesce; this one always does).
        body = os.urandom(2000)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(protocol.encode_put(1, "two.bin", len(body),
                                             hashlib.sha256(body).hexdigest()) + body
                         + protocol.encode_get(2, "two.bin"))
            reader = FrameReader(sock)
            assert reader.frame()[0]["ok"] and reader.frame()[1] == body
        records = wait_for_closes(trace, 3)
    finally:
        stop_process(server.proc)
    kinds = {r["kind"] for r in records}
    assert {"accept", "wakeup", "recv", "header", "reply", "send", "eof", "close"} <= kinds
    recv = next(r for r in records if r["kind"] == "recv")
    assert recv["data"].startswith("894d555801")  # the bytes themselves, in hex
    html, mmd = tmp_path / "trace.html", tmp_path / "trace.mmd"
    result = subprocess.run([sys.executable, str(SCRIPTS / "trace_diagram.py"), str(trace),
                             "-o", str(html), "--mermaid", str(mmd)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    page, text = markup.unescape(html.read_text()), mmd.read_text()
    for shown in (page, text):
        assert "magic 89 4d 55 58 · version 01 · flags 00 · header length" in shown
        assert '"op":"put"' in shown and '"op":"get"' in shown
        assert "body: 3,000 bytes (complete)" in shown
        assert "body: 2,000 bytes (complete)" in shown
        # the get followed the put's body in the same recv: the next frame's bytes
        assert "leftover, next frame: prefix" in shown
    assert text.startswith("sequenceDiagram\n")
    assert "participant C1 as client #35;1" in text and "participant C2" in text
    assert "<svg" in page and "<script" not in page
    # Replies are taken apart like requests; turns are numbered; a FIN and a close are
    # marks of their own, not data; and no note line is longer than the wrap width.
    for shown in (page, text):
        assert '"ok":true' in shown and "turn 1: select()" in shown
    assert "S-->>C1: send" in text and "C1-)S: recv returned 0" in text
    assert "S--xC1: close" in text
    notes = [line.split(": ", 1)[1] for line in text.splitlines() if "    Note " in line]
    assert all(len(part) <= 78 for note in notes for part in note.split("<br/>"))


def test_the_diagram_script_says_what_is_wrong_with_its_input(tmp_path):
    bad = tmp_path / "not.jsonl"
    bad.write_text("this is not json\n")
    result = subprocess.run([sys.executable, str(SCRIPTS / "trace_diagram.py"), str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_an_http_request_is_named_not_taken_apart_as_a_frame():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import trace_diagram
    finally:
        sys.path.remove(str(SCRIPTS))
    request = b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    lanes, steps = trace_diagram.build([
        {"kind": "accept", "conn": 1, "peer": "127.0.0.1:5"},
        {"kind": "recv", "conn": 1, "n": len(request), "data": request.hex()},
        {"kind": "http_request", "conn": 1, "method": "GET", "target": "/a.txt"},
    ])
    assert lanes == ["server", "#1"]
    assert steps[1].details == ["HTTP, not a muxserver frame: GET /a.txt HTTP/1.1"]
    assert steps[2].text == "#1: HTTP GET /a.txt"
