"""The sans-I/O decoder: any chunking of a byte stream gives the same events."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxserver import protocol
from muxserver.protocol import (BodyData, FrameDecoder, FrameEnd, FrameHeader, NEED_DATA,
                                PeerClosed, ProtocolError)

from .conftest import put_frame

pytestmark = pytest.mark.timeout(60)


def stream_of_requests() -> bytes:
    """Several pipelined requests, with bodies of 0, 1 and 300 bytes."""
    return b"".join([
        put_frame(1, "a.txt", b""),
        put_frame(2, "dir/b.bin", b"x"),
        protocol.encode_get(3, "a.txt"),
        put_frame(4, "c.bin", bytes(range(256)) + b"tail" * 11),
        protocol.encode_list(5, "", recursive=True),
        protocol.encode_stat(6, "dir/b.bin"),
    ])


def decode(chunks, *, copy_leftovers: bool = False) -> list:
    """Feed chunks one by one; return events with body pieces joined per frame."""
    decoder = FrameDecoder()
    events: list = []
    for chunk in filter(None, chunks):  # an empty chunk would mean end of stream
        buf = bytearray(chunk)  # lent memory, reused below to catch missing copies
        decoder.receive_data(buf)
        _drain(decoder, events)
        decoder.keep_leftover()
        buf[:] = b"\xee" * len(buf)
    decoder.receive_data(b"")
    _drain(decoder, events)
    return events


def _drain(decoder: FrameDecoder, events: list) -> None:
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            return
        if isinstance(event, BodyData):
            if events and isinstance(events[-1], bytes):
                events[-1] += bytes(event.data)
            else:
                events.append(bytes(event.data))
        else:
            events.append(event)
        if isinstance(event, PeerClosed):
            return


EXPECTED = decode([stream_of_requests()])


def test_whole_stream_decodes_to_header_body_end_events():
    kinds = [type(e).__name__ if not isinstance(e, bytes) else "body" for e in EXPECTED]
    assert kinds == ["FrameHeader", "FrameEnd",
                     "FrameHeader", "body", "FrameEnd",
                     "FrameHeader", "FrameEnd",
                     "FrameHeader", "body", "FrameEnd",
                     "FrameHeader", "FrameEnd",
                     "FrameHeader", "FrameEnd",
                     "PeerClosed"]
    assert EXPECTED[0].fields["name"] == "a.txt" and EXPECTED[0].length == 0
    assert EXPECTED[8] == bytes(range(256)) + b"tail" * 11
    assert EXPECTED[-1] == PeerClosed(mid_frame=False)


def test_every_split_position_gives_the_same_events():
    data = stream_of_requests()
    for cut in range(len(data) + 1):
        assert decode([data[:cut], data[cut:]]) == EXPECTED, f"split at {cut}"


def test_one_byte_at_a_time_gives_the_same_events():
    data = stream_of_requests()
    assert decode([data[i:i + 1] for i in range(len(data))]) == EXPECTED


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=700), max_size=30))
def test_any_chunking_gives_the_same_events(cuts):
    data = stream_of_requests()
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0] + points, points + [len(data)])]
    assert decode(chunks) == EXPECTED


def test_length_prefix_split_across_three_reads():
    frame = protocol.encode_get(9, "x")
    decoder = FrameDecoder()
    decoder.receive_data(frame[:3])
    assert decoder.next_event() is NEED_DATA and decoder.partial == 3
    decoder.receive_data(frame[3:6])
    assert decoder.next_event() is NEED_DATA and decoder.partial == 6
    decoder.receive_data(frame[6:])
    event = decoder.next_event()
    assert isinstance(event, FrameHeader) and event.fields == {"id": 9, "op": "get", "name": "x"}
    assert isinstance(decoder.next_event(), FrameEnd)


def test_leftover_bytes_are_kept_for_the_next_message():
    first, second = put_frame(1, "a", b"12345"), protocol.encode_get(2, "a")
    scratch = bytearray(first + second[:5])
    decoder = FrameDecoder()
    decoder.receive_data(scratch)
    assert isinstance(decoder.next_event(), FrameHeader)
    assert bytes(decoder.next_event().data) == b"12345"
    assert isinstance(decoder.next_event(), FrameEnd)
    # the caller stops here (backpressure) and will reuse its buffer: the 5 bytes survive
    assert decoder.keep_leftover() == 5
    scratch[:] = b"\0" * len(scratch)
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(second[5:])
    event = decoder.next_event()
    assert isinstance(event, FrameHeader) and event.fields["id"] == 2


def test_unread_borrowed_input_must_be_kept_before_new_data():
    decoder = FrameDecoder()
    decoder.receive_data(bytearray(protocol.encode_get(1, "a") * 2))
    decoder.next_event()
    with pytest.raises(RuntimeError, match="keep_leftover"):
        decoder.receive_data(bytearray(b"more"))


def test_body_data_is_a_view_of_the_callers_buffer():
    frame = put_frame(1, "a", b"z" * 1000)
    buf = bytearray(frame)
    decoder = FrameDecoder()
    decoder.receive_data(buf)
    decoder.next_event()
    body = decoder.next_event()
    assert isinstance(body.data, memoryview) and body.data.obj is buf


@pytest.mark.parametrize("cut", [0, 4, 8, 20])
def test_end_of_stream_inside_a_frame_is_reported_mid_frame(cut):
    frame = put_frame(1, "a", b"body")
    decoder = FrameDecoder()
    if cut:
        decoder.receive_data(frame[:cut])
    decoder.receive_data(b"")
    events = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, PeerClosed):
            break
    assert events[-1] == PeerClosed(mid_frame=cut > 0)
    assert decoder.next_event() == events[-1]  # stays closed


def frame_with_header(raw: bytes, version: int = 1, magic: bytes = protocol.MAGIC) -> bytes:
    return struct.pack("!4sBBH", magic, version, 0, len(raw)) + raw


@pytest.mark.parametrize("data, code", [
    (b"GET / HTTP/1.1\r\n\r\n", "bad_magic"),
    (frame_with_header(b"{}", version=2), "bad_version"),
    (struct.pack("!4sBBH", protocol.MAGIC, 1, 0, 0), "bad_header"),
    (struct.pack("!4sBBH", protocol.MAGIC, 1, 0, 60000), "header_too_large"),
    (frame_with_header(b"\xff\xfe{}"), "bad_header"),
    (frame_with_header(b"[1, 2]"), "bad_header"),
    (frame_with_header(b"{not json}"), "bad_header"),
    (frame_with_header(b'{"a": 1, "a": 2}'), "bad_header"),
    (frame_with_header(b'{"a": NaN}'), "bad_header"),
    (frame_with_header(b'{"length": -1}'), "bad_header"),
    (frame_with_header(b'{"length": 1.5}'), "bad_header"),
    (frame_with_header(b'{"length": true}'), "bad_header"),
    (frame_with_header(b'{"length": 9223372036854775808}'), "too_large"),
    (frame_with_header(b"[" * 10000 + b"]" * 10000), "header_too_large"),
])
def test_bad_frames_raise_protocol_errors_with_stable_codes(data, code):
    decoder = FrameDecoder(max_header_size=16384)
    decoder.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert info.value.code == code
    with pytest.raises(ProtocolError):  # and it stays broken
        decoder.next_event()


def test_deeply_nested_json_is_a_protocol_error_not_a_crash():
    decoder = FrameDecoder()
    decoder.receive_data(frame_with_header(b"[" * 30000 + b"]" * 30000))
    with pytest.raises(ProtocolError):
        decoder.next_event()


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_random_bytes_never_raise_anything_but_protocol_error(data, step):
    decoder = FrameDecoder(max_header_size=256, max_body_size=1000)
    try:
        for i in range(0, len(data), step):
            decoder.receive_data(data[i:i + step])
            while decoder.next_event() is not NEED_DATA:
                pass
    except ProtocolError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=10), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10)))
def test_random_json_headers_never_crash_request_parsing(fields):
    header = protocol.encode_frame(fields) if "length" not in fields else None
    if header is None:
        return
    decoder = FrameDecoder()
    decoder.receive_data(header)
    event = decoder.next_event()
    try:
        protocol.parse_request(event.fields, event.length)
    except protocol.RequestError as exc:
        assert exc.code in protocol.ERROR_CODES


def test_encode_frame_round_trips_unicode_names():
    frame = protocol.encode_put(7, "répertoire/ünï.txt", 3, "0" * 64, overwrite=True, mtime=1.5)
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    event = decoder.next_event()
    assert event.fields["name"] == "répertoire/ünï.txt"
    req = protocol.parse_request(event.fields, event.length)
    assert (req.op, req.id, req.length, req.overwrite, req.mtime) == ("put", 7, 3, True, 1.5)


@pytest.mark.parametrize("fields, length, code", [
    ({"op": "get", "name": "a"}, 0, "bad_request"),  # no id
    ({"id": -1, "op": "get", "name": "a"}, 0, "bad_request"),
    ({"id": 2**53, "op": "get", "name": "a"}, 0, "bad_request"),
    ({"id": True, "op": "get", "name": "a"}, 0, "bad_request"),
    ({"id": 1, "op": "delete", "name": "a"}, 0, "unknown_op"),
    ({"id": 1, "op": 5}, 0, "bad_request"),
    ({"id": 1, "op": "get"}, 0, "bad_request"),
    ({"id": 1, "op": "get", "name": 5}, 0, "bad_request"),
    ({"id": 1, "op": "get", "name": "a"}, 10, "bad_request"),  # get has no body
    ({"id": 1, "op": "put", "name": "a"}, 0, "bad_request"),  # no sha256
    ({"id": 1, "op": "put", "name": "a", "sha256": "AB" * 32}, 0, "bad_request"),
    ({"id": 1, "op": "put", "name": "a", "sha256": "0" * 64, "overwrite": 1}, 0, "bad_request"),
    ({"id": 1, "op": "put", "name": "a", "sha256": "0" * 64, "mtime": "x"}, 0, "bad_request"),
    ({"id": 1, "op": "put", "name": "a", "sha256": "0" * 64, "mtime": -5}, 0, "bad_request"),
    ({"id": 1, "op": "list", "path": 3}, 0, "bad_request"),
    ({"id": 1, "op": "list", "recursive": "yes"}, 0, "bad_request"),
])
def test_request_checking_names_the_problem(fields, length, code):
    with pytest.raises(protocol.RequestError) as info:
        protocol.parse_request(fields, length)
    assert info.value.code == code


def test_error_frames_carry_id_code_and_message():
    frame = protocol.encode_error(None, "too_many_clients", "busy")
    header = json.loads(frame[8:])
    assert header == {"id": None, "ok": False, "error": "too_many_clients", "message": "busy"}


def test_every_error_code_is_in_the_protocol_document():
    from pathlib import Path
    doc = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
    for code in protocol.ERROR_CODES:
        assert f"| `{code}`" in doc, code
