"""The narrated trace: what a learner sees when sockets split, coalesce, block and close."""

from __future__ import annotations

import os
import re
import socket
import string
import threading
import time
from pathlib import Path

import pytest

from muxserver import protocol
from muxserver.digests import BLAKE3
from muxserver.limits import Limits
from muxserver.trace import SENTENCES, WORDS, Narrator, hexdump

from .conftest import FrameReader, put_frame, run_cli, spawn_server, stop_process

pytestmark = pytest.mark.timeout(60)

SOURCE = Path(__file__).parent.parent / "muxserver"


class Recorder:
    """Collects narrated lines from the server thread; a test can wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()

    def write(self, line: str) -> None:
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        regex = re.compile(pattern)
        with self.cond:
            checked = 0
            found: list[str] = []

            def seen() -> bool:  # only the lines that arrived since the last look
                nonlocal checked
                found.extend(line for line in self.lines[checked:] if regex.search(line))
                checked = len(self.lines)
                return bool(found)

            assert self.cond.wait_for(seen, timeout), (
                f"no trace line matching {pattern!r}:\n" + "\n".join(self.lines[-30:]))
            return found[0]

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)


@pytest.fixture
def traced(make_server):
    def make(lang: str = "en", show_bytes: bool = False, **config):
        recorder = Recorder()
        running = make_server(**config)
        narrator = Narrator(lang, write=recorder.write, show_bytes=show_bytes)
        # set from the loop thread: the loop owns its channels
        done = threading.Event()
        running.server.loop.call_soon(lambda: (running.server.watch(narrator), done.set()))
        running.server.loop.wake()
        assert done.wait(5)
        return running, recorder
    return make


def test_a_prefix_sent_one_byte_at_a_time_is_narrated_as_split(traced):
    server, trace = traced()
    frame = protocol.encode_stat(1, "")
    with server.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(3):  # each byte waits until the server has narrated it
            sock.send(frame[i:i + 1])
            trace.wait_for(rf"the length prefix is {i + 1} of 8 bytes, waiting")
        for i in range(3, 12):
            sock.send(frame[i:i + 1])
        trace.wait_for(r"the header is \d+ of \d+ bytes, waiting")
        sock.send(frame[12:])
        assert FrameReader(sock).frame()[0]["ok"] is False  # stat "" is a bad name
    assert "recv returned 1 byte" in trace.text()


def test_a_burst_of_pipelined_requests_narrates_the_leftover(traced):
    server, trace = traced()
    burst = b"".join(put_frame(i, f"b{i}", b"x" * i) for i in range(1, 6))
    with server.connect() as sock:
        sock.sendall(burst)  # one send: five requests
        reader = FrameReader(sock)
        for _ in range(5):
            reader.frame()
    line = trace.wait_for(r"bytes left over belong to the next request and are kept")
    assert re.search(r"\[#\d+\] [\d,]+ bytes? left over", line)


def test_short_writes_and_the_write_interest_are_narrated(traced, tmp_path):
    server, trace = traced(limits=Limits(send_size=1000))
    (tmp_path / "big.bin").write_bytes(b"q" * 600_000)
    with server.client() as client:  # uploaded, so its hash is known: the get sends at once
        client.put_file(tmp_path / "big.bin", "big.bin")
    with server.connect() as sock:
        sock.sendall(protocol.encode_get(1, "big.bin", digest=BLAKE3))  # (what it knows)
        # Not reading yet: the reply cannot leave at once, so the loop watches for
        # writability (and, over the high-water mark, stops reading: read -> write).
        trace.wait_for(r"interest read -> (read\+write: output is still queued|write: output is queued and "
                       r"we are not reading)")
        trace.wait_for(r"sendfile was offered [\d,]+ bytes of the file and took 1,000 bytes; "
                       r"[\d,]+ bytes still to send")  # the short writes --send-size asks for
        reader = FrameReader(sock)
        fields, body = reader.frame()
        assert len(body) == 600_000
    trace.wait_for(r"interest (read\+)?write -> read: the queue drained|"
                   r"interest write -> read")


def test_backpressure_pauses_and_resumes_reading(traced, root):
    (root / "f").write_bytes(b"p" * 60_000)  # inline replies: they count as queued output
    server, trace = traced(limits=Limits(output_high_water=100_000, output_low_water=20_000))
    with server.connect() as sock:
        sock.sendall(protocol.encode_get(1, "f") * 30)
        trace.wait_for(r"backpressure: [\d,]+ bytes of replies wait \(over the high-water "
                       r"mark, 100,000 bytes\); reading paused")
        reader = FrameReader(sock)
        for _ in range(30):
            reader.frame()
    trace.wait_for(r"the replies drained; reading resumed")


def test_half_close_and_close_are_narrated(traced):
    server, trace = traced()
    with server.connect() as sock:
        sock.sendall(protocol.encode_list(1, ""))
        sock.shutdown(socket.SHUT_WR)
        reader = FrameReader(sock)
        reader.frame()
        assert reader.closed()
    trace.wait_for(r"recv returned 0: the peer finished sending \(half close or full close")
    trace.wait_for(r"unregistered, then closed")


def test_trace_bytes_shows_a_short_hex_dump(traced):
    server, trace = traced(show_bytes=True)
    with server.connect() as sock:
        sock.sendall(protocol.encode_stat(1, "x" * 200))
        FrameReader(sock).frame()
    trace.wait_for(r"^      0000  89 4d 55 58 01 00")
    trace.wait_for(r"\.\.\. \d+ more bytes")  # long frames are cut to a few lines


def test_spanish_narration(traced):
    server, trace = traced(lang="es")
    frame = protocol.encode_list(1, "")
    with server.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.send(frame[:3])
        trace.wait_for(r"el prefijo de longitud lleva 3 de 8 bytes")
        sock.send(frame[3:])
        FrameReader(sock).frame()
    trace.wait_for(r"recv devolvió \d+ bytes")
    trace.wait_for(r"respuesta encolada para el id 1: bien")


def test_an_idle_server_does_not_wake_up(make_server):
    running = make_server()
    with running.client() as client:  # one idle connection too: its timer is minutes away
        client.list()
        before = running.server.loop.wakeups
        time.sleep(1.0)  # a measurement window: counting wake-ups over one second
        after = running.server.loop.wakeups
    assert after - before <= 1


# ------------------------------------------------------------ the sentence tables


def placeholders(template: str) -> set[str]:
    return {field for _text, field, _spec, _conv in string.Formatter().parse(template)
            if field}


def test_every_english_sentence_has_a_spanish_one_with_the_same_blanks():
    assert set(SENTENCES["es"]) == set(SENTENCES["en"])
    for kind, english in SENTENCES["en"].items():
        assert placeholders(SENTENCES["es"][kind]) == placeholders(english), kind
    assert set(WORDS["es"]) == set(WORDS["en"])


def test_every_event_the_code_emits_has_a_sentence():
    emitted = set(re.findall(r'self\.event\("(\w+)"', (SOURCE / "observe.py").read_text()))
    assert emitted, "no events found"
    refined = {"send_all", "send_blocked", "timer_wakeup"}  # chosen by the narrator
    assert emitted | refined == set(SENTENCES["en"]), (emitted ^ set(SENTENCES["en"]))


def test_hexdump_format():
    lines = hexdump(b"\x89MUX" + b"A" * 60)
    assert lines[0].startswith("0000  89 4d 55 58 41")
    assert lines[0].endswith("|.MUXAAAAAAAAAAAA|")
    assert lines[-1].strip() == "... 16 more bytes"


def test_the_command_line_trace_in_both_languages(root, tmp_path):
    (tmp_path / "f.txt").write_text("traced")
    for lang, expected in (("en", "header complete: put 'f.txt'"),
                           ("es", "cabecera completa: put 'f.txt'")):
        srv = spawn_server(root, "--trace", "--lang", lang)
        try:
            args = ["--port", str(srv.port), "--overwrite"]
            assert run_cli("put", str(tmp_path / "f.txt"), *args).returncode in (0, 1)
        finally:
            stop_process(srv.proc)
        out, _err = srv.output()
        assert expected in out


def test_the_language_follows_the_locale(monkeypatch):
    from muxserver.trace import default_language

    monkeypatch.setenv("LC_ALL", "es_ES.UTF-8")
    assert default_language() == "es"
    monkeypatch.setenv("LC_ALL", "en_GB.UTF-8")
    assert default_language() == "en"
    monkeypatch.delenv("LC_ALL")
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("LANG", "es_MX.UTF-8")
    assert default_language() == "es"


def test_torture_knobs_at_one_byte_keep_every_transfer_correct(make_server, tmp_path):
    server = make_server(limits=Limits(recv_size=1, send_size=1))
    data = bytes(range(256)) * 12  # 3 KiB: thousands of 1-byte recv and send calls
    (tmp_path / "t.bin").write_bytes(data)
    with server.client() as client:
        client.put_file(tmp_path / "t.bin", "t.bin")
        client.get_file("t.bin", tmp_path / "back.bin")
        assert [e["name"] for e in client.list()] == ["t.bin"]
    assert (tmp_path / "back.bin").read_bytes() == data


def test_with_the_console_on_trace_lines_go_to_its_event_pane(make_server):
    from rich.console import Console

    from muxserver.console import LiveConsole

    running = make_server()
    live = LiveConsole(running.server, console=Console(record=True, width=120),
                       log_lines=14)
    narrator = Narrator("en", write=live.trace_line)
    narrator.event("recv", 7, n=42)
    narrator.event("prefix_wait", 7, have=3)
    lines = [line.plain for _, line in live.view.log]
    assert lines[-2].endswith("[#7] recv returned 42 bytes")
    assert lines[-1].endswith("[#7] the length prefix is 3 of 8 bytes, waiting for the rest")


def test_a_large_upload_is_spliced_and_narrated(traced, tmp_path):
    server, trace = traced()
    data = os.urandom(6 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    with server.client() as client:
        client.put_file(tmp_path / "big", "big")
    trace.wait_for(r"splice moved [\d,]+ bytes of the body from the socket to the file")
    assert (server.root / "big").read_bytes() == data


def test_the_sentences_say_exactly_what_happened():
    from muxserver.trace import Narrator
    lines: list[str] = []
    english, spanish = Narrator("en", write=lines.append), Narrator("es", write=lines.append)
    english.event("wakeup", None, ready=2, count=7, sockets=[("listener", 1), ("#3", 3)])
    english.event("interest", 1, old=1, new=2)   # read -> write: reading stopped, so no "also"
    english.event("interest", 1, old=1, new=3)   # read -> read+write: "also"
    english.event("recv", 1, n=1)
    english.event("send", 1, offered=65536, taken=1000, queued=64536)
    spanish.event("eof", 1)
    spanish.event("io_error", 1, call="recv", error="reset by peer")
    assert lines == [
        "[loop] select() woke up: the listener readable, #3 readable+writable (wake-up #7)",
        "[#1] interest read -> write: output is queued and we are not reading, so we wait "
        "for writability alone",
        "[#1] interest read -> read+write: output is still queued, so we also wait for "
        "writability",
        "[#1] recv returned 1 byte",
        "[#1] send was offered 65,536 bytes and took 1,000 bytes: a short write; 64,536 bytes "
        "wait in the queue",
        "[#1] recv devolvió 0: el otro extremo terminó de enviar (cierre parcial (half-close) "
        "o cierre completo: recv no puede distinguirlos); enviaremos igualmente las "
        "respuestas pendientes",
        "[#1] recv falló: el otro extremo abortó la conexión (RST); esta conexión termina, "
        "las demás siguen",
    ]


def test_send_size_makes_real_short_writes_over_http_too(traced, root):
    # --send-size lives in the channel, below both protocols: an HTTP download's body is
    # cut the same way as a native reply's (test_short_writes_and_the_write_interest...).
    (root / "big.bin").write_bytes(b"h" * 300_000)
    server, trace = traced(limits=Limits(send_size=1000))
    with server.connect() as sock:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        trace.wait_for(r"sendfile was offered [\d,]+ bytes of the file and took 1,000 bytes; "
                       r"[\d,]+ bytes still to send")
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"h" * 1000)
    assert len(received.partition(b"\r\n\r\n")[2]) == 300_000


def test_every_event_an_observer_can_be_told_is_recorded():
    from muxserver.observe import Observer, Recorder
    from muxserver.trace import Fanout

    events = {name for name, value in vars(Observer).items()
              if callable(value) and not name.startswith("_")}
    assert events and events <= set(vars(Recorder))  # (none dropped on the way to a sentence)
    assert events <= set(vars(Fanout))  # (none dropped on the way to a second observer)


@pytest.mark.parametrize("target", ["/?token=S3CRET", "/?%74oken=S3CRET",
                                    "/?a=1&%74%6Fken=S3CRET&b=2", "/d/?download=zip&token=S3CRET"])
def test_a_token_is_hidden_however_its_key_is_spelled(target):
    from muxserver.http_codec import parse_query
    from muxserver.observe import without_tokens

    assert parse_query(target.partition("?")[2]).get("token") == "S3CRET"  # (taken as one)
    shown = without_tokens(target)
    assert "S3CRET" not in shown and shown.count("…") == 1


@pytest.mark.parametrize("kind", ["narration", "json"])
def test_a_trace_that_cannot_be_written_stops_and_the_server_goes_on(make_server, kind,
                                                                      log_watcher):
    from muxserver.trace import JsonTrace

    class Unwritable:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    server = make_server()
    recorder = (Narrator("en", write=Unwritable().write) if kind == "narration"
                else JsonTrace(Unwritable()))  # type: ignore[arg-type]
    server.server.watch(recorder)
    for attempt in range(2):
        with server.connect() as sock:
            sock.sendall(protocol.encode_list(attempt, ""))
            assert FrameReader(sock).frame()[0]["ok"]
    assert recorder.broken
    said = [r.getMessage() for r in log_watcher.records]
    assert sum("the trace could not be written" in line for line in said) == 1


@pytest.mark.parametrize("method, target", [("GET", "/?format=json"), ("PROPFIND", "/")])
def test_a_listing_streamed_in_pages_is_narrated_with_its_size_in_bytes(traced, root, method,
                                                                          target):
    # (a listing is built a page per loop step: its size is the bytes sent, not the
    # number of entries it held)
    for i in range(3):
        (root / f"f{i}.txt").write_bytes(b"x")
    server, trace = traced()
    with server.connect() as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nDepth: 1\r\n"
                     "Connection: close\r\n\r\n".encode())
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert b"chunked" in head.lower()
    sent = sum(int(size, 16) for size in re.findall(rb"(?m)^([0-9a-fA-F]+)\r$", body))
    assert sent > 100
    line = trace.wait_for(r"HTTP response 20\d queued")
    assert f"(a body of {sent:,} bytes)" in line, line
