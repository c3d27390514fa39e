"""The live console and the client's progress output, rendered into recording consoles."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
import threading

import pytest
from rich.console import Console

from muxserver import protocol
from muxserver.console import ConsoleView, LiveConsole, choose_columns
from muxserver.progress import TransferReport
from muxserver.server import ConnectionInfo, Server, ServerConfig, Snapshot

from .conftest import run_cli, spawn_server, stop_process

pytestmark = pytest.mark.timeout(60)

HOSTILE = "[red]x[/red]\x1b[2Jevil[link=http://a]"


def conn(i: int, *, op="put", name="f.bin", state="receiving body", done=0, total=0,
         last_io=100.0) -> ConnectionInfo:
    return ConnectionInfo(id=i, peer=f"127.0.0.1:{40000 + i}", state=state, op=op, name=name,
                          done=done, total=total, started=0.0, bytes_in=done, bytes_out=0,
                          recv_buffered=300, send_buffered=65536 if op == "get" else 0,
                          last_io=last_io)


def snapshot(conns, **kw) -> Snapshot:
    fields = dict(address="127.0.0.1:9009", root="/srv/files", uptime=3725.0, wakeups=10,
                  timeout_wakeups=4, connections=conns, transfers_done=12,
                  transfers_failed=2, bytes_in=5 * 2**30, bytes_out=3 * 2**20)
    fields.update(kw)
    return Snapshot(**fields)


def render_text(view: ConsoleView, snap: Snapshot, width: int = 120, max_rows: int = 20,
                now: float = 100.0) -> str:
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    console.print(view.render(snap, now=now, max_rows=max_rows, width=width))
    return console.export_text()


def test_rows_show_peer_op_name_state_percent_and_totals():
    conns = [conn(1, name="photos/cat.jpg", done=512, total=1024),
             conn(2, op="get", name="big.iso", state="sending body", done=3 * 2**20,
                  total=4 * 2**20),
             conn(3, op="", name="", state="idle")]
    text = render_text(ConsoleView(), snapshot(conns))
    for expected in ("127.0.0.1:9009", "/srv/files", "up 1:02:05", "connections 3",
                     "done 12", "failed 2", "in 5.0 GiB", "out 3.0 MiB",
                     "photos/cat.jpg", "receiving body", "50%",
                     "big.iso", "sending body", "75%", "3.0M/4.0M", "idle",
                     "300/64K"):  # receive / send buffers: backpressure made visible
        assert expected in text, expected


def test_a_stalled_transfer_says_so_and_the_state_keeps_its_width():
    conns = [conn(1, name="x" * 200, state="HTTP receiving body", done=5, total=10),
             conn(2, name="slow.bin", done=5, total=10, last_io=88.0)]
    text = render_text(ConsoleView(), snapshot(conns), width=100)
    assert "HTTP receiving body" in text  # never cut short by a long name
    assert "stalled 12 s" in text
    assert "queued in/out" in render_text(ConsoleView(), snapshot(conns), width=160)


def test_the_header_counts_down_a_graceful_stop():
    conns = [conn(1, name="a.bin", done=5, total=10), conn(2, op="", name="", state="idle")]
    text = render_text(ConsoleView(), snapshot(conns, stopping_in=7.2))
    assert "stopping: 1 transfer, 7 s left, Ctrl-C again to abort" in text


@pytest.mark.parametrize("in_a_turn", [False, True], ids=["records", "a turn's lines"])
def test_an_interruption_is_one_line_in_the_event_pane(in_a_turn):
    """The "closed" line that follows a reset is not shown again, whether it comes as a
    record of its own or among a loop turn's lines (turnlog.py), as the server's do."""
    from muxserver.console import ConsoleLogHandler
    from muxserver.turnlog import TurnLog

    view = ConsoleView()
    handler = ConsoleLogHandler(view)
    logger = logging.getLogger("muxserver.test-console")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    turn_log = TurnLog(logger)
    if in_a_turn:
        turn_log.attach(lambda flush: None)
    try:
        turn_log.info("%s connected", "other", extra={"event": "connected", "conn": 8})
        logger.warning("peer disconnected mid-request", extra={"event": "reset", "conn": 7})
        turn_log.info("%s closed (%s)", "peer", "peer closed mid-request",
                      extra={"event": "closed", "conn": 7})
        turn_log.info("%s closed (%s)", "other", "peer finished sending",
                      extra={"event": "closed", "conn": 8})
    finally:
        turn_log.detach()
        logger.removeHandler(handler)
    lines = [line.plain for _, line in view.log]
    assert len(lines) == 3 and "other connected" in lines[0], lines
    lines = lines[1:]
    assert len(lines) == 2 and "mid-request" in lines[0] and "other closed" in lines[1]


def test_rates_and_eta_come_from_successive_snapshots():
    view = ConsoleView()
    render_text(view, snapshot([conn(1, done=0, total=10 * 2**20)]), now=10.0)
    text = render_text(view, snapshot([conn(1, done=2 * 2**20, total=10 * 2**20)]), now=11.0)
    assert "2.0 MiB/s" in text and "0:04" in text  # 8 MiB left at 2 MiB/s


def test_hostile_names_are_shown_literally_and_cannot_style_the_console():
    view = ConsoleView()
    view.add_log(0.0, logging.WARNING, f"put {HOSTILE} refused")
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(view.render(snapshot([conn(1, name=HOSTILE, done=1, total=2)]), now=1.0,
                              width=200))
    text = console.export_text()
    assert "[red]x[/red]\\x1b[2Jevil[link=http://a]" in text
    assert "\x1b[2J" not in console.export_text(styles=True)  # the ESC never reaches the screen
    assert "http://a" in text and "\x1b]8;" not in console.export_text(styles=True)


def test_hundreds_of_connections_show_the_busiest_and_a_more_line():
    conns = [conn(i, name=f"file{i}", done=i, total=1000, last_io=float(i)) for i in range(300)]
    text = render_text(ConsoleView(), snapshot(conns), max_rows=10)
    assert "+290 more" in text
    assert "file299" in text and "file0 " not in text  # most recently active first
    assert text.count("127.0.0.1:4") == 10


@pytest.mark.parametrize("width", [80, 100, 160])
def test_narrow_terminals_keep_the_essentials_and_never_overflow(width):
    conns = [conn(1, name="a-rather-long-file-name-for-a-small-screen.tar.gz",
                  done=250, total=1000)]
    text = render_text(ConsoleView(), snapshot(conns), width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    for expected in ("127.0.0.1:40001", "put", "a-rat", "r.gz", "receiving body", "25%"):
        assert expected in text, (width, expected)  # (a long name: cut in the middle)
    heading = next(line for line in text.splitlines() if line.startswith("peer"))
    assert ("done" in heading) == ("done" in choose_columns(width))
    assert ("ETA" in heading) == (width >= 100)


def test_console_renders_real_connections(root):
    from muxserver.server import Server, ServerConfig

    server = Server(ServerConfig(port=0, root=str(root)))
    host, port = server.start()
    view = ConsoleView()
    try:  # the loop is driven turn by turn from this thread: no race, no sleep
        with socket.create_connection((host, port)) as sock:
            sock.sendall(protocol.encode_put(1, "live [bold]name[/bold].bin", 1000, "0" * 64)
                         + b"x" * 400)
            text = ""
            for _ in range(50):
                server.loop.run_once(max_wait=1.0)
                text = render_text(view, server.snapshot(), width=140)
                if "40%" in text:
                    break
            assert "live [bold]name[/bold].bin" in text and "receiving body" in text
            assert "40%" in text and "connections 1" in text
    finally:
        server.shutdown()


def test_live_console_redraws_from_the_loop_thread(make_server):
    running = make_server()
    recording = Console(record=True, width=100, force_terminal=True, color_system=None)
    live = LiveConsole(running.server, console=recording)
    threads = set()
    real_render = live.view.render

    def render(*args, **kw):
        threads.add(threading.get_ident())
        return real_render(*args, **kw)

    live.view.render = render
    drawn = threading.Event()
    running.server.loop.call_soon(lambda: (live.start(), drawn.set()))
    running.server.loop.wake()
    assert drawn.wait(5)
    with running.client() as client:
        assert client.list() == []
    done = threading.Event()
    running.server.loop.call_soon(lambda: (live.refresh(), live.stop(), done.set()))
    running.server.loop.wake()
    assert done.wait(5)
    assert threads == {running_thread_ident(running)}
    assert "muxserver" in recording.export_text()


def running_thread_ident(running) -> int:
    got = []
    event = threading.Event()
    running.server.loop.call_soon(lambda: (got.append(threading.get_ident()), event.set()))
    running.server.loop.wake()
    assert event.wait(5)
    return got[0]


def test_without_a_terminal_the_server_logs_plain_lines(root, tmp_path):
    srv = spawn_server(root)  # stdout is a pipe, not a terminal: no live console
    try:
        (tmp_path / "p.txt").write_text("plain")
        assert run_cli("put", str(tmp_path / "p.txt"), "--port", str(srv.port)).returncode == 0
    finally:
        stop_process(srv.proc)
    out, err = srv.output()
    assert "\x1b[" not in out + err
    lines = err.splitlines()
    assert any("connected" in line for line in lines)
    assert any("put p.txt: 5 bytes, blake3" in line and line.endswith("ok") for line in lines)
    assert any("closed" in line for line in lines)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_client_progress_bars_on_a_terminal(server, tmp_path):
    for i in range(3):
        (tmp_path / f"f{i}").write_bytes(b"z" * (100_000 * (i + 1)))
    stream = FakeTerminal()
    report = TransferReport(files=3, total_bytes=600_000, stream=stream)
    with server.client(progress=report.progress, on_finish=report.finished) as client:
        from muxserver.client import PutFile
        client.run([PutFile(tmp_path / f"f{i}", f"f{i}") for i in range(3)])
    assert report.close() == 0
    out = stream.getvalue()
    assert out.count(" ok") == 3 and "f2 (292.97 KiB" not in out
    assert "put " in out and "-> f0" in out


def test_client_progress_without_a_terminal_is_one_line_per_file(server, tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (server.root / "a").write_bytes(b"exists")
    stream = io.StringIO()
    report = TransferReport(files=2, stream=stream)
    (tmp_path / "b").write_bytes(b"b")
    with server.client(progress=report.progress, on_finish=report.finished) as client:
        from muxserver.client import PutFile
        client.run([PutFile(tmp_path / "a", "a"), PutFile(tmp_path / "b", "b")])
    assert report.close() == 1
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("muxserver: put a failed: 'a' already exists")
    assert lines[1].startswith(f"put {tmp_path / 'b'} -> b (1 B")
    assert lines[2] == "muxserver: 1 of 2 transfers failed"


def test_quiet_prints_failures_only(server, tmp_path):
    (tmp_path / "ok").write_bytes(b"1")
    result = run_cli("put", str(tmp_path / "ok"), "--port", str(server.port), "-q")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""
    result = run_cli("put", str(tmp_path / "ok"), "--port", str(server.port), "-q")
    assert result.returncode == 1 and "already exists" in result.stderr


def test_console_module_is_not_imported_by_the_loop():
    code = ("import sys, muxserver.server, muxserver.loop, muxserver.channel, muxserver.native;"
            "print('rich' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout.strip() == "False"


@pytest.mark.timeout(120)
def test_live_console_in_a_real_terminal():
    import shutil
    from pathlib import Path

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    script = Path(__file__).parent.parent / "scripts" / "console_tmux_check.py"
    result = subprocess.run([sys.executable, str(script), "--width", "80"], capture_output=True,
                            text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS")


def test_the_console_keeps_drawing_while_the_server_stops(root):
    server = Server(ServerConfig(port=0, root=str(root)))
    server.start()
    out = io.StringIO()
    console = LiveConsole(server, console=Console(file=out, width=120, force_terminal=True))
    try:
        console.start()
        server.stop_gracefully()  # the listener closes: the console must not care
        console.refresh()
        assert console.refreshes == 2 and "stopping: 0 transfers" in out.getvalue()
    finally:
        console.stop()
        server.shutdown()


def test_the_event_pane_uses_the_free_rows_and_keeps_failures_in_sight():
    view = ConsoleView()
    view.add_log(1.0, logging.WARNING, "127.0.0.1:5 put x refused: disk full (no_space)")
    for i in range(60):
        view.add_log(2.0 + i, logging.INFO, f"127.0.0.1:{i} get f{i}: 3 bytes ok")
    snap = Snapshot(address="127.0.0.1:9", root="/r", uptime=1.0, wakeups=0,
                    timeout_wakeups=0, connections=[], transfers_done=60,
                    transfers_failed=1, bytes_in=0, bytes_out=180)
    out = io.StringIO()
    Console(file=out, width=100, height=40, force_terminal=False).print(
        view.render(snap, now=10.0, width=100, height=40))
    shown = out.getvalue().splitlines()
    assert any("disk full" in line for line in shown)  # (60 newer lines did not hide it)
    events = [line for line in shown if "127.0.0.1:" in line]
    assert len(events) >= 30  # (the rows a tall terminal has, not six)
    assert len(shown) <= 40


def test_no_count_goes_down_and_an_idle_connection_shows_no_rate():
    view = ConsoleView()

    def snap(moved: int, wakeups: int, op: str) -> Snapshot:
        conn = ConnectionInfo(id=1, peer="127.0.0.1:5", state="idle", op=op, name="f",
                              done=0, total=0, started=0.0, bytes_in=moved, bytes_out=0,
                              recv_buffered=0, send_buffered=0, last_io=0.0)
        return Snapshot(address="a", root="/r", uptime=1.0, wakeups=wakeups,
                        timeout_wakeups=0, connections=[conn], transfers_done=1,
                        transfers_failed=0, bytes_in=moved, bytes_out=0)

    text = []
    for now, (moved, wakeups) in enumerate([(10**6, 100), (2 * 10**6, 200), (10**5, 20),
                                            (10**5, 20)]):
        out = io.StringIO()
        Console(file=out, width=120, force_terminal=False).print(
            view.render(snap(moved, wakeups, ""), now=float(now), width=120))
        text.append(out.getvalue())
    assert not any("-" in line.split("/s")[0][-12:] for t in text for line in t.splitlines()
                   if "/s" in line)  # (no negative rate: a restart is no rate)
    assert "B/s" not in text[-1].split("\n", 3)[-1]  # (the idle connection's row)


def test_at_80_columns_names_are_cut_in_the_middle_and_rows_say_who():
    view = ConsoleView()
    conns = [ConnectionInfo(id=i, peer=f"127.0.0.1:{40000 + i}", state="receiving body",
                            op="put", name=f"uploads/from-the-phone/small8000{i}.bin", done=5,
                            total=10, started=0.0, bytes_in=5, bytes_out=0, recv_buffered=0,
                            send_buffered=0, last_io=0.0, who="alice" if i == 1 else "")
             for i in range(1, 4)]
    snap = Snapshot(address="a", root="/r", uptime=1.0, wakeups=0, timeout_wakeups=0,
                    connections=conns, transfers_done=0, transfers_failed=0, bytes_in=15,
                    bytes_out=0)
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False).print(view.render(snap, now=1.0,
                                                                        width=80))
    rows = [line for line in out.getvalue().splitlines() if "put" in line]
    assert len(rows) == 3 and all(len(line) <= 80 for line in rows)
    assert len({line.split("put", 1)[1].split()[0] for line in rows}) == 3  # (told apart)
    assert any("alice" in line for line in rows)


@pytest.mark.timeout(180)
def test_the_console_with_workers_through_ctrl_c_never_counts_down():
    import shutil
    from pathlib import Path

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    script = Path(__file__).parent.parent / "scripts" / "console_workers_check.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS")
