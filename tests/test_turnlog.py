"""The turn log: a loop turn's transfer lines go to logging as one record before the
loop sleeps, in order with every other record, each line with its own stamp."""

from __future__ import annotations

import logging

import pytest

from muxserver import protocol
from muxserver.logformat import LineFormatter
from muxserver.loop import EventLoop
from muxserver.turnlog import Lines, TurnLog

pytestmark = pytest.mark.timeout(30)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger():
    logger = logging.getLogger("muxserver.test-turnlog")
    collect = Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, collect
    finally:
        logger.removeHandler(collect)


def test_lines_wait_for_the_end_of_the_turn_and_go_as_one_record(logger):
    logger, collect = logger
    loop = EventLoop()
    turn_log = TurnLog(logger)
    try:
        turn_log.attach(loop.add_before_sleep)
        turn_log.info("%s put %s: %d bytes ok", "peer:1", "a", 1)
        turn_log.info("%s get %s: %d bytes ok", "peer:2", "b", 2)
        assert collect.records == []  # (the loop has not come round to sleeping)
        loop.run_once(max_wait=0)
        (record,) = collect.records
        assert isinstance(record.msg, Lines)
        assert record.getMessage() == "peer:1 put a: 1 bytes ok\npeer:2 get b: 2 bytes ok"
        loop.run_once(max_wait=0)
        assert len(collect.records) == 1  # nothing new: no empty record
    finally:
        turn_log.detach()
        loop.close()


def test_any_other_record_goes_after_the_lines_collected_before_it(logger):
    logger, collect = logger
    turn_log = TurnLog(logger)
    turn_log.attach(lambda callback: None)
    try:
        turn_log.info("first %s", "line")
        logger.warning("%s closed", "peer:1")
        turn_log.info("second %s", "line")
        logger.error("a storage %s", "record")
        turn_log.info("third %s", "line")
    finally:
        turn_log.detach()  # writes what is left
    assert [r.getMessage() for r in collect.records] == [
        "first line", "peer:1 closed", "second line", "a storage record",
        "third line"]
    turn_log.info("now %s", "at once")  # detached: no loop to wait for
    assert collect.records[-1].getMessage() == "now at once"
    assert not isinstance(collect.records[-1].msg, Lines)


def test_nothing_is_collected_when_info_lines_are_off(logger):
    logger, collect = logger
    logger.setLevel(logging.WARNING)
    turn_log = TurnLog(logger)
    turn_log.attach(lambda callback: None)
    try:
        turn_log.info("quiet %s", "line")
        assert turn_log.pending == []
    finally:
        turn_log.detach()
    assert collect.records == []


def test_each_line_of_a_turn_gets_its_own_stamp():
    record = logging.LogRecord("muxserver", logging.INFO, "", 0,
                               Lines([("%s one", ("a",), None), ("%s two", ("b",), None)]),
                               (), None)
    record.created = 0.0
    first, second = LineFormatter("w2 ").format(record).split("\n")
    assert first.endswith(" w2 a one") and second.endswith(" w2 b two")
    assert first[:8] == second[:8] and first[2] == ":"  # HH:MM:SS on both


def test_each_protocol_writes_its_transfer_lines_before_the_connection_closes(tmp_path):
    """A real server: native and HTTP transfers alike go through the turn log, one line
    each, and each line comes before its connection's "closed" line."""
    import http.client
    import re

    from .conftest import run_cli, spawn_server, stop_process

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "n.txt").write_bytes(b"native")
    server = spawn_server(root)
    try:
        port = str(server.port)
        assert run_cli("put", str(tmp_path / "n.txt"), "--port", port, "-q").returncode == 0
        assert run_cli("get", "n.txt", "-o", str(tmp_path / "back.txt"), "--port", port,
                       "-q").returncode == 0
        for method, body in (("PUT", b"web"), ("GET", None)):
            conn = http.client.HTTPConnection(server.host, server.port, timeout=20)
            try:
                conn.request(method, "/h.txt", body=body)
                assert conn.getresponse().status in (200, 201)
            finally:
                conn.close()
    finally:
        stop_process(server.proc)
    _out, err = server.output()
    lines = err.splitlines()
    expected = [r" put n\.txt: 6 bytes, blake3 \w+ ok$", r" get n\.txt: 6 bytes, blake3 \w+ ok$",
                r" HTTP put h\.txt: 3 bytes, sha256 \w+ ok$", r" HTTP get h\.txt: 3 bytes"]
    for pattern in expected:
        (at,) = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        peer = lines[at].split()[1]
        closed = [i for i, line in enumerate(lines) if f"{peer} closed" in line]
        assert closed and closed[0] > at, (pattern, err)


def test_a_connection_s_lines_come_among_the_turn_s_lines_with_their_fields(tmp_path):
    """A server's "connected" and "closed" lines are turn lines like the transfers': no
    record (and no write) of their own for each connection, and each keeps its kind
    and its connection for the console."""
    import socket
    import threading

    from .conftest import start_thread_server, stop_thread_server

    closed = threading.Event()
    records: list[logging.LogRecord] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            if " closed (" in record.getMessage():
                closed.set()

    logger = logging.getLogger("muxserver")
    watch, level = Watch(level=logging.DEBUG), logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    running, thread = start_thread_server(tmp_path)
    try:
        with socket.create_connection((running.host, running.port), timeout=10) as sock:
            sock.sendall(protocol.encode_frame({"id": 1, "op": "stat", "name": "nothing"}))
            assert sock.recv(65536)  # (a reply: the connection is counted and served)
        assert closed.wait(20), [r.getMessage() for r in records]
    finally:
        stop_thread_server(running, thread)
        logger.removeHandler(watch)
        logger.setLevel(level)
    assert all(isinstance(r.msg, Lines) for r in records
               if " connected" in r.getMessage() or " closed (" in r.getMessage())
    fields = [fields for r in records if isinstance(r.msg, Lines)
              for _template, _args, fields in r.msg.lines if fields]
    events = [f["event"] for f in fields if f.get("event") in ("connected", "closed")]
    assert events == ["connected", "closed"], fields
    assert fields[0]["conn"] == fields[-1]["conn"]
