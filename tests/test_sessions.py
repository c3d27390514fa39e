"""The promises both protocols keep, checked on both sessions in memory.

Each test runs twice, once per wire format (see session_harness.py): admission per
request, refused bodies never read, the back-off per address, every timeout phase,
errors to header-only requests, and statistics counted once. Live-socket tests of the
same behaviour are in test_http.py, test_access.py and test_timeouts.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from muxserver import hashing, protocol
from muxserver import rules as rules_module
from muxserver.access import ALL_RIGHTS, Access, HostNames
from muxserver.limits import Limits
from muxserver.transport import Phase

from .conftest import UnreadableHashJob
from .session_harness import harnesses

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret+token/=="


@pytest.fixture(params=["native", "http", "webdav"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def make(kind, tmp_path):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    with harnesses(kind, root) as make_harness:
        yield make_harness


def hidden_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".muxserver-*")]


# ------------------------------------------------------------------- admission


def test_a_request_without_credentials_is_refused_and_three_close(make):
    h = make(token=TOKEN)
    for strike in (1, 2, 3):
        assert not h.closing
        h.send(h.wire.get("f"))
        assert h.replies()[-1].refused("unauthorized")
        assert h.session.strikes == strike
    assert h.closing


def test_the_right_token_is_served_and_a_wrong_one_refused(make, root_file):
    h = make(token=TOKEN)
    h.send(h.wire.get("f", token=TOKEN))
    assert h.replies()[-1].ok and h.replies()[-1].body == b"hello"
    h.send(h.wire.get("f", token="guess"))
    assert h.replies()[-1].refused("unauthorized")


def test_a_refused_request_with_a_body_is_never_read(make):
    h = make(token=TOKEN)
    h.send(h.wire.put("x.bin", b"a" * 5000, body=False))
    assert h.replies()[-1].refused("unauthorized")
    assert h.closing  # answered, then closed: the body will not be read
    assert h.session.upload is None and hidden_files(Path(h.root.path)) == []
    h.send(b"a" * 5000 + h.wire.get("x.bin"))  # nothing more is decoded
    assert len(h.replies()) == 1


def test_wrong_tokens_from_one_address_start_a_back_off(make, kind):
    limits = Limits(address_auth_failures=4, auth_backoff=60.0)
    clock = [0.0]
    access = Access({TOKEN: ALL_RIGHTS}, limits, HostNames("127.0.0.1"),
                    clock=lambda: clock[0])
    for _ in range(4):  # four connections, one wrong guess each
        h = make(limits=limits, access=access)
        h.send(h.wire.get("f", token="guess"))
        assert h.replies()[0].refused("unauthorized")
    h = make(limits=limits, access=access)
    h.send(h.wire.get("f", token=TOKEN))  # even the right token, now
    refusal = h.replies()[-1]
    assert refusal.refused("too_many_attempts") and h.closing
    if kind != "native":
        assert refusal.headers["retry-after"] == "60"
    other = make(limits=limits, access=access, peer_host="192.0.2.99")
    other.send(other.wire.get("missing", token=TOKEN))  # another address is not affected
    assert other.replies()[-1].refused("not_found")
    clock[0] = 61.0  # the back-off is over
    h = make(limits=limits, access=access)
    h.send(h.wire.get("missing", token=TOKEN))
    assert h.replies()[-1].refused("not_found")


def test_a_token_utf8_cannot_encode_is_a_wrong_token_not_a_crash(make, kind):
    h = make(token=TOKEN)
    if kind == "native":  # JSON's escape for a lone surrogate, which no UTF-8 holds
        raw = b'{"id":1,"op":"auth","token":"\\ud800"}'
        h.send(protocol.PREFIX.pack(protocol.MAGIC, 1, 0, len(raw)) + raw)
    else:
        h.send(h.wire.request("GET", "/f", {"Authorization": "Bearer \xff\xfe"}))
    assert h.replies()[-1].refused("unauthorized") and not h.closing


# -------------------------------------------------------------------- timeouts


def test_a_header_is_timed_from_its_first_byte_however_it_dribbles(make):
    h = make()
    assert h.session.timeout_phase() == (Phase.IDLE, 0.0)
    request = h.wire.get("f")
    h.loop.now = 1000.0
    h.send(request[:3])
    assert h.session.timeout_phase() == (Phase.HEADER, 1000.0)
    h.loop.now = 1059.0
    h.send(request[3:6])  # more bytes do not move the deadline (slowloris)
    assert h.session.timeout_phase() == (Phase.HEADER, 1000.0)
    h.session.on_timeout(Phase.HEADER)
    assert h.replies()[-1].refused("timeout") and h.closing


def test_the_header_clock_starts_before_the_protocol_is_known(make, kind):
    from muxserver.sniff import Sniffer

    h = make()
    sniffer = Sniffer(h.services, h.channel)
    h.channel.protocol = sniffer
    request = h.wire.get("f")
    h.loop.now = 1000.0
    sniffer.data_received(memoryview(request[:1]))  # "G", or the native magic byte
    assert h.channel.protocol.timeout_phase() == (Phase.HEADER, 1000.0)
    h.loop.now = 1002.0
    h.channel.protocol.data_received(memoryview(request[1:12]))  # the protocol is known
    session = h.channel.protocol
    assert session is not sniffer and session.timeout_phase() == (Phase.HEADER, 1000.0)


def test_a_stalled_upload_times_out_and_leaves_nothing(make):
    h = make()
    data = os.urandom(10_000)
    h.send(h.wire.put("up.bin", data, body=False) + data[:4000])
    assert h.session.timeout_phase()[0] is Phase.TRANSFER
    h.session.on_timeout(Phase.TRANSFER)
    assert h.replies()[-1].refused("timeout") and h.closing
    assert hidden_files(Path(h.root.path)) == [] and not (Path(h.root.path) / "up.bin").exists()
    assert h.stats == (0, 1)


def test_a_download_nobody_reads_is_a_stalled_transfer(make, root_file):
    h = make()
    (Path(h.root.path) / "big.bin").write_bytes(os.urandom(300_000))
    h.send(h.wire.get("big.bin"), read=False)
    assert h.session.timeout_phase()[0] is Phase.TRANSFER
    h.session.on_timeout(Phase.TRANSFER)
    assert h.channel.closed  # inside a body: no reply can be framed, just close
    h.channel.lose()
    assert h.stats == (0, 1)


def test_an_idle_connection_is_closed(make, kind, root_file):
    h = make()
    h.send(h.wire.get("f"))
    assert h.session.timeout_phase() == (Phase.IDLE, 0.0)
    h.session.on_timeout(Phase.IDLE)
    assert h.closing
    last = h.replies()[-1]
    if kind == "native":
        assert last.refused("timeout")  # the native protocol says why
    else:
        assert last.ok  # HTTP closes an idle keep-alive connection without a word


# ------------------------------------------------------------------ errors, bodies


def test_an_error_to_a_header_only_request_has_no_body(make, root_file):
    h = make()
    h.send(h.wire.header_only("missing"))
    error = h.replies()[-1]
    assert error.refused("not_found") and error.body == b"" and not h.closing
    h.send(h.wire.get("f"))  # the connection is still in step
    assert h.replies()[-1].body == b"hello"


def test_a_refused_put_counts_once_and_stores_nothing(make, kind, root_file):
    h = make()
    h.send(h.wire.put("f", b"other"))
    assert h.replies()[-1].refused("exists")
    assert (Path(h.root.path) / "f").read_bytes() == b"hello"
    assert hidden_files(Path(h.root.path)) == [] and h.stats == (0, 1)
    if kind != "native":
        assert h.closing  # HTTP does not read a refused body: it closes
    else:
        assert not h.closing  # the native body was skipped; the next request is served
        h.send(h.wire.get("f"))
        assert h.replies()[-1].body == b"hello"


def test_statistics_count_every_transfer_once(make, root_file):
    h = make(limits=Limits(max_file_size=100))
    h.send(h.wire.put("new.txt", b"12345"))
    assert h.replies()[-1].ok and h.stats == (1, 0)
    h.send(h.wire.get("new.txt"))
    assert h.replies()[-1].body == b"12345" and h.stats == (2, 0)
    h.send(h.wire.get("missing"))
    assert h.stats == (2, 1)
    h.send(h.wire.put("huge.bin", b"x" * 101, body=False))
    assert h.replies()[-1].refused("too_large") and h.stats == (2, 2)
    h.channel.lose()
    assert h.stats == (2, 2)


def test_a_connection_lost_mid_upload_counts_one_failure(make):
    h = make()
    data = os.urandom(50_000)
    h.send(h.wire.put("cut.bin", data, body=False) + data[:1000])
    h.channel.lose()
    assert h.stats == (0, 1) and hidden_files(Path(h.root.path)) == []


def test_the_console_label_names_what_the_connection_does(make, kind):
    h = make()
    prefix = "HTTP " if kind != "native" else ""
    assert h.session.state_label == prefix + "idle"
    data = os.urandom(5000)
    h.send(h.wire.put("p.bin", data, body=False) + data[:10])
    assert h.session.state_label == prefix + "receiving body"
    assert h.session.transfer is not None and h.session.transfer.done == 10


@pytest.fixture
def root_file(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir(exist_ok=True)
    (path / "f").write_bytes(b"hello")
    return path


# ------------------------------------------------------------- a file never hashed


def test_a_file_never_hashed_is_hashed_by_the_helper_then_sent(make, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "root" / "placed.bin").write_bytes(data)
    h = make()
    h.send(h.wire.get("placed.bin"), read=False)  # the reply needs the digest first
    reply = h.replies()[-1]
    assert reply.ok and reply.body == data and h.stats == (1, 0)
    assert h.session.file_hash is None and not h.session.busy


def test_a_file_that_cannot_be_hashed_before_its_reply_is_an_error(make, tmp_path,
                                                                   monkeypatch):
    (tmp_path / "root" / "placed.bin").write_bytes(os.urandom(3 * 1024 * 1024))

    monkeypatch.setattr(rules_module, "HashJob", UnreadableHashJob)
    h = make()
    before = len(os.listdir("/proc/self/fd"))
    h.send(h.wire.get("placed.bin"))
    assert h.replies()[-1].refused("io_error") and h.stats == (0, 1)
    assert len(os.listdir("/proc/self/fd")) <= before  # the file was closed


def test_a_connection_lost_while_its_file_is_hashed_closes_the_file(make, tmp_path,
                                                                    monkeypatch):
    (tmp_path / "root" / "placed.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    jobs = []

    class Held(hashing.HashJob):
        def finish(self, total, on_done) -> None:
            jobs.append(self)  # never done by itself: the connection ends first

    monkeypatch.setattr(rules_module, "HashJob", Held)
    h = make()
    before = len(os.listdir("/proc/self/fd"))
    h.session.data_received(memoryview(bytearray(h.wire.get("placed.bin"))))
    assert h.session.state_label.endswith("hashing") and h.channel.reading_paused
    transfer = h.session.transfer  # what the console shows: the hash's progress
    assert transfer is not None and transfer.total == 3 * 1024 * 1024
    assert transfer.done == jobs[0].hashed
    h.channel.lose()
    assert jobs[0].cancelled and h.stats == (0, 1)
    assert len(os.listdir("/proc/self/fd")) <= before + 1  # (the helper's own, until it
    # sees the cancel: its descriptor is closed on the helper thread)


# ------------------------------------- one rule, every wire: where the copies drifted


def test_asking_what_is_held_of_an_upload_needs_the_write_right(make, kind, tmp_path):
    from muxserver.access import READ

    h = make(tokens={TOKEN: frozenset({READ})})
    h.login(TOKEN)
    if kind == "native":
        h.send(protocol.encode_partial(5, "x.bin", "0" * 64, 10))
    else:  # (an ID is looked at only once the right is there)
        h.send(h.wire.request("HEAD", "/.tus/anything", {"Tus-Resumable": "1.0.0"}))
    assert h.replies()[-1].refused("not_permitted")


def test_a_stopping_server_says_so_before_asking_for_credentials(make):
    h = make(token=TOKEN)
    h.services.stopping = True
    h.send(h.wire.get("f"))  # no credentials at all
    assert h.replies()[-1].refused("shutting_down") and h.closing
    assert h.session.strikes == 0


def test_an_offset_the_storage_finds_wrong_is_the_wires_own_mismatch(make, kind, monkeypatch):
    import base64
    import hashlib

    from muxserver import storage

    data = os.urandom(3000)
    h = make()
    if kind == "native":
        h.send(protocol.encode_put(1, "o.bin", len(data), hashlib.sha256(data).hexdigest(),
                                   resumable=True) + data[:1000])
        h.channel.lose()
        h = make()
        h.send(protocol.encode_put(2, "o.bin", 2500, hashlib.sha256(data).hexdigest(),
                                   offset=500, resumable=True) + data[500:])
        assert h.replies()[-1].refused("offset_mismatch")
        return
    meta = "filename " + base64.b64encode(b"o.bin").decode()
    h.send(h.wire.request("POST", "/.tus/", {"Upload-Length": "3000", "Upload-Metadata": meta,
                                             "Tus-Resumable": "1.0.0"}))
    location = h.replies()[-1].headers["location"]
    # The handler's own check passes (a stale size), the storage's does not: one answer.
    monkeypatch.setattr(storage.Root, "held", lambda *args, **kw: 500)
    h.send(h.wire.request("PATCH", location, {
        "Content-Type": "application/offset+octet-stream", "Content-Length": "2500",
        "Upload-Offset": "500", "Tus-Resumable": "1.0.0"}, data[500:]))
    assert h.replies()[-1].status == 409  # tus's word for it, as from its own check


def test_a_resumed_small_get_counts_the_bytes_sent(make, kind, log_watcher):
    h = make()
    (Path(h.root.path) / "small.txt").write_bytes(b"0123456789")
    if kind == "native":
        h.send(protocol.encode_get(3, "small.txt", offset=4))
    else:
        h.send(h.wire.request("GET", "/small.txt", {"Range": "bytes=4-"}))
    assert h.replies()[-1].body == b"456789"
    h.services.turn_log.flush()  # (the transfer lines of a loop turn: written now)
    assert any("get small.txt: 6 bytes" in r.getMessage() for r in log_watcher.records)


# ----------------------------------- the native protocol does what its document says


@pytest.fixture
def native(tmp_path):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    with harnesses("native", root) as make_harness:
        yield make_harness


@pytest.mark.parametrize("token", [None, 42, ""])
def test_auth_on_a_server_without_tokens_always_succeeds(native, token):
    h = native()
    fields = {"id": 1, "op": "auth"} | ({} if token is None else {"token": token})
    raw = json.dumps(fields).encode()
    h.send(protocol.PREFIX.pack(protocol.MAGIC, 1, 0, len(raw)) + raw)
    assert h.replies()[-1].ok


def native_put_with_trailer(data: bytes, put_id: int, **fields: object) -> bytes:
    header = {"id": put_id, "op": "put", "name": "t.bin", "length": len(data),
              "trailer": "blake3", **fields}
    raw = json.dumps(header).encode()
    return protocol.PREFIX.pack(protocol.MAGIC, 1, 0, len(raw)) + raw + data


def trailer(put_id: int, data: bytes, algorithm: str = "blake3") -> bytes:
    import blake3

    digest = blake3.blake3(data).hexdigest() if algorithm == "blake3" else "0" * 64
    raw = json.dumps({"id": put_id, "op": "trailer", algorithm: digest}).encode()
    return protocol.PREFIX.pack(protocol.MAGIC, 1, 0, len(raw)) + raw


def test_a_trailer_frame_of_another_put_is_served_as_the_request_it_is(native):
    h = native()
    data = b"trailer data"
    h.send(native_put_with_trailer(data, 7) + trailer(8, data) + h.wire.listing())
    replies = h.replies()
    assert [(json.loads(r.headers["id"]), r.code) for r in replies[:2]] == [
        (7, "bad_request"), (8, "bad_request")]  # the put failed; the frame was served
    assert replies[2].ok and not (Path(h.root.path) / "t.bin").exists()


def test_a_trailer_with_the_puts_id_and_another_algorithm_fails_it_once(native):
    h = native()
    h.send(native_put_with_trailer(b"abc", 7) + trailer(7, b"abc", "sha256")
           + h.wire.listing())
    replies = h.replies()
    assert [r.code for r in replies] == ["bad_request", None] and replies[1].ok


@pytest.mark.parametrize("fields", [{"sha256": "0" * 64}, {"resumable": True}])
def test_a_put_refused_from_its_header_drops_its_trailer(native, fields):
    h = native()  # (a digest and a trailer both; a resumable trailer put without mtime)
    h.send(native_put_with_trailer(b"abc", 7, **fields) + trailer(7, b"abc")
           + h.wire.listing())
    replies = h.replies()
    assert [r.code for r in replies] == ["bad_request", None]  # one reply, not two
    assert replies[1].ok and not h.closing


def test_mkdir_with_parents_over_a_file_says_it_exists(make, kind, root_file):
    h = make()
    if kind == "native":
        h.send(protocol.encode_mkdir(4, "f", parents=True))
        assert h.replies()[-1].refused("exists")
    h.send(protocol.encode_mkdir(5, "f/below", parents=True) if kind == "native"
           else h.wire.mkdir("f/below"))
    assert h.replies()[-1].refused("not_a_directory")  # a parent that is a file


# ------------------------------------------------------ the request state machine


def test_every_state_can_be_lost_and_nothing_else_is_silent():
    from muxserver.lifecycle import TRANSITIONS, Event, IllegalEvent, RequestState, Work

    for state in Work:
        if state is not Work.CLOSED:
            assert TRANSITIONS[state][Event.LOST] is Work.CLOSED
    machine = RequestState()
    with pytest.raises(IllegalEvent, match="JOB_ENDED while IDLE"):
        machine.move(Event.JOB_ENDED)
    assert machine.move(Event.UPLOAD_OPENED) is Work.RECEIVING and machine.uploading
    with pytest.raises(IllegalEvent):
        machine.move(Event.JOB_STARTED)  # one request at a time
    assert machine.move(Event.HELPER_VERIFIES) is Work.VERIFYING and machine.must_wait
    assert machine.move(Event.UPLOAD_ENDED) is Work.IDLE and not machine.busy
    assert repr(machine) == "<RequestState IDLE>"


def test_a_put_walks_the_states_the_console_shows(make, kind):
    data = os.urandom(10_000)
    h = make()
    h.send(h.wire.put("w.bin", data, body=False) + data[:100])
    assert h.session.work.state.name == "RECEIVING"
    assert h.session.state_label.endswith("receiving body")
    h.send(data[100:])
    assert h.session.work.state.name == "IDLE" and h.replies()[-1].ok
    h.channel.lose()
    assert h.session.work.state.name == "CLOSED"


# ------------------------------------------------------------- one error family


def test_every_error_is_one_family_and_every_code_has_a_word_on_every_wire():
    from muxserver import tus
    from muxserver.client import ClientError
    from muxserver.errors import MuxError
    from muxserver.http_codec import STATUS
    from muxserver.names import BadName
    from muxserver.storage import StorageError

    for kind in (protocol.ProtocolError, protocol.RequestError, BadName, StorageError,
                 ClientError):
        assert issubclass(kind, MuxError)
    assert BadName("x").code == "bad_name"
    assert set(protocol.ERROR_CODES) <= set(STATUS)  # HTTP's table: every code
    assert set(tus.STATUS) <= set(protocol.ERROR_CODES)  # tus's: only where it differs
